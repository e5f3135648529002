#!/usr/bin/env python3
"""Decoding and resizing JPEGs: cvae's cache build against PIL, per core, in the same run.

The benchmark makes its own CelebA-sized images (178 x 218 JPEGs, quality 90, photo-like:
smooth shading, shapes with sharp edges, fine texture and sensor noise), then times, one
core each, alternating, --repeats times:

  cvae   `cvae data --data DIR --image-size 64x64 --crop center --channels 3 --cache TMP
         --build-cache` with OMP_NUM_THREADS=1 and a new cache folder: its own line
         "decoded N ... in S s" (the decode, crop and resize of every image into the
         mapped .npy; listing and hashing the files are outside it), and the whole command
  PIL    Image.open(f).convert("RGB").resize((64, 64), Image.BOX, box=centre square) into
         a numpy array, the usual Python pipeline (Debian's python3-pil, on the same
         libjpeg-turbo)
  PIL draft  the same after im.draft("RGB", (64, 78)), PIL's own use of libjpeg's DCT
         scaling (it decodes at 1/2, the smallest scale that keeps 64 x 78)

and reports the medians in images/s per core and cvae's ratio to each. It also checks
accuracy: the mean absolute difference, in grey levels, of cvae's images from PIL's
decode followed by an exact area average (each output pixel the mean of the input area it
covers, fractional at the edges), and from PIL's BOX resize (which weighs each input
pixel whose centre lies in the area as 1: not an exact area average).

Usage: python3 bench/decode.py [--cvae build/cvae] [--images 2000] [--repeats 5]
                               [--out bench/results/decode-cpu]
"""
import argparse
import glob
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

H, W, OUT = 218, 178, 64


def photo_like(rng):
    """A 218 x 178 RGB image with the statistics of a photo: shading, edges, texture."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    img = np.zeros((H, W, 3), np.float32)
    base = rng.uniform(40, 200, 3)
    for c in range(3):
        gx, gy = rng.uniform(-0.6, 0.6, 2)
        img[..., c] = base[c] + gx * (xx - W / 2) + gy * (yy - H / 2)
    for _ in range(rng.integers(3, 8)):  # ellipses with sharp edges
        cy, cx = rng.uniform(0, H), rng.uniform(0, W)
        ry, rx = rng.uniform(10, 70), rng.uniform(10, 60)
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        img[inside] = 0.4 * img[inside] + 0.6 * rng.uniform(0, 255, 3)
    for c in range(3):  # fine texture
        fx, fy, ph = rng.uniform(0.3, 1.2), rng.uniform(0.3, 1.2), rng.uniform(0, 6.3)
        img[..., c] += rng.uniform(2, 10) * np.sin(fx * xx + fy * yy + ph)
    img += rng.normal(0, 3, img.shape)  # sensor noise
    return np.clip(img, 0, 255).astype(np.uint8)


def make_images(folder, n, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(folder, "train", "faces"))
    for i in range(n):
        Image.fromarray(photo_like(rng)).save(
            os.path.join(folder, "train", "faces", f"{i:06d}.jpg"), quality=90)
    return sorted(glob.glob(os.path.join(folder, "train", "faces", "*.jpg")))


def crop_box(w, h):
    """PIL's box of the centred square (the target is square)."""
    return (0, (h - w) / 2, w, (h + w) / 2) if h > w else ((w - h) / 2, 0, (w + h) / 2, h)


