#!/usr/bin/env python3
"""A learned Gaussian sigma against a fixed one and the Bernoulli likelihood, on colour photographs.

The data: 6 classes of 32 x 32 RGB crops of real photographs, one photograph a class
(scikit-learn's china and flower, scikit-image's astronaut, coffee, chelsea and rocket:
Debian's python3-sklearn and python3-skimage ship them), crops at random places (train and
test from disjoint halves of each picture, so no test crop overlaps a training one), as
NumPy files. Three likelihoods are trained the same epochs: --likelihood bernoulli,
--likelihood gaussian (sigma 0.1), and --likelihood gaussian --sigma learned, each with
each prior of --priors and each seed of --seeds. Each model is scored by `cvae score`
(fidelity and CAS): their likelihoods' nats are not comparable, the scores are. Beside
the scores, the mean pixel of the model's generated --mean images against the real test
images' (generated images darker than the data are drawn where the prior and the
encoder's codes disagree). Results go to bench/results/learned_sigma.{md,json}.

usage: python3 bench/learned_sigma.py [--cvae BUILD/cvae] [--epochs 20] [--per-class 500]
                                      [--priors standard,conditional] [--seeds 0,1]
"""
import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from statistics import mean

import numpy as np
import skimage.data
from sklearn.datasets import load_sample_images

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIDE = 32


def photographs():
    china, flower = load_sample_images().images
    return [("china", china), ("flower", flower), ("astronaut", skimage.data.astronaut()),
            ("coffee", skimage.data.coffee()), ("chelsea", skimage.data.chelsea()),
            ("rocket", skimage.data.rocket())]


def crops(picture, n, half, rng):
    """n random crops from the left (half 0) or right (half 1) half of the picture."""
    h, w, _ = picture.shape
    lo, hi = (0, w // 2 - SIDE) if half == 0 else (w // 2, w - SIDE)
    ys = rng.integers(0, h - SIDE + 1, n)
    xs = rng.integers(lo, hi + 1, n)
    return np.stack([picture[y:y + SIDE, x:x + SIDE] for y, x in zip(ys, xs)])


def write_data(folder, n_train, n_test, seed):
    rng = np.random.default_rng(seed)
    os.makedirs(folder)
    for split, n, half in (("train", n_train, 0), ("test", n_test, 1)):
        xs, ys = [], []
        for label, (_, picture) in enumerate(photographs()):
            xs.append(crops(picture, n, half, rng))
            ys.append(np.full(n, label, dtype=np.uint8))
        order = rng.permutation(sum(len(y) for y in ys))
        np.save(os.path.join(folder, f"{split}_images.npy"),
                np.ascontiguousarray(np.concatenate(xs)[order], dtype=np.uint8))
        np.save(os.path.join(folder, f"{split}_labels.npy"), np.concatenate(ys)[order])


LIKELIHOODS = [("bernoulli", ["--likelihood", "bernoulli"]),
               ("gaussian, sigma 0.1", ["--likelihood", "gaussian", "--sigma", "0.1"]),
               ("gaussian, sigma learned", ["--likelihood", "gaussian", "--sigma", "learned"])]


def run_json(cmd):
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def train_and_score(args, data, run, flags, seed):
    """Trains one model, scores it and measures its generated images' mean pixel."""
    t0 = time.time()
    subprocess.run([args.cvae, "train", "--data", data, "--hidden", args.hidden,
                    "--latent", str(args.latent), "--epochs", str(args.epochs),
                    "--seed", str(seed), "--device", "cpu", "--out", run,
                    "--metrics", run + ".jsonl"] + flags,
                   check=True, capture_output=True, text=True)
    seconds = time.time() - t0
    last = json.loads(open(run + ".jsonl").read().strip().split("\n")[-1])
    model = os.path.join(run, "model.ckpt")
    score = run_json([args.cvae, "score", "--model", model, "--data", data,
                      "--per-class", str(args.per_class), "--seed", str(seed),
                      "--device", "cpu", "--json"])
    subprocess.run([args.cvae, "generate", "--model", model, "--per-class", "100", "--mean",
                    "--format", "npy", "--seed", str(seed), "--device", "cpu",
                    "--out", run + "-generated"], check=True, capture_output=True)
    generated = np.load(os.path.join(run + "-generated", "images.npy"))
    return {"train_seconds": seconds, "test_neg_elbo": last["test_neg_elbo"],
            "test_kl": last.get("test_kl"), "sigma": last.get("sigma"),
            "active_units": last["active_units"], "score": score,
            "generated_mean_pixel": float(generated.mean() / 255.0)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cvae", default=os.path.join(ROOT, "build", "cvae"))
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--hidden", default="512")
    ap.add_argument("--latent", type=int, default=32)
    ap.add_argument("--train-per-class", type=int, default=2000)
    ap.add_argument("--test-per-class", type=int, default=500)
    ap.add_argument("--per-class", type=int, default=500, help="generated images per class")
    ap.add_argument("--priors", default="standard,conditional")
    ap.add_argument("--seeds", default="0,1", help="training and scoring seeds")
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "learned_sigma"))
    args = ap.parse_args()
    priors = args.priors.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "photos")
        write_data(data, args.train_per_class, args.test_per_class, args.data_seed)
        real_mean_pixel = float(np.load(os.path.join(data, "test_images.npy")).mean() / 255.0)
        for prior in priors:
            for name, flags in LIKELIHOODS:
                for seed in seeds:
                    run = os.path.join(tmp, f"{prior}-{len(rows)}")
                    r = train_and_score(args, data, run, flags + ["--prior", prior], seed)
                    r.update({"likelihood": name, "prior": prior, "seed": seed, "flags": flags})
                    rows.append(r)
                    print(f"{prior} prior, {name}, seed {seed}: fidelity "
                          f"{r['score']['fidelity']:.4f} CAS {r['score']['cas']:.4f} "
                          f"(ceiling {r['score']['ceiling']:.4f}), sigma {r['sigma']}, "
                          f"mean pixel {r['generated_mean_pixel']:.3f} "
                          f"(real {real_mean_pixel:.3f})", flush=True)
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    result = {"date": datetime.date.today().isoformat(), "commit": commit,
              "load_average_before": load_before, "load_average_after": os.getloadavg(),
              "command": "python3 bench/learned_sigma.py " + " ".join(sys.argv[1:]),
              "epochs": args.epochs, "hidden": args.hidden, "latent": args.latent,
              "seeds": seeds, "real_test_mean_pixel": real_mean_pixel,
              "classes": [n for n, _ in photographs()], "runs": rows}
    if os.path.exists(args.out + ".json"):
        with open(args.out + ".json") as f:
            result["notes"] = json.load(f).get("notes", [])
    with open(args.out + ".json", "w") as f:
        json.dump(result, f, indent=2)
    write_markdown(args, result, priors, seeds)


