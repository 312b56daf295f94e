"""DVC stage `download`: fetch the CIFAR-10 archive (http, https or file URL) and verify its md5."""
from pathlib import Path

from linclass.data.download import download
from linclass.plumbing.stage import run, stage_params

ARCHIVE = Path("data/raw/cifar-10-python.tar.gz")


def main() -> None:
    data = stage_params()["data"]
    ARCHIVE.parent.mkdir(parents=True, exist_ok=True)
    download(data["url"], ARCHIVE, data["md5"], retries=data["retries"], timeout=data["timeout"])
    print(f"download: {data['url']} -> {ARCHIVE} (md5 {data['md5']})")


if __name__ == "__main__":
    run(main)