def pil_decode(files, draft):
    out = np.empty((len(files), OUT, OUT, 3), np.uint8)
    for i, f in enumerate(files):
        im = Image.open(f)
        if draft:
            im.draft("RGB", (OUT, OUT * H // W))  # the smallest scale still >= the crop
        im = im.convert("RGB")
        out[i] = np.asarray(im.resize((OUT, OUT), Image.BOX, box=crop_box(*im.size)))
    return out


def run_cvae(cvae, data, cache):
    shutil.rmtree(cache, ignore_errors=True)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    t0 = time.perf_counter()
    p = subprocess.run([cvae, "data", "--data", data, "--image-size", f"{OUT}x{OUT}", "--crop",
                        "center", "--channels", "3", "--cache", cache, "--build-cache"],
                       env=env, capture_output=True, text=True, check=True)
    whole = time.perf_counter() - t0
    m = re.search(r"decoded (\d+) training images in ([\d.]+) s", p.stdout)
    if not m:
        sys.exit("cvae printed no 'decoded' line:\n" + p.stdout + p.stderr)
    # the printed seconds have one decimal: time the decode from images/s instead
    rate = float(re.search(r"\((\d+) images/s", p.stdout).group(1))
    return rate, whole


def area_matrix(n, m):
    """(m, n): output pixel i as the mean of input [i n/m, (i+1) n/m), fractional edges."""
    a = np.zeros((m, n))
    s = n / m
    for i in range(m):
        lo, hi = i * s, (i + 1) * s
        for j in range(int(lo), min(n, int(np.ceil(hi)))):
            a[i, j] = max(0.0, min(hi, j + 1) - max(lo, j))
    return a / s


def exact_area(files):
    side = min(H, W)
    a = area_matrix(side, OUT)
    out = np.empty((len(files), OUT, OUT, 3))
    for i, f in enumerate(files):
        x = np.asarray(Image.open(f).convert("RGB"), np.float64)
        top, left = (H - side) // 2, (W - side) // 2
        x = x[top:top + side, left:left + side]
        out[i] = np.einsum("ij,jkc->ikc", a, np.einsum("jkc,lk->jlc", x, a))
    return out


def cpu_name():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def report(r, a):
    """The results as markdown."""
    med, acc = r["images_per_s_per_core"], r["mean_abs_diff_grey_levels"]
    load = ", ".join(f"{x:.1f}" for x in r["load"])
    runs = lambda k: ", ".join(f"{x:.0f}" for x in r["runs"][k])
    return f"""# Decoding JPEGs into the cache against PIL, per core

`python3 bench/decode.py --cvae {a.cvae} --images {a.images} --repeats {a.repeats}`, on
{r["date"]}: {r["cpu"]}, 2 cores shared with other work (load average {load} at the end),
PIL {r["pil"]} (Debian's python3-pil, on the system's libjpeg-turbo, as cvae).

{r["images"]} CelebA-sized JPEGs (178 x 218, quality 90, photo-like) made by the benchmark,
decoded, centre-cropped and resized to 64 x 64 RGB, one core each, the runs alternated;
medians of {r["repeats"]} runs, images per second:

| pipeline | images/s per core | runs | cvae's ratio |
| --- | ---: | --- | ---: |
| cvae: decode, crop and resize into the cache (OMP_NUM_THREADS=1) | {med["cvae"]:.0f} | {runs("cvae")} | |
| cvae: the whole `cvae data --build-cache` command (listing, hashing, writing) | {med["cvae_whole"]:.0f} | {runs("cvae_whole")} | |
| PIL: `Image.open().convert("RGB").resize((64, 64), Image.BOX, box=...)` | {med["pil"]:.0f} | {runs("pil")} | **{r["ratio_vs_pil"]:.2f}** |
| PIL with `draft()` (its DCT scaling, 1/2) | {med["pil_draft"]:.0f} | {runs("pil_draft")} | {r["ratio_vs_pil_draft"]:.2f} |

The whole command against PIL's loop: {r["whole_command_ratio_vs_pil"]:.2f}.

Accuracy, mean absolute difference in grey levels over every pixel:

| cvae against | grey levels |
| --- | ---: |
| PIL's decode, then an exact area average (each output pixel the mean of the area it covers) | {acc["vs_exact_area"]:.3f} |
| PIL's decode and BOX resize | {acc["vs_pil_box"]:.3f} |
| (PIL's BOX resize against the exact area average) | {acc["pil_box_vs_exact_area"]:.3f} |

At 178 x 178 to 64 x 64 a JPEG decodes at its full size (a DCT-scaled decode at 1/2 would
leave 89 x 89, less than twice the target); the shrink is cvae's exact area average
(src/host/data/image_area.c). PIL's BOX filter weighs each pixel whose centre falls in an
output pixel's area as 1, so it is not an exact area average, hence its own difference.
"""


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cvae", default="build/cvae")
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=None, help="write OUT.md and OUT.json")
    a = p.parse_args()
    work = tempfile.mkdtemp(prefix="cvae-decode-")
    try:
        files = make_images(work, a.images)
        cache = os.path.join(work, "cache")
        rates = {"cvae": [], "cvae_whole": [], "pil": [], "pil_draft": []}
        for _ in range(a.repeats):
            rate, whole = run_cvae(a.cvae, work, cache)
            rates["cvae"].append(rate)
            rates["cvae_whole"].append(len(files) / whole)
            for key, draft in (("pil", False), ("pil_draft", True)):
                t0 = time.perf_counter()
                pil_decode(files, draft)
                rates[key].append(len(files) / (time.perf_counter() - t0))
        mine = np.load(glob.glob(os.path.join(cache, "*-train.npy"))[0]).astype(np.float64)
        sample = min(len(files), 300)
        acc = {"vs_exact_area": float(np.abs(mine[:sample] - exact_area(files[:sample])).mean()),
               "vs_pil_box": float(np.abs(mine - pil_decode(files, False)).mean()),
               "pil_box_vs_exact_area": float(np.abs(pil_decode(files[:sample], False) -
                                                     exact_area(files[:sample])).mean())}
        med = {k: statistics.median(v) for k, v in rates.items()}
        result = {"cpu": cpu_name(), "load": os.getloadavg(), "images": len(files),
                  "repeats": a.repeats, "images_per_s_per_core": med, "runs": rates,
                  "ratio_vs_pil": med["cvae"] / med["pil"],
                  "ratio_vs_pil_draft": med["cvae"] / med["pil_draft"],
                  "whole_command_ratio_vs_pil": med["cvae_whole"] / med["pil"],
                  "mean_abs_diff_grey_levels": acc,
                  "date": time.strftime("%Y-%m-%d"), "pil": Image.__version__}
        print(json.dumps(result, indent=2))
        if a.out:
            with open(a.out + ".json", "w") as f:
                json.dump(result, f, indent=2)
            with open(a.out + ".md", "w") as f:
                f.write(report(result, a))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
