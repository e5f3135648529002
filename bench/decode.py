#!/usr/bin/env python3
"""Decoding and resizing JPEGs: cvae's cache build against PIL, per core, in the same run.

The benchmark makes its own CelebA-sized images (178 x 218 JPEGs, quality 90, photo-like:
smooth shading, shapes with sharp edges, fine texture and sensor noise), then runs, one
core each, alternating, --repeats times:

  cvae   `cvae data --data DIR --image-size 64x64 --crop center --channels 3 --cache TMP
         --build-cache` with OMP_NUM_THREADS=1 and a new cache folder: the whole command
         (start-up, listing and hashing the files, decoding, cropping and resizing every
         image into the mapped .npy, writing it)
  PIL    Image.open(f).convert("RGB").resize((64, 64), Image.BOX, box=centre square) into
         a numpy array, the usual Python pipeline (Debian's python3-pil, on the same
         libjpeg-turbo)
  PIL draft  the same after im.draft("RGB", (64, 78)), PIL's own use of libjpeg's DCT
         scaling (it decodes at 1/2, the smallest scale that keeps 64 x 78)

and reports images per CPU second (user + system time of the work's own process: "per
core", and unmoved by what else the machine runs, unlike the wall clock on a shared
machine), the medians of the runs, and cvae's ratio to each. It also checks
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
import resource
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
    """One `cvae data --build-cache` into a new cache: the CPU seconds of the whole command
    (user + system, its process alone) and its wall seconds."""
    shutil.rmtree(cache, ignore_errors=True)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run([cvae, "data", "--data", data, "--image-size", f"{OUT}x{OUT}", "--crop",
                        "center", "--channels", "3", "--cache", cache, "--build-cache"],
                       env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if "decoded" not in p.stdout:
        sys.exit("cvae printed no 'decoded' line:\n" + p.stdout + p.stderr)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall


def pil_cpu(files, draft):
    """PIL's loop: its CPU seconds (this process, PIL on one thread) and wall seconds."""
    c0, t0 = time.process_time(), time.perf_counter()
    pil_decode(files, draft)
    return time.process_time() - c0, time.perf_counter() - t0


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
    med, acc = r["images_per_cpu_second"], r["mean_abs_diff_grey_levels"]
    load = ", ".join(f"{x:.1f}" for x in r["load"])
    n = r["images"]
    cpu_runs = lambda k: ", ".join(f"{n / x:.0f}" for x in r["cpu_seconds"][k])
    wall_runs = lambda k: ", ".join(f"{n / x:.0f}" for x in r["wall_seconds"][k])
    return f"""# Decoding JPEGs into the cache against PIL, per core

`python3 bench/decode.py --cvae {a.cvae} --images {a.images} --repeats {a.repeats}`, on
{r["date"]}: {r["cpu"]}, a 2-core VM shared with other work (load average {load} at the
end), PIL {r["pil"]} (Debian's python3-pil, on the system's libjpeg-turbo, as cvae).

{n} CelebA-sized JPEGs (178 x 218, quality 90, photo-like) made by the benchmark, decoded,
centre-cropped and resized to 64 x 64 RGB, one core each, the runs alternated. Images per
CPU second (user + system time of the work's own process; the medians of {r["repeats"]}
runs decide), and per wall-clock second for reference (the machine's load moved those):

| pipeline | images per CPU second | runs | runs, per wall second | cvae's ratio |
| --- | ---: | --- | --- | ---: |
| cvae: `cvae data --build-cache`, the whole command, OMP_NUM_THREADS=1 | {med["cvae"]:.0f} | {cpu_runs("cvae")} | {wall_runs("cvae")} | |
| PIL: `Image.open().convert("RGB").resize((64, 64), Image.BOX, box=...)` | {med["pil"]:.0f} | {cpu_runs("pil")} | {wall_runs("pil")} | **{r["ratio_vs_pil"]:.2f}** |
| PIL with `draft()` (its DCT scaling, 1/2) | {med["pil_draft"]:.0f} | {cpu_runs("pil_draft")} | {wall_runs("pil_draft")} | {r["ratio_vs_pil_draft"]:.2f} |

cvae's figure counts its whole command (start-up, listing and hashing the files, writing
the cache); PIL's counts its loop alone.

Accuracy, mean absolute difference in grey levels over every pixel:

| cvae against | grey levels |
| --- | ---: |
| PIL's decode, then an exact area average (each output pixel the mean of the area it covers) | {acc["vs_exact_area"]:.3f} |
| PIL's decode and BOX resize | {acc["vs_pil_box"]:.3f} |
| (PIL's BOX resize against the exact area average) | {acc["pil_box_vs_exact_area"]:.3f} |

At 178 x 178 to 64 x 64 a JPEG decodes at its full size (a DCT-scaled decode at 1/2 would
leave 89 x 89, less than twice the target), its rows outside the crop skipped; the shrink
is cvae's exact area average
(src/host/data/image_area.c), which replaced stb_image_resize's box filter there: measured
on this machine in one process, 178 x 178 x 3 to 64 x 64 took 0.26 to 0.29 ms against
stb_image_resize's 1.0 to 1.2 ms, and stb's box is a trapezoid, not the exact area.
PIL's BOX filter weighs each pixel whose centre falls in an output pixel's area as 1, so it
is not an exact area average either, hence its own difference.
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
        cpu = {"cvae": [], "pil": [], "pil_draft": []}
        wall = {"cvae": [], "pil": [], "pil_draft": []}
        for _ in range(a.repeats):
            c, w = run_cvae(a.cvae, work, cache)
            cpu["cvae"].append(c)
            wall["cvae"].append(w)
            for key, draft in (("pil", False), ("pil_draft", True)):
                c, w = pil_cpu(files, draft)
                cpu[key].append(c)
                wall[key].append(w)
        mine = np.load(glob.glob(os.path.join(cache, "*-train.npy"))[0]).astype(np.float64)
        sample = min(len(files), 300)
        acc = {"vs_exact_area": float(np.abs(mine[:sample] - exact_area(files[:sample])).mean()),
               "vs_pil_box": float(np.abs(mine - pil_decode(files, False)).mean()),
               "pil_box_vs_exact_area": float(np.abs(pil_decode(files[:sample], False) -
                                                     exact_area(files[:sample])).mean())}
        n = len(files)
        med = {k: n / statistics.median(v) for k, v in cpu.items()}  # images per CPU second
        result = {"cpu": cpu_name(), "load": os.getloadavg(), "images": n,
                  "repeats": a.repeats, "images_per_cpu_second": med, "cpu_seconds": cpu,
                  "wall_seconds": wall,
                  "ratio_vs_pil": med["cvae"] / med["pil"],
                  "ratio_vs_pil_draft": med["cvae"] / med["pil_draft"],
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
