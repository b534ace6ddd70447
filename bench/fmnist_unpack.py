"""Unpack the carried Fashion-MNIST (.data/fashion-mnist: xz-compressed idx files, or .gz) to
$STARX_FMNIST on a lent GPU machine, where specs/fmnist_gpu.yaml reads it. Used by
bench/reproduction_gpu.sh and bench/speed_session.sh (fmnist_compile):

    STARX_FMNIST=/tmp/starx-data/fashion-mnist python3 bench/fmnist_unpack.py
"""

from __future__ import annotations

import lzma
import os
import pathlib
import shutil

STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def main() -> None:
    src, dst = pathlib.Path(".data/fashion-mnist"), pathlib.Path(os.environ["STARX_FMNIST"])
    dst.mkdir(parents=True, exist_ok=True)
    for stem in STEMS:
        if (src / f"{stem}.xz").exists():
            with lzma.open(src / f"{stem}.xz") as f, open(dst / stem, "wb") as g:
                shutil.copyfileobj(f, g)
        elif (src / f"{stem}.gz").exists():
            shutil.copy(src / f"{stem}.gz", dst / f"{stem}.gz")
        else:
            raise SystemExit(f"{src}/{stem}.xz (or .gz) is missing: carry .data")
    print("dataset:", dst, sorted(p.name for p in dst.iterdir()))


if __name__ == "__main__":
    main()
