#!/usr/bin/env python3
"""cvae against the PyTorch peer (bench/torch_peer.py) on one GPU, in one run.

Training steps, for each model and precision:
  models:      default (784-400-20, batch 128) and large (hidden 4096,4096, latent 256,
               batch 4096)
  precisions:  fp32, tf32, bf16, and tf32x3 when `cvae train --help` lists it (the peer has
               no tf32x3; cvae's tf32x3 is set against PyTorch's fp32, the accuracy it
               aims for)
  cvae:        `cvae bench --json`: the median step time of --steps steps as cvae train
               runs them (the replayed CUDA graph on a GPU)
  peer:        torch_peer.py --bench-steps in eager, torch.compile and CUDA-graph modes:
               the median step time of --steps steps after --warmup (CUDA events)
  ratio:       cvae's samples/s over the best peer mode's at that precision.
IWAE-K on the test set (default K = 1000): both train the default model for --iwae-epochs
epochs in fp32 (seed 0), then `cvae eval --iwae K` against the peer's --iwae K. For cvae
the wall time of the whole command with and without --iwae (the difference is the IWAE
itself; the rest is start-up, loading and the ELBO pass), for the peer the time of its
IWAE evaluation alone; medians of --repeats runs.

Everything runs on the same device in this one invocation. The report goes to
bench/results/gpu-<device>-<date>.md and .json: the command, the device, driver, CUDA and
PyTorch versions, every median, and the ratios. A mode or precision that fails is
reported with its error line and the rest goes on; a device that is not there stops the
script at once with one line (exit 2).

--device cpu runs the same script small (the default model only, fp32 and bf16, few steps,
IWAE-20 after one epoch, one thread each) so that it can be tested without a GPU; its report
is labelled CPU, and its figures say nothing about a GPU.

usage: python3 bench/gpu_compare.py [--device cuda|cpu] [--data DIR] [--cvae PATH]
                                    [--python PY] [--steps N] [--iwae K] [--out PREFIX]
On the GPU machine with a packed build (README, "Compare with PyTorch on a GPU"):
  source .gpu/env.sh && python3 bench/gpu_compare.py --cvae $B/cvae --data $D
"""
import argparse
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER = os.path.join(ROOT, "bench", "torch_peer.py")
PRECISION_NAMES = ("fp32", "tf32x3", "tf32", "bf16")  # tf32x3 before tf32 for the regex
MODELS = {
    "default": {"hidden": "400", "latent": 20, "batch": 128},
    "large": {"hidden": "4096,4096", "latent": 256, "batch": 4096},
}
MODES = ("eager", "compile", "graph")


def fail(msg):
    print(f"gpu_compare.py: {msg}", file=sys.stderr)
    sys.exit(2)


def last_line(text):
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def run(cmd, env, timeout):
    """(exit status, stdout, stderr, wall seconds); a timeout is status 124."""
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stdout, p.stderr, time.perf_counter() - t0
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return 124, out, f"timed out after {timeout} s", time.perf_counter() - t0


def json_tail(stdout):
    """The last line of stdout that is a JSON object."""
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no JSON line in the output")


def help_precisions(cvae, command, env):
    """The precisions `cvae COMMAND --help` lists under --precision."""
    rc, out, _, _ = run([cvae, command, "--help"], env, 60)
    if rc != 0:
        return []
    m = re.search(r"^\s*--precision.*?(?=^\s*--|^\s*$|\Z)", out, re.S | re.M)
    if not m:
        return []
    found = re.findall(r"\b(" + "|".join(PRECISION_NAMES) + r")\b", m.group(0))
    return [p for p in ("fp32", "tf32", "bf16", "tf32x3") if p in found]


def probe_torch(python, device, env):
    code = ("import json, torch; d = {'torch': torch.__version__, 'cuda': torch.version.cuda, "
            "'available': torch.cuda.is_available(), 'compile': hasattr(torch, 'compile')}\n"
            "if d['available']: d['name'] = torch.cuda.get_device_name(0)\n"
            "print(json.dumps(d))")
    rc, out, err, _ = run([python, "-c", code], env, 300)
    if rc != 0:
        fail(f"{python} cannot import torch: {last_line(err)}")
    info = json.loads(last_line(out))
    if device == "cuda" and not info["available"]:
        fail(f"--device cuda: no CUDA GPU is available here (torch {info['torch']}: "
             f"torch.cuda.is_available() is False)")
    return info


