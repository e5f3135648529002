#!/usr/bin/env python3
"""Writes a small IDX data set of random pixels and labels, for scripts that need one.

usage: random_idx_set.py DIR N_TRAIN N_TEST [--side S] [--classes K] [--seed SEED]
DIR/{train,t10k}-{images-idx3,labels-idx1}-ubyte: N images of S x S pixels (default 8),
labels below K (default 4), from a seeded generator (default 1). With --bands, each image is
noise plus a bright band of rows at its class's place, so a model has something to learn."""
import argparse
import os
import random
import struct


def idx(dims, payload):
    return bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", x) for x in dims) + payload


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir")
    ap.add_argument("n_train", type=int)
    ap.add_argument("n_test", type=int)
    ap.add_argument("--side", type=int, default=8)
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--bands", action="store_true")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    pixels = a.side * a.side
    for split, n in (("train", a.n_train), ("t10k", a.n_test)):
        if a.bands:
            labels = [rng.randrange(a.classes) for _ in range(n)]
            band = max(1, a.side // a.classes)
            pix = bytes(min(255, (200 if y // band == c else 0) + rng.randrange(56))
                        for c in labels for y in range(a.side) for _ in range(a.side))
        else:  # pixels first, as this script always drew them
            pix = bytes(rng.randrange(256) for _ in range(n * pixels))
            labels = [rng.randrange(a.classes) for _ in range(n)]
        with open(os.path.join(a.dir, f"{split}-images-idx3-ubyte"), "wb") as f:
            f.write(idx([n, a.side, a.side], pix))
        with open(os.path.join(a.dir, f"{split}-labels-idx1-ubyte"), "wb") as f:
            f.write(idx([n], bytes(labels)))

if __name__ == "__main__":
    main()
