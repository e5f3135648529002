#!/usr/bin/env python3
"""Better models per minute: cvae against the PyTorch peer at equal wall-clock time, and the
objectives that buy quality (the IWAE bound, free bits).

On --binarize Fashion-MNIST (dynamic binarization of the training images; the test set
binarized once here, with a fixed seed, and given to both as it is):

  race        Burda et al.'s architecture (784-200-200-50, class-conditional) trained for
              --budget seconds of training by cvae (its fastest CPU setting: fp32, the
              OpenMP threads it starts with) and by bench/torch_peer.py (eager fp32, torch's
              threads), at the same batch and lr; cvae is stopped by SIGTERM (it finishes
              the step and writes its checkpoint), the peer by its --seconds and exported
              as a cvae checkpoint (--save-checkpoint). Both are then scored by the same
              evaluation: test IWAE-1000 NLL (`cvae eval --iwae`) and `cvae score`.
  objectives  the same model trained --epochs epochs with the ELBO and with --objective
              iwae --samples 5; test IWAE-1000 NLL (target: IWAE 0.5 nat better).
  free_bits   the 2048x2 model, latent 64, conditional prior, --fb-epochs epochs without
              and with --free-bits LAMBDA; active units and test IWAE-K NLL (--fb-iwae)
              (target: more active units, at most 0.5 nat worse).
  free_bits_lambdas  the same, one free-bits run per value of --fb-lambdas beside the plain
              run, each with its own cost and verdict (a sweep of another --fb-epochs
              than 2 is kept in its own section beside the others).

Each stage writes its figures as it finishes, with the load average before and after it
(the machine may be shared), to bench/results/quality_race.{json,md}.

usage: python3 bench/quality_race.py [--cvae BUILD/cvae] [--budget 600] [--epochs 10]
           [--stages race,objectives,free_bits] [--iwae 1000] [--fb-epochs 3] [--fb-iwae 100]
           [--fb-lambda 0.25] [--fb-lambdas 0.05,0.1]
"""
import argparse
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from idx import find, read_idx  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BURDA = ["--hidden", "200,200", "--latent", "50"]
FB_MODEL = ["--hidden", "2048,2048", "--latent", "64", "--prior", "conditional"]


