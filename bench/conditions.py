#!/usr/bin/env python3
"""Does the condition control what cvae generates? Condition vectors on Fashion-MNIST.

Three experiments, each training cvae for --epochs epochs on data this script writes as
NumPy files (train_images.npy, train_conditions.npy, test_*):

  continuous  conditions [one-hot class, ink], ink the image's standardised mean pixel
              value. Images are generated for the test set's condition rows: the Pearson
              correlation between the requested ink and the generated images' mean pixel
              value, and class fidelity (a logistic regression fitted on the real training
              images, as bench/label_fidelity.py does) against a label-only model asked
              for the same classes in the same order (cvae generate --labels).
  colour      each image tinted with a random hue h (H x W x 3 uint8), conditions
              [one-hot class, cos h, sin h]. A classes x hues grid picture, and the median
              angular error between the requested hue and the generated images' mean hue.
  throughput  training samples/s with condition vectors (the one-hot class as a vector,
              K = 10, the label model's exact shapes) against label training, the two
              alternated in short runs; cvae's own per-epoch figure, median over epochs.

The tint of hue h multiplies each pixel by c(h), c_k(h) = (1 + cos(h - 2 pi k / 3)) / 2
for k = R, G, B, whose chromaticity angle atan2(sqrt(3) (G - B), 2R - G - B) is exactly h;
an image's mean hue is that angle of its pixel-weighted mean colour.

Needs Debian's python3-numpy and python3-sklearn. Results go to bench/results/conditions.*
(with the grid as conditions-colour-grid.png). Takes about 10 minutes on 2 cores.

usage: python3 bench/conditions.py [--data DIR] [--cvae build/cvae] [--epochs 10]
                                   [--seed 0] [--device cpu]
"""
import argparse
import datetime
import json
import math
import os
import platform
import struct
import subprocess
import sys
import tempfile
import zlib

import numpy as np
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from idx import read_split  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = 10
HUES = 8  # the grid's columns
ROUNDS, THROUGHPUT_EPOCHS = 3, 2


def one_hot(labels):
    out = np.zeros((len(labels), CLASSES), np.float32)
    out[np.arange(len(labels)), labels] = 1
    return out


def tint(hue):
    """c(h) of each hue, (n, 3)."""
    k = np.arange(3) * 2 * math.pi / 3
    return ((1 + np.cos(hue[:, None] - k[None, :])) / 2).astype(np.float32)


def mean_hue(images):
    """The chromaticity angle of each RGB image's pixel-weighted mean colour, (n,)."""
    x = images.reshape(len(images), -1, 3).astype(np.float64)
    w = x.sum(axis=2, keepdims=True)
    mean = (x * w).sum(axis=1) / np.maximum(w.sum(axis=1), 1e-9)
    r, g, b = mean[:, 0], mean[:, 1], mean[:, 2]
    return np.arctan2(math.sqrt(3) * (g - b), 2 * r - g - b)


def angle_error(a, b):
    return np.abs((a - b + math.pi) % (2 * math.pi) - math.pi)


def write_split(folder, prefix, images, conditions):
    os.makedirs(folder, exist_ok=True)
    np.save(os.path.join(folder, f"{prefix}_images.npy"), images)
    np.save(os.path.join(folder, f"{prefix}_conditions.npy"), conditions.astype(np.float32))


def train(args, data, run, extra=()):
    """Trains into run; returns the per-epoch metrics."""
    metrics = os.path.join(run + ".jsonl")
    cmd = [args.cvae, "train", "--data", data, "--epochs", str(args.epochs), "--seed",
           str(args.seed), "--device", args.device, "--out", run, "--metrics", metrics,
           *extra]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    with open(metrics) as f:
        return [json.loads(line) for line in f]


def generate(args, run, out, rows_flag, rows_file, extra=()):
    cmd = [args.cvae, "generate", "--model", os.path.join(run, "model.ckpt"), rows_flag,
           rows_file, "--out", out, "--format", "npy", "--seed", str(args.seed), "--device",
           args.device, *extra]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return np.load(os.path.join(out, "images.npy"))


def fidelity(clf, images, labels):
    x = images.reshape(len(images), -1).astype(np.float32) / 255.0
    return float((clf.predict(x) == labels).mean())


