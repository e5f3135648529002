#!/usr/bin/env python3
"""Peak resident memory of 1 and 3 ranks training on a 2 GB data set.

The data set is 2 GiB of uint8 images, train_images.npy (43,690 colour images of
128 x 128) with train_labels.npy, which cvae maps rather than reads. Each run trains one
epoch of a small model (hidden 8, latent 2, batch 256) on the CPU: in one process, then
under `mpirun -np 3` (one OpenMP thread a rank). Every 0.2 s the script reads each cvae
process's /proc/PID/status and smaps_rollup and keeps, per process, the peak of:

  RssAnon  its private memory (the model, Adam's state, the batch buffers, its heap)
  RssFile  the file pages it has mapped in: the data set's pages in the page cache,
           shared by every process that maps the file
  Pss      its proportional share: private pages, plus each shared page divided by the
           number of processes mapping it

and VmHWM (the kernel's peak RSS, private and file pages together). As a contrast it
also runs one process on the same images as a gzip IDX file, which cannot be mapped and is
read into private memory.

Usage: python3 bench/mmap_rss.py [--cvae build/cvae] [--out bench/results/mmap-rss]
"""
import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

N, SIDE = 43690, 128  # 43,690 x 128 x 128 x 3 bytes = 2,147,450,880 (2.0 GiB)


def make_data(folder):
    """Images of a few bright bands (they compress, for the gzip contrast), labels 0..9."""
    os.makedirs(folder)
    images = np.lib.format.open_memmap(os.path.join(folder, "train_images.npy"), mode="w+",
                                       dtype=np.uint8, shape=(N, SIDE, SIDE, 3))
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, N).astype(np.uint8)
    rows = np.arange(SIDE)[:, None, None]
    for start in range(0, N, 2048):
        stop = min(N, start + 2048)
        band = (labels[start:stop, None, None, None] * 12 <= rows) & \
               (rows < labels[start:stop, None, None, None] * 12 + 12)
        images[start:stop] = np.where(band, 200, 30).astype(np.uint8)
    images.flush()
    del images
    np.save(os.path.join(folder, "train_labels.npy"), labels)
    return labels


def make_gzip_idx(src, folder):
    """The same images and labels as IDX files, gzip level 1."""
    os.makedirs(folder)
    images = np.load(os.path.join(src, "train_images.npy"), mmap_mode="r")
    with gzip.open(os.path.join(folder, "train-images-idx4-ubyte.gz"), "wb", 1) as f:
        f.write(bytes([0, 0, 8, 4]) + b"".join(int(d).to_bytes(4, "big") for d in images.shape))
        for start in range(0, N, 4096):
            f.write(images[start:start + 4096].tobytes())
    labels = np.load(os.path.join(src, "train_labels.npy"))
    with gzip.open(os.path.join(folder, "train-labels-idx1-ubyte.gz"), "wb", 1) as f:
        f.write(bytes([0, 0, 8, 1]) + N.to_bytes(4, "big") + labels.tobytes())


def kib(path, keys):
    out = {}
    try:
        with open(path) as f:
            for line in f:
                k = line.split(":")[0]
                if k in keys:
                    out[k] = int(line.split()[1])
    except OSError:
        pass
    return out


def cvae_pids(root, exe):
    """root and its descendants whose executable is exe."""
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                todo += [int(c) for c in f.read().split()]
            if os.path.realpath(f"/proc/{pid}/exe") == exe:
                found.append(pid)
        except OSError:
            pass
    return found


def measure(cmd, exe):
    """Runs cmd, polling its cvae processes; returns (seconds, per-process peaks)."""
    t0 = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peaks = {}
    while p.poll() is None:
        for pid in cvae_pids(p.pid, exe):
            s = kib(f"/proc/{pid}/status", ("VmHWM", "RssAnon", "RssFile"))
            s.update(kib(f"/proc/{pid}/smaps_rollup", ("Pss",)))
            if s:
                peak = peaks.setdefault(pid, {})
                for k, v in s.items():
                    peak[k] = max(peak.get(k, 0), v)
        time.sleep(0.2)
    out = p.stdout.read()
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out}")
    return time.time() - t0, [peaks[k] for k in sorted(peaks)], out


