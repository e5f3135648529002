#!/usr/bin/env python3
"""Seed corpora for the fuzz targets: small valid IDX files (plain and gzip, images and
labels), a few broken ones, small valid checkpoints and report pages written by cvae
itself (checkpoints with class names, and of condition columns), small .npy files of
several dtypes and versions (built here byte by byte, without NumPy) with a few broken
ones, PNG files of every colour type and bit depth (written here with zlib) and JPEGs
(grey, colour, progressive, CMYK, through PIL: Debian's python3-pil), and tables (CSV,
whitespace, CelebA's layout).

usage: make_corpus.py --cvae build/cvae --out DIR
       (writes DIR/idx, DIR/checkpoint, DIR/npy, DIR/report, DIR/image, DIR/table)
"""
import argparse
import gzip
import io
import os
import random
import struct
import subprocess
import tempfile
import zlib


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


def png(width, height, color_type, depth, rows, palette=None, trns=None, interlace=0):
    """A PNG file: rows are the filtered scanlines' bytes (filter byte 0 added here)."""
    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body +
                struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, interlace)
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
    if palette:
        out += chunk(b"PLTE", palette)
    if trns:
        out += chunk(b"tRNS", trns)
    raw = b"".join(b"\x00" + r for r in rows)
    return out + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def image_seeds(rng):
    def rand(n):
        return bytes(rng.randrange(256) for _ in range(n))
    seeds = {
        "grey8.png": png(5, 4, 0, 8, [rand(5) for _ in range(4)]),
        "grey1.png": png(9, 3, 0, 1, [rand(2) for _ in range(3)]),
        "grey16.png": png(3, 3, 0, 16, [rand(6) for _ in range(3)]),
        "grey-alpha.png": png(4, 2, 4, 8, [bytes([7, 255] * 4) for _ in range(2)]),
        "rgb8.png": png(4, 4, 2, 8, [rand(12) for _ in range(4)]),
        "rgb16.png": png(2, 2, 2, 16, [rand(12) for _ in range(2)]),
        "rgba.png": png(3, 3, 6, 8, [rand(12) for _ in range(3)]),
        "palette.png": png(4, 4, 3, 2, [rand(1) for _ in range(4)], palette=rand(12),
                           trns=b"\xff\x00"),
        "interlaced.png": png(9, 9, 2, 8, [rand(27) for _ in range(9)], interlace=1),
        "truncated.png": png(8, 8, 0, 8, [rand(8) for _ in range(8)])[:-20],
    }
    try:
        from PIL import Image
    except ImportError:
        raise SystemExit("make_corpus.py: the JPEG seeds need PIL (Debian's python3-pil)")
    buf = io.BytesIO()
    for name, mode, size, kw in [("rgb.jpg", "RGB", (24, 18), {}),
                                 ("grey.jpg", "L", (17, 9), {}),
                                 ("progressive.jpg", "RGB", (20, 20), {"progressive": True}),
                                 ("cmyk.jpg", "CMYK", (8, 8), {}),
                                 ("444.jpg", "RGB", (16, 16), {"subsampling": 0})]:
        im = Image.frombytes(mode, size, rand(size[0] * size[1] * len(mode)))
        buf.seek(0)
        buf.truncate()
        im.save(buf, "JPEG", quality=80, **kw)
        seeds[name] = buf.getvalue()
    seeds["truncated.jpg"] = seeds["rgb.jpg"][: len(seeds["rgb.jpg"]) // 2]
    return seeds


TABLE_SEEDS = {
    "labels.csv": "image,label\na.png,cat\nb.png,dog\n",
    "numbers.csv": "image,label,note\na.png,3,\"x, y\"\nb.png,0,\"say \"\"hi\"\"\"\n",
    "columns.txt": "image a b\nx.jpg 0.5 -1\ny.jpg 1e-3 2\n",
    "celeba.txt": "2\r\nA B \r\n000001.jpg -1  1\r\n000002.jpg  1 -1\r\n",
    "bom.csv": "\ufeffimage,b,a\nz.png,1,2\n",
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cvae", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    rng = random.Random(0)
    for kind, seeds in [("image", image_seeds(random.Random(2))),
                        ("table", {k: v.encode() for k, v in TABLE_SEEDS.items()})]:
        os.makedirs(os.path.join(args.out, kind), exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(args.out, kind, name), "wb") as f:
                f.write(data)
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
        for c in ("bag", "shoe"):  # a checkpoint with class names (version 5's names block)
            os.makedirs(os.path.join(tmp, "tree", "train", c))
            for i in range(4):
                with open(os.path.join(tmp, "tree", "train", c, f"{i}.png"), "wb") as f:
                    f.write(png(3, 3, 0, 8, [bytes(rng.randrange(256) for _ in range(3))
                                             for _ in range(3)]))
        subprocess.run([args.cvae, "train", "--data", os.path.join(tmp, "tree"), "--out",
                        os.path.join(tmp, "named"), "--cache", os.path.join(tmp, "cache"),
                        "--hidden", "2", "--latent", "1", "--epochs", "1", "--batch", "4",
                        "--device", "cpu"], check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(tmp, "named", "model.ckpt"), "rb") as f:
            named = f.read()
        with open(os.path.join(ck_dir, "named.ckpt"), "wb") as f:
            f.write(named)
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
          f"{len(os.listdir(npy_dir))} .npy seeds, {len(os.listdir(report_dir))} report seeds, "
          f"{len(os.listdir(os.path.join(args.out, 'image')))} images, "
          f"{len(os.listdir(os.path.join(args.out, 'table')))} tables")


if __name__ == "__main__":
    main()