def cpu_model():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def uptime():
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def write_idx(path, array):
    dims = array.shape
    with open(path, "wb") as f:
        f.write(bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims))
        f.write(np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def binarized_data(src, dst, test_images=0):
    """src's training files as they are, its test images binarized once (seed 0x7E57), the
    first test_images of them (0: all)."""
    os.makedirs(dst)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        path = find(src, name)
        os.symlink(path, os.path.join(dst, os.path.basename(path)))
    x = read_idx(find(src, "t10k-images-idx3-ubyte"))
    y = read_idx(find(src, "t10k-labels-idx1-ubyte"))
    n = test_images or len(x)
    u = np.random.default_rng(0x7E57).random(x.shape)
    write_idx(os.path.join(dst, "t10k-images-idx3-ubyte"), np.where(u < x / 255.0, 255, 0)[:n])
    write_idx(os.path.join(dst, "t10k-labels-idx1-ubyte"), y[:n])


def run(cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def cvae_for(args, cmd, model, data, *extra):
    return json.loads(run([args.cvae, cmd, "--model", model, "--data", data, "--device", "cpu",
                           "--json", *extra]))


def evaluate(args, model, data, k):
    e = cvae_for(args, "eval", model, data, "--iwae", str(k))
    return {"iwae_nll": e["iwae_nll"], "iwae_k": k, "test_neg_elbo": e["test_neg_elbo"],
            "active_units": e["active_units"]}


def train_for(args, data, out, seconds):
    """cvae train stopped by SIGTERM after `seconds` of training (counted from its header,
    printed once the data is loaded): it writes its checkpoint and exits 143."""
    cmd = [args.cvae, "train", "--data", data, *BURDA, "--binarize", "--epochs", "100000",
           "--batch", str(args.batch), "--seed", "0", "--device", "cpu", "--out", out]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    for line in p.stdout:
        if line.startswith("objective:"):
            break
    t0 = time.time()
    time.sleep(seconds)
    p.send_signal(signal.SIGTERM)
    lines = p.stdout.read().splitlines()
    rc = p.wait()
    if rc != 143:
        raise SystemExit(f"cvae train ended with {rc}, not 143: {lines[-3:]}")
    epochs = [ln for ln in lines if ln.startswith("epoch")]
    return {"train_seconds": time.time() - t0, "epochs_done": len(epochs),
            "last_epoch_line": epochs[-1] if epochs else None,
            "stop_line": lines[-1] if lines else ""}


def race(args, data, tmp):
    out = {"uptime_before": uptime()}
    cv = train_for(args, data, os.path.join(tmp, "race-cvae"), args.budget)
    cv_model = os.path.join(tmp, "race-cvae", "model.ckpt")
    peer_model = os.path.join(tmp, "race-peer.ckpt")
    t0 = time.time()
    peer = json.loads(run([sys.executable, os.path.join(ROOT, "bench", "torch_peer.py"),
                           "--data", data, "--hidden", "200,200", "--latent", "50", "--binarize",
                           "--epochs", "100000", "--seconds", str(args.budget), "--batch",
                           str(args.batch), "--seed", "0", "--save-checkpoint", peer_model,
                           "--json"]).strip().split("\n")[-1])
    out["uptime_after_training"] = uptime()
    info = run([args.cvae, "info", "--model", cv_model])
    cv["steps"] = int(info.split(", step ")[1].split(",")[0])
    out["cvae"] = {**cv, **evaluate(args, cv_model, data, args.iwae),
                   "score": cvae_for(args, "score", cv_model, data)}
    out["peer"] = {"train_seconds": peer["train_seconds"], "steps": peer["steps"],
                   "epochs_done": len(peer["epochs"]), "torch": peer["torch"],
                   "wall_seconds": time.time() - t0,
                   **evaluate(args, peer_model, data, args.iwae),
                   "score": cvae_for(args, "score", peer_model, data)}
    out["uptime_after"] = uptime()
    return out


def train_epochs(args, data, out, flags, epochs):
    t0 = time.time()
    run([args.cvae, "train", "--data", data, "--binarize", "--epochs", str(epochs), "--batch",
         str(args.batch), "--seed", "0", "--device", "cpu", "--out", out, *flags])
    return time.time() - t0


def objectives(args, data, tmp):
    out = {"uptime_before": uptime(), "epochs": args.epochs}
    for name, flags in (("elbo", []), ("iwae5", ["--objective", "iwae", "--samples", "5"])):
        d = os.path.join(tmp, "obj-" + name)
        seconds = train_epochs(args, data, d, BURDA + flags, args.epochs)
        out[name] = {"flags": flags, "train_seconds": seconds,
                     **evaluate(args, os.path.join(d, "model.ckpt"), data, args.iwae)}
    out["iwae_gain_nats"] = out["elbo"]["iwae_nll"] - out["iwae5"]["iwae_nll"]
    out["uptime_after"] = uptime()
    return out


def free_bits_run(args, data, tmp, name, flags):
    d = os.path.join(tmp, "fb-" + name)
    seconds = train_epochs(args, data, d, FB_MODEL + flags, args.fb_epochs)
    return {"flags": flags, "train_seconds": seconds,
            **evaluate(args, os.path.join(d, "model.ckpt"), data, args.fb_iwae)}


def free_bits(args, data, tmp):
    out = {"uptime_before": uptime(), "epochs": args.fb_epochs, "lambda": args.fb_lambda}
    for name, flags in (("plain", []), ("free_bits", ["--free-bits", str(args.fb_lambda)])):
        out[name] = free_bits_run(args, data, tmp, name, flags)
    out["nll_cost_nats"] = out["free_bits"]["iwae_nll"] - out["plain"]["iwae_nll"]
    out["uptime_after"] = uptime()
    return out


def free_bits_lambdas(args, data, tmp):
    out = {"uptime_before": uptime(), "epochs": args.fb_epochs,
           "plain": free_bits_run(args, data, tmp, "sweep-plain", []), "runs": []}
    for lam in args.fb_lambdas:
        x = free_bits_run(args, data, tmp, f"lambda{lam:g}", ["--free-bits", f"{lam:g}"])
        out["runs"].append({"lambda": lam, **x,
                            "nll_cost_nats": x["iwae_nll"] - out["plain"]["iwae_nll"]})
        print(json.dumps({"plain": out["plain"], "run": out["runs"][-1]}), flush=True)
    out["uptime_after"] = uptime()
    return out


def write_report(path, result):
    with open(path + ".json", "w") as f:
        json.dump(result, f, indent=2)
    lines = [f"# Quality per minute\n\nLatest run {result['date']}, commit {result['commit']}, "
             f"{result['cpu']} ({os.cpu_count()} CPUs). Commands: " +
             "; ".join(f"`{c}`" for c in result["commands"]) + "\n",
             "Binarized Fashion-MNIST (dynamic binarization of the training images, the test "
             "set binarized once with a fixed seed); IWAE NLL in nats per test image, from "
             "`cvae eval --iwae K` (seed 0) for every model. The machine was shared with other "
             "work: the load averages are beside each stage, and each stage says how many test "
             "images it evaluated on.\n"]
    r = result.get("race")
    if r:
        c, p = r["cvae"], r["peer"]
        lines.append(f"## Race: {result['budget']} s of training each, 784-200-200-50\n\n"
                     f"{r.get('test_images', 10000)} test images. Before: `{r['uptime_before']}`; after "
                     f"training: "
                     f"`{r['uptime_after_training']}`.\n\n| trainer | epochs done | "
                     f"test IWAE-{c['iwae_k']} NLL | test -ELBO | active units | score: "
                     f"fidelity | CAS | ceiling |\n|---|---|---|---|---|---|---|---|")
        for name, x in (("cvae", c), (f"PyTorch peer (torch {p['torch']})", p)):
            s = x["score"]
            lines.append(f"| {name} | {x['epochs_done']} | {x['iwae_nll']:.3f} | "
                         f"{x['test_neg_elbo']:.3f} | {x['active_units']} | {s['fidelity']:.4f} | "
                         f"{s['cas']:.4f} | {s['ceiling']:.4f} |")
        lines.append(f"\ncvae took {c['steps']} steps in {c['train_seconds']:.0f} s (its last "
                     f"epoch line: `{c['last_epoch_line']}`); the peer took {p['steps']} steps "
                     f"in {p['train_seconds']:.0f} s. Target: cvae ahead at "
                     f"equal minutes: {'met' if c['iwae_nll'] < p['iwae_nll'] else 'NOT met'} "
                     f"({p['iwae_nll'] - c['iwae_nll']:+.3f} nat).\n")
    o = result.get("objectives")
    if o:
        lines.append(f"## The IWAE objective against the ELBO, {o['epochs']} epochs each\n\n"
                     f"{o['test_images']} test images. Before: `{o['uptime_before']}`; after: "
                     f"`{o['uptime_after']}`.\n\n"
                     f"| objective | test IWAE-{o['elbo']['iwae_k']} NLL | test -ELBO | active "
                     f"units | training seconds |\n|---|---|---|---|---|")
        for name in ("elbo", "iwae5"):
            x = o[name]
            lines.append(f"| {name} | {x['iwae_nll']:.3f} | {x['test_neg_elbo']:.3f} | "
                         f"{x['active_units']} | {x['train_seconds']:.0f} |")
        lines.append(f"\nIWAE (K = 5) gains {o['iwae_gain_nats']:.3f} nat; target 0.5: "
                     f"{'met' if o['iwae_gain_nats'] >= 0.5 else 'NOT met'}.\n")
    b = result.get("free_bits")
    if b:
        lines.append(f"## Free bits on the 2048x2 model (latent 64, conditional prior), "
                     f"{b['epochs']} epochs each, lambda {b['lambda']}\n\n{b['test_images']} test "
                     f"images. Before: "
                     f"`{b['uptime_before']}`; after: `{b['uptime_after']}`.\n\n| run | active "
                     f"units (of 64) | test IWAE-{b['plain']['iwae_k']} NLL | test -ELBO | "
                     f"training seconds |\n|---|---|---|---|---|")
        for name in ("plain", "free_bits"):
            x = b[name]
            lines.append(f"| {name} | {x['active_units']} | {x['iwae_nll']:.3f} | "
                         f"{x['test_neg_elbo']:.3f} | {x['train_seconds']:.0f} |")
        more = b["free_bits"]["active_units"] > b["plain"]["active_units"]
        lines.append(f"\nFree bits cost {b['nll_cost_nats']:+.3f} nat; target: more active units "
                     f"({'met' if more else 'NOT met'}) at most 0.5 nat worse "
                     f"({'met' if b['nll_cost_nats'] <= 0.5 else 'NOT met'}).\n")
    for key in sorted(k for k in result if k.startswith("free_bits_lambdas")):
        b = result[key]
        p = b["plain"]
        lines.append(f"## Free bits on the 2048x2 model, smaller lambdas, {b['epochs']} epochs each"
                     f"\n\n{b['date']}, commit {b['commit']}, {b['test_images']} test images: "
                     f"`{b['command']}`. Before: `{b['uptime_before']}`; after: "
                     f"`{b['uptime_after']}`. Target: more active units than the plain run, at "
                     f"most 0.5 nat worse in NLL.\n\n| run | active units (of 64) | test "
                     f"IWAE-{p['iwae_k']} NLL | test -ELBO | NLL cost | target | training "
                     f"seconds |\n|---|---|---|---|---|---|---|\n"
                     f"| plain | {p['active_units']} | {p['iwae_nll']:.3f} | "
                     f"{p['test_neg_elbo']:.3f} | | | {p['train_seconds']:.0f} |")
        for x in sorted(b["runs"], key=lambda x: x["lambda"]):
            met = x["active_units"] > p["active_units"] and x["nll_cost_nats"] <= 0.5
            lines.append(f"| free bits, lambda {x['lambda']:g} | {x['active_units']} | "
                         f"{x['iwae_nll']:.3f} | {x['test_neg_elbo']:.3f} | "
                         f"{x['nll_cost_nats']:+.3f} nat | {'met' if met else 'NOT met'} | "
                         f"{x['train_seconds']:.0f} |")
        lines.append("")
    if result.get("notes"):  # remarks added by hand, kept across runs
        lines.append("\n\n".join(result["notes"]))
    with open(path + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--cvae", default=os.path.join(ROOT, "build", "cvae"))
    ap.add_argument("--budget", type=float, default=600)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--iwae", type=int, default=1000)
    ap.add_argument("--fb-epochs", type=int, default=3)
    ap.add_argument("--fb-lambda", type=float, default=0.25)
    ap.add_argument("--fb-lambdas", type=lambda s: [float(v) for v in s.split(",")],
                    default=[0.05, 0.1], help="free_bits_lambdas' lambdas, comma-separated")
    ap.add_argument("--fb-iwae", type=int, default=100)
    ap.add_argument("--stages", default="race,objectives,free_bits")
    ap.add_argument("--test-images", type=int, default=0,
                    help="evaluate on the first N test images (0: all 10,000)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the stages the results file already holds that this run leaves out")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "quality_race"))
    args = ap.parse_args()
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    result = {}
    if args.keep and os.path.exists(args.out + ".json"):
        with open(args.out + ".json") as f:
            result = json.load(f)
    command = "python3 bench/quality_race.py " + " ".join(sys.argv[1:])
    result.update({"date": datetime.date.today().isoformat(), "commit": commit,
                   "cpu": cpu_model()})
    result.setdefault("budget", args.budget)
    result.setdefault("commands", [result.pop("command")] if "command" in result else [])
    result["commands"].append(command)
    stages = {"race": race, "objectives": objectives, "free_bits": free_bits,
              "free_bits_lambdas": free_bits_lambdas}
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        binarized_data(args.data, data, args.test_images)
        for name in args.stages.split(","):
            print(f"quality_race: {name} ({uptime()})", flush=True)
            # a sweep at another length than the first one's 2 epochs is kept beside it
            key = name if name != "free_bits_lambdas" or args.fb_epochs == 2 else \
                f"{name}_{args.fb_epochs:03d}_epochs"
            result[key] = stages[name](args, data, tmp)
            result[key].update({"command": command, "date": result["date"], "commit": commit})
            result[key]["test_images"] = args.test_images or 10000
            write_report(args.out, result)
            print(json.dumps(result[key]), flush=True)


if __name__ == "__main__":
    main()