def write_png(path, rgb):
    """An (H, W, 3) uint8 array as a PNG (zlib and struct: no imaging library needed)."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def tile(images, rows, cols, gap=2):
    """images (rows * cols, h, w, 3) row after row, into one picture with grey gaps."""
    _, h, w, c = images.shape
    out = np.full((rows * h + (rows + 1) * gap, cols * w + (cols + 1) * gap, c), 128, np.uint8)
    for i, im in enumerate(images):
        r, k = divmod(i, cols)
        out[gap + r * (h + gap):gap + r * (h + gap) + h, gap + k * (w + gap):gap + k * (w + gap) + w] = im
    return out


def median_rate(metrics):
    return float(np.median([m["samples_per_s"] for m in metrics]))


def continuous(args, tmp, xtr, ytr, xte, yte, clf):
    ink_tr, ink_te = xtr.mean(axis=(1, 2)) / 255.0, xte.mean(axis=(1, 2)) / 255.0
    mu, sd = ink_tr.mean(), ink_tr.std()
    def cond(y, ink):
        return np.concatenate([one_hot(y), ((ink - mu) / sd)[:, None]], axis=1).astype(np.float32)
    data = os.path.join(tmp, "ink")
    write_split(data, "train", xtr, cond(ytr, ink_tr))
    write_split(data, "test", xte, cond(yte, ink_te))
    ink_metrics = train(args, data, os.path.join(tmp, "ink-run"))
    label_metrics = train(args, args.data, os.path.join(tmp, "label-run"))
    rows = os.path.join(tmp, "ink-rows.npy")
    np.save(rows, cond(yte, ink_te))
    labels = os.path.join(tmp, "labels.npy")
    np.save(labels, yte.astype(np.int64))
    gen = generate(args, os.path.join(tmp, "ink-run"), os.path.join(tmp, "ink-gen"),
                   "--conditions", rows)
    gen_label = generate(args, os.path.join(tmp, "label-run"), os.path.join(tmp, "label-gen"),
                         "--labels", labels)
    got_ink = gen.reshape(len(gen), -1).mean(axis=1) / 255.0
    out = {"test_neg_elbo": {"ink": ink_metrics[-1]["test_neg_elbo"],
                             "labels": label_metrics[-1]["test_neg_elbo"]}}
    for n in (1000, len(yte)):
        r = float(np.corrcoef(ink_te[:n], got_ink[:n])[0, 1])
        f_ink, f_lab = fidelity(clf, gen[:n], yte[:n]), fidelity(clf, gen_label[:n], yte[:n])
        out[f"first_{n}"] = {"pearson_ink": r, "fidelity_ink_model": f_ink,
                             "fidelity_label_model": f_lab, "fidelity_difference": f_ink - f_lab}
    out["label_model_samples_per_s"] = median_rate(label_metrics)
    out["ink_model_samples_per_s"] = median_rate(ink_metrics)
    return out


def colour(args, tmp, xtr, ytr, xte, yte):
    rng = np.random.default_rng(args.seed)
    h_tr, h_te = rng.uniform(0, 2 * math.pi, len(xtr)), rng.uniform(0, 2 * math.pi, len(xte))
    def tinted(x, hue):
        return np.rint(x[..., None].astype(np.float32) * tint(hue)[:, None, None, :]).astype(np.uint8)
    def cond(y, h):
        return np.concatenate([one_hot(y), np.cos(h)[:, None], np.sin(h)[:, None]],
                              axis=1).astype(np.float32)
    data = os.path.join(tmp, "colour")
    write_split(data, "train", tinted(xtr, h_tr), cond(ytr, h_tr))
    write_split(data, "test", tinted(xte, h_te), cond(yte, h_te))
    run = os.path.join(tmp, "colour-run")
    metrics = train(args, data, run)
    rows = os.path.join(tmp, "colour-rows.npy")
    np.save(rows, cond(yte[:1000], h_te[:1000]))
    gen = generate(args, run, os.path.join(tmp, "colour-gen"), "--conditions", rows)
    err = np.degrees(angle_error(mean_hue(gen), h_te[:1000]))
    real_err = np.degrees(angle_error(mean_hue(tinted(xte[:1000], h_te[:1000])), h_te[:1000]))
    # the grid: a row per class, a column per hue, one z per image
    grid_h = np.tile(np.arange(HUES) * 2 * math.pi / HUES, CLASSES)
    grid_y = np.repeat(np.arange(CLASSES), HUES)
    np.save(rows, cond(grid_y, grid_h))
    grid = generate(args, run, os.path.join(tmp, "colour-grid"), "--conditions", rows)
    picture = os.path.join(ROOT, "bench", "results", "conditions-colour-grid.png")
    write_png(picture, tile(grid, CLASSES, HUES))
    return {"test_neg_elbo": metrics[-1]["test_neg_elbo"],
            "median_hue_error_degrees": float(np.median(err)),
            "p90_hue_error_degrees": float(np.percentile(err, 90)),
            "real_images_median_hue_error_degrees": float(np.median(real_err)),
            "samples_per_s": median_rate(metrics), "grid": os.path.relpath(picture, ROOT)}


def throughput(args, tmp, xtr, ytr, xte, yte):
    """Label and one-hot-vector training, alternated ROUNDS times for THROUGHPUT_EPOCHS
    epochs each, so that the machine's drift (a shared VM's speed moves by a third from
    minute to minute) falls on both alike; the median over all their epochs."""
    data = os.path.join(tmp, "one-hot")
    write_split(data, "train", xtr, one_hot(ytr))
    write_split(data, "test", xte, one_hot(yte))
    short = argparse.Namespace(**{**vars(args), "epochs": THROUGHPUT_EPOCHS})
    rates = {"labels": [], "vectors": []}
    for r in range(ROUNDS):
        for kind, folder in (("labels", args.data), ("vectors", data)):
            m = train(short, folder, os.path.join(tmp, f"rate-{kind}-{r}"))
            rates[kind] += [e["samples_per_s"] for e in m]
    lab, vec = float(np.median(rates["labels"])), float(np.median(rates["vectors"]))
    return {"label_samples_per_s": lab, "vector_samples_per_s": vec, "ratio": vec / lab,
            "label_per_epoch": rates["labels"], "vector_per_epoch": rates["vectors"],
            "rounds": ROUNDS, "epochs_per_round": THROUGHPUT_EPOCHS}


def report(result, out):
    c, k, t = result["continuous"], result["colour"], result["throughput"]
    lines = [
        "# Condition vectors on Fashion-MNIST", "",
        f"{result['date']}, commit {result['commit']}, {result['cpu']}, device {result['device']}.",
        f"Command: `{result['command']}` ({result['epochs']} epochs each).", "",
        "## Continuous: conditions [one-hot class, ink]", "",
        "Images generated for the test set's condition rows (in order); ink is the mean pixel "
        "value, standardised in the condition.", "",
        "| images | Pearson r, requested vs generated ink | fidelity, ink model | "
        "fidelity, label model | difference |", "|---|---|---|---|---|"]
    for key in ("first_1000", "first_10000"):
        if key in c:
            e = c[key]
            lines.append(f"| {key.split('_')[1]} | {e['pearson_ink']:.4f} | "
                         f"{e['fidelity_ink_model']:.4f} | {e['fidelity_label_model']:.4f} | "
                         f"{e['fidelity_difference']:+.4f} |")
    lines += ["", f"Test -ELBO after training: ink model {c['test_neg_elbo']['ink']:.3f}, "
              f"label model {c['test_neg_elbo']['labels']:.3f} nats.", "",
              "## Colour: conditions [one-hot class, cos h, sin h]", "",
              f"Median angular error between the requested hue and the generated images' mean "
              f"hue, 1000 images: **{k['median_hue_error_degrees']:.2f} degrees** (90th "
              f"percentile {k['p90_hue_error_degrees']:.2f}; the real tinted test images "
              f"measure {k['real_images_median_hue_error_degrees']:.2f}). Test -ELBO "
              f"{k['test_neg_elbo']:.3f} nats; {k['samples_per_s']:.0f} samples/s on 28x28x3.",
              "", f"![a row per class, a column per hue]({os.path.basename(k['grid'])})", "",
              "## Throughput: condition vectors against labels, same shapes", "",
              f"{t['rounds']} rounds of {t['epochs_per_round']} epochs each, labels and "
              "vectors alternated; cvae's training samples/s per epoch.", "",
              "| model | samples/s (median of epochs) | per epoch |", "|---|---|---|",
              f"| labels (gathered condition column) | {t['label_samples_per_s']:.0f} | "
              + ", ".join(f"{x:.0f}" for x in t["label_per_epoch"]) + " |",
              f"| one-hot condition vectors, K = 10 (condition GEMMs) | "
              f"{t['vector_samples_per_s']:.0f} | "
              + ", ".join(f"{x:.0f}" for x in t["vector_per_epoch"]) + " |", "",
              f"Ratio vectors / labels: **{t['ratio']:.3f}**. In the {result['epochs']}-epoch "
              f"runs above, the label model trained at {c['label_model_samples_per_s']:.0f} "
              f"and the ink model at {c['ink_model_samples_per_s']:.0f} samples/s.", ""]
    with open(out + ".md", "w") as f:
        f.write("\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--cvae", default=os.path.join(ROOT, "build", "cvae"))
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "conditions"))
    args = ap.parse_args()
    xtr, ytr = read_split(args.data, "train")
    xte, yte = read_split(args.data, "t10k")
    clf = LogisticRegression(max_iter=200)
    clf.fit(xtr.reshape(len(xtr), -1).astype(np.float32) / 255.0, ytr)
    real = fidelity(clf, xte, yte)
    print(f"logistic regression: {real:.4f} on the real test set", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        cont = continuous(args, tmp, xtr, ytr, xte, yte, clf)
        col = colour(args, tmp, xtr, ytr, xte, yte)
        thr = throughput(args, tmp, xtr, ytr, xte, yte)
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"],
                         capture_output=True, text=True).stdout.strip() or platform.processor()
    result = {"date": datetime.date.today().isoformat(), "commit": commit, "cpu": cpu,
              "device": args.device, "epochs": args.epochs,
              "command": "python3 bench/conditions.py " + " ".join(sys.argv[1:]),
              "real_test_fidelity": real, "continuous": cont, "colour": col, "throughput": thr}
    with open(args.out + ".json", "w") as f:
        json.dump(result, f, indent=2)
    report(result, args.out)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
