#!/usr/bin/env python3
"""Writes Fashion-MNIST (or any IDX data set of grey images and labels) as PNG files in
class folders, torchvision's ImageFolder layout, for `cvae train --data OUT`:

    OUT/train/<class>/<index>.png   the first --train images of the training set
    OUT/test/<class>/<index>.png    the first --test images of the test set

With --tables it also writes OUT/train.csv and OUT/test.csv (columns image, label: the
class name), rows in the IDX files' order, for `--train-csv` and `--test-csv`.

Only Python's standard library is used (the PNGs are written with zlib), so the README's
example runs on a fresh machine. Usage:

    python3 datasets/fashion_folders.py /usr/share/datasets/fashion-mnist OUT \\
        [--train 6000] [--test 1000] [--tables]
"""
import argparse
import gzip
import os
import struct
import sys
import zlib

FASHION_CLASSES = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle-boot"]


def read_idx(folder, stem):
    """An IDX file of the folder (plain or .gz): (dims, bytes)."""
    for name in (stem, stem + ".gz"):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            opener = gzip.open if name.endswith(".gz") else open
            with opener(path, "rb") as f:
                data = f.read()
            ndims = data[3]
            dims = struct.unpack(">" + "I" * ndims, data[4:4 + 4 * ndims])
            return dims, data[4 + 4 * ndims:]
    sys.exit(f"{folder}: no {stem}[.gz]")


def png_bytes(pixels, h, w):
    """An 8-bit grey PNG of h x w pixels, rows filtered with filter 0."""
    raw = b"".join(b"\x00" + pixels[y * w:(y + 1) * w] for y in range(h))

    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body +
                struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def write_split(src, prefix, out, split, count, names, table):
    (n, h, w), images = read_idx(src, prefix + "-images-idx3-ubyte")
    _, labels = read_idx(src, prefix + "-labels-idx1-ubyte")
    count = min(count, n)
    rows = ["image,label"]
    for i in range(count):
        name = names[labels[i]] if labels[i] < len(names) else str(labels[i])
        rel = os.path.join(split, name, f"{i:05d}.png")
        os.makedirs(os.path.join(out, split, name), exist_ok=True)
        with open(os.path.join(out, rel), "wb") as f:
            f.write(png_bytes(images[i * h * w:(i + 1) * h * w], h, w))
        rows.append(f"{rel},{name}")
    if table:
        with open(os.path.join(out, split + ".csv"), "w") as f:
            f.write("\n".join(rows) + "\n")
    return count


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", help="folder of IDX files (train-*, t10k-*)")
    p.add_argument("out", help="folder to write (must not exist)")
    p.add_argument("--train", type=int, default=6000, help="training images (default 6000)")
    p.add_argument("--test", type=int, default=1000, help="test images (default 1000)")
    p.add_argument("--tables", action="store_true", help="also write train.csv and test.csv")
    a = p.parse_args()
    if os.path.exists(a.out):
        sys.exit(f"{a.out}: exists; give a new folder")
    n_train = write_split(a.source, "train", a.out, "train", a.train, FASHION_CLASSES, a.tables)
    n_test = write_split(a.source, "t10k", a.out, "test", a.test, FASHION_CLASSES, a.tables)
    print(f"wrote {n_train} training and {n_test} test images in class folders under {a.out}")


if __name__ == "__main__":
    main()
