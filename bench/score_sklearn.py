#!/usr/bin/env python3
"""cvae score against scikit-learn: the same figures from LogisticRegression on the same images.

Trains a model (the default one, --epochs epochs, or takes --model), runs `cvae score
--json`, writes the very images it scores with `cvae generate --per-class N --seed S`
(the bytes score generates), and fits scikit-learn's LogisticRegression (lbfgs, C = 1,
run to convergence: max_iter 3000) where score fits its probe: on the real training images (tested on the real
test images: the ceiling; on the generated ones: fidelity) and on the generated images
(tested on the real test images: CAS). Each of cvae's three accuracies must be within
--tolerance (0.02) of scikit-learn's; the script exits 1 when one is not. Needs Debian's
python3-sklearn and python3-numpy. Results go to bench/results/score_sklearn.{md,json}.

usage: python3 bench/score_sklearn.py [--data DIR] [--cvae BUILD/cvae] [--epochs 5]
                                      [--per-class 1000] [--model CKPT]
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from idx import read_split  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(dirname, prefix):
    x, y = read_split(dirname, prefix)
    return x.reshape(len(x), -1).astype(np.float32) / 255.0, y


def cpu_model():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def run(cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def accuracy(pred, y, classes):
    return float((pred == y).mean()), [float((pred[y == c] == c).mean()) for c in range(classes)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--cvae", default=os.path.join(ROOT, "build", "cvae"))
    ap.add_argument("--model", help="a checkpoint to score (default: train one)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--per-class", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tolerance", type=float, default=0.02)
    ap.add_argument("--max-iter", type=int, default=3000,
                    help="LogisticRegression's lbfgs iterations (enough to converge)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "score_sklearn"))
    args = ap.parse_args()
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if not model:
            run([args.cvae, "train", "--data", args.data, "--epochs", str(args.epochs),
                 "--seed", str(args.seed), "--device", "cpu", "--out", os.path.join(tmp, "run")])
            model = os.path.join(tmp, "run", "model.ckpt")
        t0 = time.time()
        score = json.loads(run([args.cvae, "score", "--model", model, "--data", args.data,
                                "--per-class", str(args.per_class), "--seed", str(args.seed),
                                "--device", "cpu", "--json"]))
        score_seconds = time.time() - t0
        gen = os.path.join(tmp, "gen")
        run([args.cvae, "generate", "--model", model, "--per-class", str(args.per_class),
             "--seed", str(args.seed), "--mean", "--format", "npy", "--out", gen,
             "--device", "cpu"])
        xg = np.load(os.path.join(gen, "images.npy")).reshape(-1, 784).astype(np.float32) / 255.0
        yg = np.load(os.path.join(gen, "labels.npy"))

    xtr, ytr = load(args.data, "train")
    xte, yte = load(args.data, "t10k")
    classes = int(ytr.max()) + 1
    t0 = time.time()
    real = LogisticRegression(max_iter=args.max_iter).fit(xtr, ytr)
    on_gen = LogisticRegression(max_iter=args.max_iter).fit(xg, yg)
    sk_seconds = time.time() - t0
    iters = f"{int(real.n_iter_[0])} and {int(on_gen.n_iter_[0])}"
    sk = {}
    sk["ceiling"], sk["ceiling_per_class"] = accuracy(real.predict(xte), yte, classes)
    sk["fidelity"], sk["fidelity_per_class"] = accuracy(real.predict(xg), yg, classes)
    sk["cas"], sk["cas_per_class"] = accuracy(on_gen.predict(xte), yte, classes)
    diff = {k: abs(score[k] - sk[k]) for k in ("ceiling", "fidelity", "cas")}
    ok = all(d <= args.tolerance for d in diff.values())

    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    result = {"date": datetime.date.today().isoformat(), "commit": commit, "cpu": cpu_model(),
              "load_average_before": load_before, "load_average_after": os.getloadavg(),
              "command": "python3 bench/score_sklearn.py " + " ".join(sys.argv[1:]),
              "epochs": args.epochs, "per_class": args.per_class, "cvae_score": score,
              "sklearn": sk, "difference": diff, "tolerance": args.tolerance, "pass": ok,
              "cvae_score_seconds": score_seconds, "sklearn_seconds": sk_seconds}
    with open(args.out + ".json", "w") as f:
        json.dump(result, f, indent=2)
    with open(args.out + ".md", "w") as f:
        f.write(f"# cvae score against scikit-learn\n\n{result['date']}, commit {commit}, "
                f"{result['cpu']} (load average {load_before[0]:.2f} before, "
                f"{result['load_average_after'][0]:.2f} after). Command: "
                f"`{result['command']}`\n\nThe default model trained {args.epochs} epochs on "
                f"Fashion-MNIST; {args.per_class} images per class generated with --mean. "
                f"cvae's probe (softmax regression with the L2 penalty of C = 1, 8000 Adam steps) "
                f"against scikit-learn's LogisticRegression (lbfgs, C = 1, max_iter "
                f"{args.max_iter}; it stopped after {iters} iterations) on the same images:\n\n"
                f"| figure | cvae score | scikit-learn | difference |\n|---|---|---|---|\n")
        for k in ("ceiling", "fidelity", "cas"):
            f.write(f"| {k} | {score[k]:.4f} | {sk[k]:.4f} | {diff[k]:.4f} |\n")
        f.write(f"\nWithin {args.tolerance}: {'yes' if ok else 'NO'}. cvae score took "
                f"{score_seconds:.1f} s (generation and both probes); scikit-learn's two fits "
                f"{sk_seconds:.1f} s.\n\nPer class (cvae / scikit-learn):\n\n"
                f"| class | ceiling | fidelity | CAS |\n|---|---|---|---|\n")
        for c in range(classes):
            f.write(f"| {c} | " + " | ".join(
                f"{score[k + '_per_class'][c]:.3f} / {sk[k + '_per_class'][c]:.3f}"
                for k in ("ceiling", "fidelity", "cas")) + " |\n")
    print(json.dumps({"cvae": {k: score[k] for k in diff}, "sklearn": {k: sk[k] for k in diff},
                      "difference": diff, "pass": ok}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