def report(r, a):
    """The results as markdown: MiB per process."""
    rows = []
    for name, run in r["runs"].items():
        for i, p in enumerate(run["processes_kib"]):
            rows.append(f"| {name} | {i} | {p['RssAnon'] / 1024:.0f} | {p['RssFile'] / 1024:.0f} | "
                        f"{p['Pss'] / 1024:.0f} | {p['VmHWM'] / 1024:.0f} | {run['seconds']:.0f} |")
    load = ", ".join(f"{x:.1f}" for x in r["load"])
    gib = r["data_set_bytes"] / 2 ** 30
    table = "\n".join(rows)
    return f"""# Peak resident memory on a {gib:.2f} GiB data set, 1 and 3 ranks

`python3 bench/mmap_rss.py --cvae {a.cvae}` on {r["date"]}, a 2-core VM shared with other
work (load average {load} at the end). The data set: {r["images"]:,} uint8 images of
{r["shape"][0]} x {r["shape"][1]} x {r["shape"][2]} in `train_images.npy`
({r["data_set_bytes"]:,} bytes) with `train_labels.npy`; one epoch of a small model (hidden
8, latent 2, batch 256) on the CPU. Peaks per process in MiB, read from /proc every 0.2 s:
RssAnon is the process's private memory, RssFile the data set's pages it has mapped in
(the page cache, shared with every process mapping the file), Pss its proportional share
(private pages, plus shared pages divided by the processes sharing them), VmHWM the
kernel's peak RSS (private and file pages together).

| run | process | RssAnon | RssFile | Pss | VmHWM | seconds |
| --- | ---: | ---: | ---: | ---: | ---: | ---: |
{table}

Mapped, each rank holds {gib:.1f} GiB of the page cache in its address space, the same
pages for all of them: its private memory, what the data costs it alone, is the model, its
buffers and the heap, far below the data set, and three ranks together add up to one copy
of it (their Pss). The gzip IDX file cannot be mapped and is inflated into private memory:
the data set whole, in each process that reads it.
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cvae", default="build/cvae")
    ap.add_argument("--out", default=None, help="write OUT.json")
    a = ap.parse_args()
    exe = os.path.realpath(a.cvae)
    work = tempfile.mkdtemp(prefix="cvae-rss-")
    try:
        data, gz = os.path.join(work, "npy"), os.path.join(work, "idxgz")
        make_data(data)
        make_gzip_idx(data, gz)
        size = os.path.getsize(os.path.join(data, "train_images.npy"))
        train = ["train", "--epochs", "1", "--hidden", "8", "--latent", "2", "--batch", "256",
                 "--device", "cpu"]
        root = ["--allow-run-as-root"] if os.getuid() == 0 else []
        runs = {
            "1 process, mapped .npy": [exe] + train + ["--data", data],
            "3 ranks, mapped .npy": ["mpirun", "--oversubscribe", *root, "-x", "OMP_NUM_THREADS=1",
                                     "-np", "3", exe] + train + ["--data", data],
            "1 process, gzip IDX (read)": [exe] + train + [
                "--train-images", os.path.join(gz, "train-images-idx4-ubyte.gz"),
                "--train-labels", os.path.join(gz, "train-labels-idx1-ubyte.gz")],
        }
        result = {"data_set_bytes": size, "images": N, "shape": [SIDE, SIDE, 3],
                  "date": time.strftime("%Y-%m-%d"), "load": os.getloadavg(), "runs": {}}
        for name, cmd in runs.items():
            seconds, peaks, log = measure(cmd, exe)
            result["runs"][name] = {"seconds": seconds, "processes_kib": peaks,
                                    "command": " ".join(cmd).replace(work, "DATA")}
            print(name, f"{seconds:.0f} s", json.dumps(peaks), flush=True)
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