def nvidia_driver():
    if shutil.which("nvidia-smi"):
        rc, out, _, _ = run(["nvidia-smi", "--query-gpu=name,driver_version",
                             "--format=csv,noheader"], None, 60)
        if rc == 0 and out.strip():
            name, driver = [x.strip() for x in out.splitlines()[0].split(",", 1)]
            return name, driver
    try:
        with open("/proc/driver/nvidia/version") as f:
            m = re.search(r"Kernel Module\s+(\S+)", f.read())
            return None, m.group(1) if m else None
    except OSError:
        return None, None


def nvcc_version():
    for nvcc in (shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if nvcc and os.path.exists(nvcc):
            rc, out, _, _ = run([nvcc, "--version"], None, 60)
            m = re.search(r"release (\S+),", out)
            if rc == 0 and m:
                return m.group(1)
    return None


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def slug(name):
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def cvae_bench(args, env, model, precision):
    m = MODELS[model]
    cmd = [args.cvae, "bench", "--json", "--device", args.device, "--hidden", m["hidden"],
           "--latent", str(m["latent"]), "--batch", str(m["batch"]), "--precision", precision,
           "--steps", str(args.steps)]
    rc, out, err, wall = run(cmd, env, args.timeout)
    res = {"command": " ".join(shlex.quote(c) for c in cmd), "wall_s": wall}
    if rc != 0:
        if rc == 2 and ("no usable CUDA device" in err or "is unusable" in err):
            fail(f"cvae cannot use the {args.device} device: {last_line(err)}")
        res["error"] = last_line(err) or f"exit status {rc}"
        return res
    j = json.loads(out)
    res.update(step_ms=j["step_ms"], samples_per_s=j["samples_per_s"],
               step_mode=j["step_mode"], device=j["device"],
               eager_step_ms=j.get("eager_step_ms"), ceilings=j.get("ceilings"))
    return res


def peer_bench(args, env, model, precision, mode):
    m = MODELS[model]
    cmd = [args.python, PEER, "--data", args.data, "--device", args.device, "--mode", mode,
           "--precision", precision, "--hidden", m["hidden"], "--latent", str(m["latent"]),
           "--batch", str(m["batch"]), "--bench-steps", str(args.steps),
           "--warmup", str(args.warmup), "--json"]
    if args.device == "cpu":
        cmd += ["--threads", str(args.threads)]
    rc, out, err, wall = run(cmd, env, args.timeout)
    res = {"command": " ".join(shlex.quote(c) for c in cmd), "wall_s": wall}
    if rc != 0:
        res["error"] = last_line(err) or f"exit status {rc}"
        return res
    b = json_tail(out)["bench"]
    res.update(step_ms=b["step_ms_median"], samples_per_s=b["samples_per_s"],
               step_ms_min=b["step_ms_min"], step_ms_max=b["step_ms_max"])
    return res


def iwae_compare(args, env, tmp, peer_mode):
    """Both train the default model, then IWAE-K on the test set, timed."""
    out = {"k": args.iwae, "epochs": args.iwae_epochs, "repeats": args.repeats}
    run_dir = os.path.join(tmp, "cvae-iwae")
    train = [args.cvae, "train", "--data", args.data, "--epochs", str(args.iwae_epochs),
             "--device", args.device, "--seed", "0", "--out", run_dir]
    rc, so, err, wall = run(train, env, args.timeout)
    out["cvae_train"] = {"command": " ".join(shlex.quote(c) for c in train), "wall_s": wall}
    if rc != 0:
        out["cvae"] = {"error": "training: " + (last_line(err) or f"exit status {rc}")}
    else:
        ckpt = os.path.join(run_dir, "model.ckpt")
        base = [args.cvae, "eval", "--model", ckpt, "--data", args.data, "--device",
                args.device, "--json"]
        with_iwae, without, nll, error = [], [], None, None
        for _ in range(args.repeats):
            rc, so, err, wall = run(base + ["--iwae", str(args.iwae)], env, args.timeout)
            if rc != 0:
                error = last_line(err) or f"exit status {rc}"
                break
            with_iwae.append(wall)
            nll = json.loads(so)["iwae_nll"]
            rc, so, err, wall = run(base, env, args.timeout)
            if rc != 0:
                error = last_line(err) or f"exit status {rc}"
                break
            without.append(wall)
        if error:
            out["cvae"] = {"error": error}
        else:
            w, wo = statistics.median(with_iwae), statistics.median(without)
            out["cvae"] = {"command": " ".join(shlex.quote(c) for c in base + ["--iwae",
                                                                                str(args.iwae)]),
                           "nll": nll, "wall_s_median": w, "wall_s_runs": with_iwae,
                           "wall_s_without_iwae_median": wo, "wall_s_without_iwae_runs": without,
                           "iwae_s": w - wo}
    cmd = [args.python, PEER, "--data", args.data, "--device", args.device, "--mode", peer_mode,
           "--epochs", str(args.iwae_epochs), "--iwae", str(args.iwae), "--iwae-repeats",
           str(args.repeats), "--json"]
    if args.device == "cpu":
        cmd += ["--threads", str(args.threads)]
    rc, so, err, wall = run(cmd, env, args.timeout)
    if rc != 0:
        out["peer"] = {"command": " ".join(cmd), "error": last_line(err) or f"exit {rc}"}
    else:
        j = json_tail(so)
        out["peer"] = {"command": " ".join(shlex.quote(c) for c in cmd), "mode": peer_mode,
                       "nll": j["iwae"]["nll"], "iwae_s": j["iwae"]["seconds"],
                       "iwae_s_runs": j["iwae"]["runs"],
                       "test_neg_elbo": j["epochs"][-1]["test_neg_elbo"] if j["epochs"] else None}
    c, p = out.get("cvae", {}), out.get("peer", {})
    if "iwae_s" in c and "iwae_s" in p and c["iwae_s"] > 0:
        out["peer_over_cvae_iwae_time"] = p["iwae_s"] / c["iwae_s"]
        out["peer_over_cvae_wall"] = p["iwae_s"] / c["wall_s_median"]
    return out


def ratios(entry):
    """cvae's samples/s over each peer mode's and over the best one's."""
    c = entry["cvae"]
    peers = {m: r for m, r in entry["peer"].items() if "samples_per_s" in r}
    if not peers:
        return
    best = max(peers, key=lambda m: peers[m]["samples_per_s"])
    entry["best_peer_mode"] = best
    if "samples_per_s" in c:
        entry["ratio_cvae_over_best_peer"] = c["samples_per_s"] / peers[best]["samples_per_s"]
        entry["ratio_cvae_over_mode"] = {m: c["samples_per_s"] / r["samples_per_s"]
                                         for m, r in peers.items()}


def fmt_run(r):
    if r is None:
        return "n/a"
    if "error" in r:
        return "failed: " + r["error"].replace("|", "/")[:90]
    ms = r["step_ms"]
    t = f"{ms * 1e3:.0f} us" if ms < 1 else f"{ms:.2f} ms"
    return f"{t} ({r['samples_per_s']:,.0f}/s)"


def write_report(res, path):
    dev = res["device"]
    cpu = dev["kind"] == "cpu"
    with open(path + ".json", "w") as f:
        json.dump(res, f, indent=2)
    with open(path + ".md", "w") as f:
        if cpu:
            f.write(f"# cvae vs PyTorch on the CPU: an example run of bench/gpu_compare.py\n\n"
                    "**CPU, not GPU figures.** This is the script's small CPU path (`--device "
                    "cpu`), run to test the script itself on a machine without a GPU. It says "
                    "nothing about GPU performance.\n\n")
        else:
            f.write(f"# cvae vs PyTorch on {dev['name']}\n\n")
        f.write(f"{res['date']}, commit {res['commit']}. Command: `{res['command']}`\n\n")
        f.write("| | |\n|---|---|\n")
        rows = [("device", dev["name"])]
        if not cpu:
            rows += [("driver", dev.get("driver")), ("CUDA (PyTorch's)", dev.get("torch_cuda")),
                     ("CUDA toolkit (nvcc)", dev.get("nvcc"))]
        rows += [("PyTorch", dev["torch"]), ("cvae", dev["cvae_version"]),
                ("cvae's device line", dev.get("cvae_device")),
                ("steps timed", f"{res['settings']['steps']} (after {res['settings']['warmup']} "
                                "warm-up steps for the peer)")]
        if cpu:
            rows.append(("threads", str(res["settings"]["threads"])))
        for k, v in rows:
            f.write(f"| {k} | {v if v is not None else 'n/a'} |\n")
        f.write("\nTime per training step, the median (samples/s in brackets); ratio: cvae's "
                "samples/s over the fastest PyTorch mode's at the same precision.\n")
        for model in res["settings"]["models"]:
            m = MODELS[model]
            f.write(f"\n## {model} model: hidden {m['hidden']}, latent {m['latent']}, batch "
                    f"{m['batch']}\n\n| precision | cvae | "
                    + " | ".join(f"PyTorch {x}" for x in res["settings"]["modes"])
                    + " | cvae / best PyTorch |\n|---|---|"
                    + "---|" * len(res["settings"]["modes"]) + "---|\n")
            for e in res["steps"]:
                if e["model"] != model:
                    continue
                ratio = e.get("ratio_cvae_over_best_peer")
                vs = e.get("peer_precision", e["precision"])
                text = f"{ratio:.2f}x vs {e['best_peer_mode']}" if ratio else "n/a"
                if vs != e["precision"]:
                    text += f" (PyTorch {vs})"
                f.write(f"| {e['precision']} | {fmt_run(e['cvae'])} | "
                        + " | ".join(fmt_run(e["peer"].get(x)) for x in res["settings"]["modes"])
                        + f" | {text} |\n")
        iw = res.get("iwae")
        if iw:
            c, p = iw.get("cvae", {}), iw.get("peer", {})
            f.write(f"\n## IWAE-{iw['k']} on the test set (default model, fp32, trained "
                    f"{iw['epochs']} epoch{'s' if iw['epochs'] != 1 else ''}, seed 0; "
                    f"median{'s' if iw['repeats'] != 1 else ''} of {iw['repeats']} "
                    f"run{'s' if iw['repeats'] != 1 else ''})\n\n"
                    "| | -log p(x\\|c) (nats) | IWAE time | whole command |\n|---|---|---|---|\n")
            if "error" in c:
                f.write(f"| cvae | failed: {c['error']} | | |\n")
            else:
                f.write(f"| cvae `eval --iwae {iw['k']}` | {c['nll']:.4f} | {c['iwae_s']:.3f} s "
                        f"(with minus without --iwae) | {c['wall_s_median']:.3f} s "
                        f"({c['wall_s_without_iwae_median']:.3f} s without --iwae) |\n")
            if "error" in p:
                f.write(f"| PyTorch | failed: {p['error']} | | |\n")
            else:
                f.write(f"| PyTorch ({p['mode']} training) `--iwae {iw['k']}` | {p['nll']:.4f} | "
                        f"{p['iwae_s']:.3f} s | (includes training) |\n")
            if "peer_over_cvae_iwae_time" in iw:
                f.write(f"\nPyTorch's IWAE time over cvae's: {iw['peer_over_cvae_iwae_time']:.2f}x "
                        f"(over cvae's whole command: {iw['peer_over_cvae_wall']:.2f}x). The two "
                        "estimates use different noise (Philox streams in cvae, torch.randn in "
                        "the peer) and different trainings of the same spec.\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--cvae", default=os.environ.get("CVAE_BIN",
                                                     os.path.join(ROOT, "build", "cvae")))
    ap.add_argument("--python", default=sys.executable, help="the Python that has torch")
    ap.add_argument("--models", help="default,large on cuda; default on cpu")
    ap.add_argument("--precisions", help="fp32,tf32,bf16[,tf32x3] on cuda; fp32,bf16 on cpu")
    ap.add_argument("--modes", help="peer modes: eager,compile,graph on cuda; eager,compile "
                                    "on cpu")
    ap.add_argument("--steps", type=int, help="timed steps (200 on cuda, 20 on cpu)")
    ap.add_argument("--warmup", type=int, help="the peer's untimed steps (20 on cuda, 3 on cpu)")
    ap.add_argument("--iwae", type=int, help="importance samples (1000 on cuda, 20 on cpu); "
                                             "0 skips the IWAE comparison")
    ap.add_argument("--iwae-epochs", type=int, help="training before the IWAE (10; 1 on cpu)")
    ap.add_argument("--repeats", type=int, help="IWAE evaluations (3 on cuda, 1 on cpu)")
    ap.add_argument("--threads", type=int, default=1, help="cpu: threads for both (default 1)")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds allowed for one run")
    ap.add_argument("--out", help="report path without .md/.json (default "
                                  "bench/results/gpu-<device>-<date>)")
    args = ap.parse_args()
    cpu = args.device == "cpu"
    pick = lambda value, gpu_default, cpu_default: value if value is not None else (
        cpu_default if cpu else gpu_default)
    args.steps = pick(args.steps, 200, 20)
    args.warmup = pick(args.warmup, 20, 3)
    args.iwae = pick(args.iwae, 1000, 20)
    args.iwae_epochs = pick(args.iwae_epochs, 10, 1)
    args.repeats = pick(args.repeats, 3, 1)
    models = pick(args.models, "default,large", "default").split(",")
    modes = pick(args.modes, ",".join(MODES), "eager,compile").split(",")
    for m in models:
        if m not in MODELS:
            fail(f"--models: unknown model '{m}' (default, large)")
    for m in modes:
        if m not in MODES:
            fail(f"--modes: unknown mode '{m}' (eager, compile, graph)")

    if not os.access(args.cvae, os.X_OK):
        fail(f"no cvae program at {args.cvae} (build it, or pass --cvae)")
    env = dict(os.environ)
    if cpu:
        env["OMP_NUM_THREADS"] = str(args.threads)
    rc, version, err, _ = run([args.cvae, "--version"], env, 60)
    if rc != 0:
        fail(f"{args.cvae} --version failed: {last_line(err)}")
    if not cpu and "CUDA backend: not built" in version:
        fail(f"--device cuda: {args.cvae} was built without the CUDA backend")
    torch_info = probe_torch(args.python, args.device, env)

    bench_precisions = help_precisions(args.cvae, "bench", env)
    train_precisions = help_precisions(args.cvae, "train", env)
    default_precisions = "fp32,tf32,bf16" + (",tf32x3" if "tf32x3" in train_precisions else "")
    precisions = pick(args.precisions, default_precisions, "fp32,bf16").split(",")

    dev = {"kind": args.device, "torch": torch_info["torch"], "torch_cuda": torch_info["cuda"],
           "cvae_version": version.splitlines()[0] if version else None}
    if cpu:
        dev["name"] = cpu_name()
    else:
        smi_name, driver = nvidia_driver()
        dev.update(name=torch_info.get("name") or smi_name, driver=driver, nvcc=nvcc_version())
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    if subprocess.run(["git", "-C", ROOT, "diff", "--quiet", "HEAD"]).returncode == 1:
        commit += " with uncommitted changes"
    date = datetime.date.today().isoformat()
    out = args.out or os.path.join(ROOT, "bench", "results",
                                   f"gpu-{'cpu' if cpu else slug(dev['name'])}-{date}")
    res = {"date": date, "commit": commit,
           "command": "python3 bench/gpu_compare.py " + " ".join(shlex.quote(a)
                                                                 for a in sys.argv[1:]),
           "device": dev,
           "settings": {"models": models, "precisions": precisions, "modes": modes,
                        "steps": args.steps, "warmup": args.warmup, "threads": args.threads,
                        "cvae_precisions": bench_precisions,
                        "cvae_train_precisions": train_precisions},
           "steps": []}
    print(f"device: {dev['name']} | torch {dev['torch']} | cvae precisions "
          f"{','.join(bench_precisions)} | report {out}.md", flush=True)

    peer_env = dict(env)
    for model in models:
        for precision in precisions:
            entry = {"model": model, "precision": precision, "peer": {}}
            if precision in bench_precisions:
                entry["cvae"] = cvae_bench(args, env, model, precision)
            else:
                entry["cvae"] = {"error": f"this cvae's bench does not list --precision "
                                          f"{precision}"}
            if "device" in entry["cvae"] and cpu and "OPENBLAS_CORETYPE" not in peer_env:
                # the peer's OpenBLAS gets the kernels cvae picked, as in compare_cpu.py
                m = re.search(r"OpenBLAS (\w+) kernels", entry["cvae"]["device"])
                if m:
                    peer_env["OPENBLAS_CORETYPE"] = m.group(1)
            if "device" in entry["cvae"]:
                dev.setdefault("cvae_device", entry["cvae"]["device"])
            # the peer has no tf32x3: cvae's is set against PyTorch's fp32
            peer_precision = "fp32" if precision == "tf32x3" else precision
            if peer_precision != precision:
                entry["peer_precision"] = peer_precision
                prior = next((e for e in res["steps"] if e["model"] == model and
                              e["precision"] == peer_precision), None)
            else:
                prior = None
            for mode in modes:
                entry["peer"][mode] = prior["peer"][mode] if prior else peer_bench(
                    args, peer_env, model, peer_precision, mode)
            ratios(entry)
            res["steps"].append(entry)
            print(f"{model:7s} {precision:6s} cvae {fmt_run(entry['cvae'])} | "
                  + " | ".join(f"{m} {fmt_run(entry['peer'][m])}" for m in modes)
                  + (f" | cvae/best {entry['ratio_cvae_over_best_peer']:.2f}x"
                     if "ratio_cvae_over_best_peer" in entry else ""), flush=True)

    if args.iwae > 0:
        fp32 = next((e for e in res["steps"] if e["model"] == "default" and
                     e["precision"] == "fp32"), None)
        fast = fp32.get("best_peer_mode", "eager") if fp32 else "eager"
        with tempfile.TemporaryDirectory() as tmp:
            res["iwae"] = iwae_compare(args, peer_env, tmp, fast)
        iw = res["iwae"]
        print(f"IWAE-{args.iwae}: cvae {iw.get('cvae')}\n           peer {iw.get('peer')}",
              flush=True)

    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    write_report(res, out)
    print(f"wrote {out}.md and {out}.json", flush=True)


if __name__ == "__main__":
    main()
