"""DVC stage `download`: fetch the CIFAR-10 archive from this machine's source and verify its md5.

params.yaml names the data set (data.url, data.md5: the official archive); $LINCLASS_DATA_URL or a
git-ignored local.env at the project root may point this machine at a mirror or a local copy.
dvc.lock then records the md5 of the file actually read (this stage's output).
"""
import os
from pathlib import Path

from linclass.data.download import fetch
from linclass.plumbing.stage import run, stage_params

ARCHIVE = Path("data/raw/cifar-10-python.tar.gz")


def main() -> None:
    data = stage_params().data
    # DVC_ROOT: the project root, also when DVC runs this stage in a temporary experiment copy.
    source = fetch(data, ARCHIVE, root=os.environ.get("DVC_ROOT", "."))
    print(f"download: {source.url} (from {source.origin}) -> {ARCHIVE} (md5 {source.md5}; "
          f"data set {data.name}, official md5 {data.md5})")


if __name__ == "__main__":
    run(main)
