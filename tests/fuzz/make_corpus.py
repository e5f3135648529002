#!/usr/bin/env python3
"""Seed corpora for the fuzz targets: small valid IDX files (plain and gzip, images and
labels), a few broken ones, and small valid checkpoints written by cvae itself.

usage: make_corpus.py --cvae build/cvae --out DIR   (writes DIR/idx and DIR/checkpoint)
"""
import argparse
import gzip
import os
import random
import struct
import subprocess
import tempfile


def idx(dims, payload):
    return bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + payload


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cvae", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    rng = random.Random(0)
    idx_dir = os.path.join(args.out, "idx")
    ck_dir = os.path.join(args.out, "checkpoint")
    os.makedirs(idx_dir, exist_ok=True)
    os.makedirs(ck_dir, exist_ok=True)
    seeds = {
        "images": idx([3, 4, 5], bytes(rng.randrange(256) for _ in range(60))),
        "labels": idx([7], bytes(rng.randrange(10) for _ in range(7))),
        "one-pixel": idx([1, 1, 1], b"\x80"),
        "truncated": idx([2, 3, 3], b"\x01" * 10),
        "float-type": bytes([0, 0, 0x0D, 1, 0, 0, 0, 1]) + b"\x00" * 4,
    }
    for name, data in list(seeds.items()):
        with open(os.path.join(idx_dir, name), "wb") as f:
            f.write(data)
        with open(os.path.join(idx_dir, name + ".gz"), "wb") as f:
            f.write(gzip.compress(data))

    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        os.makedirs(data)
        n, h, w = 24, 3, 3
        with open(os.path.join(data, "train-images-idx3-ubyte"), "wb") as f:
            f.write(idx([n, h, w], bytes(rng.randrange(256) for _ in range(n * h * w))))
        with open(os.path.join(data, "train-labels-idx1-ubyte"), "wb") as f:
            f.write(idx([n], bytes(rng.randrange(3) for _ in range(n))))
        for i, hidden in enumerate(["2", "3,2"]):
            run = os.path.join(tmp, f"run{i}")
            subprocess.run([args.cvae, "train", "--data", data, "--out", run, "--hidden",
                            hidden, "--latent", "1", "--epochs", "1", "--batch", "8",
                            "--device", "cpu"], check=True, stdout=subprocess.DEVNULL)
            with open(os.path.join(run, "model.ckpt"), "rb") as f:
                ck = f.read()
            with open(os.path.join(ck_dir, f"model{i}.ckpt"), "wb") as f:
                f.write(ck)
    print(f"corpus: {len(os.listdir(idx_dir))} IDX seeds, {len(os.listdir(ck_dir))} checkpoints")


if __name__ == "__main__":
    main()