def write_markdown(args, result, priors, seeds):
    rows = result["runs"]
    with open(args.out + ".md", "w") as f:
        f.write(f"# A learned Gaussian sigma on colour photographs\n\n{result['date']}, commit "
                f"{result['commit']} (load average {result['load_average_before'][0]:.2f} "
                f"before, {result['load_average_after'][0]:.2f} after). Command: "
                f"`{result['command']}`\n\n6 classes of 32 x 32 RGB crops, one photograph a "
                f"class ({', '.join(result['classes'])}), {args.train_per_class} training and "
                f"{args.test_per_class} test crops per class from disjoint halves of each "
                f"picture; hidden {args.hidden}, latent {args.latent}, {args.epochs} epochs, "
                f"seeds {', '.join(map(str, seeds))} (the ceiling: their mean); `cvae score` with {args.per_class} "
                f"--mean images per class. The likelihoods' nats are not comparable (a "
                f"density against a probability); the scores are. Mean pixel: of 100 "
                f"generated --mean images per class, against "
                f"{result['real_test_mean_pixel']:.3f} for the real test crops.\n\n"
                f"| prior | likelihood | fidelity (per seed) | CAS (per seed) | ceiling | "
                f"sigma at the end | test KL (nats) | mean pixel |\n"
                f"|---|---|---|---|---|---|---|---|\n")
        best = {}
        for prior in priors:
            for name, _ in LIKELIHOODS:
                rs = [r for r in rows if r["prior"] == prior and r["likelihood"] == name]
                fid = [r["score"]["fidelity"] for r in rs]
                cas = [r["score"]["cas"] for r in rs]
                sigma = "" if rs[0]["sigma"] is None else \
                    f"{mean([r['sigma'] for r in rs]):.4f}"
                kl = "" if rs[0]["test_kl"] is None else f"{mean([r['test_kl'] for r in rs]):.1f}"
                for key, vals in (("fidelity", fid), ("cas", cas)):
                    if mean(vals) > best.get((prior, key), (-1, ""))[0]:
                        best[(prior, key)] = (mean(vals), name)
                f.write(f"| {prior} | {name} | {mean(fid):.4f} "
                        f"({', '.join(f'{v:.4f}' for v in fid)}) | {mean(cas):.4f} "
                        f"({', '.join(f'{v:.4f}' for v in cas)}) | "
                        f"{mean([r['score']['ceiling'] for r in rs]):.4f} | {sigma} | {kl} | "
                        f"{mean([r['generated_mean_pixel'] for r in rs]):.3f} |\n")
        f.write("\n")
        for prior in priors:
            f.write(f"- {prior} prior: best fidelity {best[(prior, 'fidelity')][1]}, best CAS "
                    f"{best[(prior, 'cas')][1]} (means over the seeds).\n")
        if result.get("notes"):  # remarks added by hand, kept across runs
            f.write("\n" + "\n\n".join(result["notes"]) + "\n")


if __name__ == "__main__":
    main()
