#!/usr/bin/env python3
"""Seed corpora for the fuzz targets: small valid IDX files (plain and gzip, images and
labels), a few broken ones, small valid checkpoints and report pages written by cvae
itself, and small .npy files of several dtypes and versions (built here byte by byte,
without NumPy) with a few broken ones.

usage: make_corpus.py --cvae build/cvae --out DIR
       (writes DIR/idx, DIR/checkpoint, DIR/npy, DIR/report)
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


def npy(descr, shape, payload, version=(1, 0), quote="'", text=None):
    """A .npy file as NumPy writes it: the dict (or text, verbatim), spaces and a newline
    up to a multiple of 64 bytes, then the payload."""
    if text is None:
        dims = ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "")
        q = quote
        text = (f"{{{q}descr{q}: {q}{descr}{q}, {q}fortran_order{q}: False, "
                f"{q}shape{q}: ({dims}), }}")
    pre = 10 if version[0] == 1 else 12
    hlen = (pre + len(text) + 1 + 63) // 64 * 64 - pre
    header = text.encode("ascii") + b" " * (hlen - len(text) - 1) + b"\n"
    size = struct.pack("<H" if version[0] == 1 else "<I", hlen)
    return b"\x93NUMPY" + bytes(version) + size + header + payload


def npy_seeds(rng):
    def rand(n):
        return bytes(rng.randrange(256) for _ in range(n))
    return {
        "u1-3d": npy("|u1", (3, 4, 5), rand(60)),
        "f4-2d-v2": npy("<f4", (2, 3), struct.pack("<6f", *[0.5 * i for i in range(6)]),
                        version=(2, 0)),
        "i8-1d-v3": npy("<i8", (4,), struct.pack("<4q", -2, -1, 0, 1), version=(3, 0)),
        "u2-4d-double-quotes": npy("<u2", (2, 1, 2, 2), rand(16), quote='"'),
        "i2-keys-reordered": npy(None, None, rand(12), text="{'shape': (3, 2), "
                                 "'fortran_order': False, 'descr': '<i2'}"),
        "u4-2d": npy("<u4", (1, 3), rand(12)),
        "i4-2d-v2": npy("<i4", (3, 1), rand(12), version=(2, 0)),
        "u8-1d": npy("<u8", (2,), rand(16)),
        "i1": npy("|i1", (9,), rand(9)),
        # broken: the reader must refuse each
        "truncated": npy("<f4", (2, 3), rand(20)),
        "fortran": npy(None, None, rand(24), text="{'descr': '<f4', 'fortran_order': True, "
                       "'shape': (2, 3), }"),
        "big-endian": npy(">f4", (2,), rand(8)),
        "float64": npy("<f8", (2,), rand(16)),
        "version-4": npy("<f4", (1,), rand(4), version=(4, 0)),
        "five-dims": npy("|u1", (1, 1, 1, 1, 1), rand(1)),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cvae", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    rng = random.Random(0)
    idx_dir = os.path.join(args.out, "idx")
    ck_dir = os.path.join(args.out, "checkpoint")
    npy_dir = os.path.join(args.out, "npy")
    report_dir = os.path.join(args.out, "report")
    os.makedirs(report_dir, exist_ok=True)
    os.makedirs(idx_dir, exist_ok=True)
    os.makedirs(ck_dir, exist_ok=True)
    os.makedirs(npy_dir, exist_ok=True)
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

    # a generator of their own, so that the other seeds stay as they were
    for name, data in npy_seeds(random.Random(1)).items():
        with open(os.path.join(npy_dir, name + ".npy"), "wb") as f:
            f.write(data)

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
            # the run's report page: its data blocks (the pictures and charts before them
            # would not fit the fuzzer's 16 KiB), and its metrics lines alone
            with open(os.path.join(run, "report.html"), "rb") as f:
                page = f.read()
            blocks = page[page.index(b'<script type="application/x-ndjson"'):]
            with open(os.path.join(report_dir, f"page{i}.html"), "wb") as f:
                f.write(blocks)
            metrics = blocks.split(b"\n", 1)[1].split(b"</script>", 1)[0]
            with open(os.path.join(report_dir, f"metrics{i}.jsonl"), "wb") as f:
                f.write(metrics)
    print(f"corpus: {len(os.listdir(idx_dir))} IDX seeds, {len(os.listdir(ck_dir))} checkpoints, "
          f"{len(os.listdir(npy_dir))} .npy seeds, {len(os.listdir(report_dir))} report seeds")


if __name__ == "__main__":
    main()
