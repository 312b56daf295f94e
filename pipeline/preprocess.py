"""DVC stage `preprocess`: split validation off train, take the training mean image, write the uint8
pixel rows (memory-mappable .npy), labels, the mean image, the scale and class names to data/processed/."""
import json
import time
from pathlib import Path

from linclass.data.cifar import load_cifar10
from linclass.data.preprocess import preprocess
from linclass.plumbing import progress
from linclass.plumbing.stage import atomic_dir, run, stage_params

ARCHIVE = Path("data/raw/cifar-10-python.tar.gz")
OUT = Path("data/processed")


def main() -> None:
    cfg = stage_params().preprocess
    start = time.perf_counter()

    def say(line):
        progress.say(f"preprocess: {line} ({time.perf_counter() - start:.1f} s)")

    data = load_cifar10(ARCHIVE)
    say(f"read {len(data.x_train)} + {len(data.x_test)} images from {ARCHIVE}")
    with atomic_dir(OUT) as tmp:
        summary = preprocess(data, tmp, val_size=cfg.val_size, seed=cfg.seed, scale=cfg.scale,
                             max_train=cfg.max_train, progress=say)
    print("preprocess:", json.dumps(summary, default=str)[:400])


if __name__ == "__main__":
    run(main)
