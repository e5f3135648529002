#!/usr/bin/python3
"""Checks a model taken elsewhere against cvae itself: `cvae encode` and `cvae decode`
against PyTorch (examples/torch_cvae.py on `cvae export --format safetensors`) and ONNX
Runtime (npm's onnxruntime-node under node, on `cvae export --format onnx`, the files
passed by python3-onnx's checker first). Every output must agree with cvae's within
TOLERANCE on the same inputs.

Two small models are trained for it: grey images of class labels with the standard prior
and the Bernoulli likelihood, and RGB float images of condition vectors with two hidden
layers, the learned prior and the Gaussian likelihood. Inputs are fresh random draws each
run (the seed is printed; CVAE_TEST_SEED replays one), and N is odd and above the decoding
block of 256 rows, so the batched paths and the dynamic batch dimension are exercised.

Needs CVAE_BIN and CVAE_SOURCE_ROOT (meson test sets them), /usr/bin/python3 with numpy,
torch (python3-torch) and onnx (python3-onnx), and node with onnxruntime-node installed in
the repository (the README's test command installs all of them): a missing one fails the
test, never skips it.
"""
import hashlib
import re
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

SOURCE = os.environ["CVAE_SOURCE_ROOT"]
CVAE_BIN = os.environ["CVAE_BIN"]
sys.path.insert(0, os.path.join(SOURCE, "examples"))

import onnx  # noqa: E402  (python3-onnx)
import torch  # noqa: E402  (python3-torch)
from torch_cvae import CVAE  # noqa: E402

# The bound. Both sides compute in float32 from the same float32 weights; they
# differ only in summation order (OpenBLAS, PyTorch's and ONNX Runtime's GEMMs, and cvae's
# separate condition term against one GEMM over [x, c]): about sqrt(n) * 2^-24 * sum|a b|
# for a dot product of n terms, a few 1e-7 at these sizes.
TOLERANCE = 1e-5


def run(args, **kw):
    p = subprocess.run(args, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        sys.exit(f"FAIL: {' '.join(args)} exited {p.returncode}\n{p.stdout}{p.stderr}")
    return p.stdout


def cvae(*args):
    return run([CVAE_BIN, *args, "--device", "cpu"] if args[0] in ("train", "encode", "decode")
               else [CVAE_BIN, *args])


def close(what, got, ref):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    if got.shape != ref.shape:
        sys.exit(f"FAIL: {what}: shape {got.shape}, expected {ref.shape}")
    err = float(np.max(np.abs(got - ref)))
    print(f"{what}: max |difference| {err:.3g} over {ref.size} values")
    if not err <= TOLERANCE:
        sys.exit(f"FAIL: {what} differs by {err:.3g} (tolerance {TOLERANCE})")


def write_data(folder, rng, case):
    """A small data set the model can learn something from: a class or condition shifts
    the brightness of a band of rows."""
    os.makedirs(folder)
    h, w, ch = case["shape"]
    for split, n in (("train", 300), ("test", 301)):
        if case["condition"] == "labels":
            labels = rng.integers(0, case["k"], n)
            bright = labels / case["k"]
            np.save(f"{folder}/{split}_labels.npy", labels.astype(np.uint8))
        else:
            cond = rng.normal(size=(n, case["k"])).astype(np.float32)
            bright = 1 / (1 + np.exp(-cond[:, 0]))
            np.save(f"{folder}/{split}_conditions.npy", cond)
        x = rng.uniform(0, 0.3, size=(n, h, w, ch))
        x[:, : h // 2] += 0.6 * bright[:, None, None, None]
        x = np.clip(x, 0, 1)
        if case["float"]:
            np.save(f"{folder}/{split}_images.npy", x.astype(np.float32))
        else:
            np.save(f"{folder}/{split}_images.npy", np.round(255 * x).astype(np.uint8)[..., 0])


def test_inputs(folder, case, model):
    """The test images as the models take them, x (N, D) in [0, 1], and their condition
    rows c (N, K)."""
    x = np.load(f"{folder}/test_images.npy")
    x = (x.astype(np.float32) / 255 if x.dtype == np.uint8 else x).reshape(len(x), -1)
    if case["condition"] == "labels":
        labels = np.load(f"{folder}/test_labels.npy")
        return x, model.condition(labels).numpy()
    return x, np.load(f"{folder}/test_conditions.npy")


def check_state(model, path, ckpt, case):
    """PyTorch's names and shapes, and the configuration in the metadata."""
    h, w, ch = case["shape"]
    d, k, lat, hidden = h * w * ch, case["k"], case["latent"], case["hidden"]
    want = {}
    for i, (a, b) in enumerate(zip([d + k] + hidden, hidden)):
        want[f"enc.{i}.weight"], want[f"enc.{i}.bias"] = (b, a), (b,)
    want["head.weight"], want["head.bias"] = (2 * lat, hidden[-1]), (2 * lat,)
    rev = hidden[::-1]
    for i, (a, b) in enumerate(zip([lat + k] + rev, rev)):
        want[f"dec.{i}.weight"], want[f"dec.{i}.bias"] = (b, a), (b,)
    want["out.weight"], want["out.bias"] = (d, hidden[0]), (d,)
    if case["prior"] == "conditional":
        want["prior_mean.weight"] = want["prior_logvar.weight"] = (lat, k)
    got = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    if got != want:
        sys.exit(f"FAIL: {path}: tensors {got}, expected {want}")
    config = model.config
    sha = hashlib.sha256(open(ckpt, "rb").read()).hexdigest()
    expect = {"checkpoint_sha256": sha, "height": h, "width": w, "channels": ch,
              "hidden": hidden, "latent": lat, "condition": case["condition"],
              "condition_width": k, "prior": case["prior"], "likelihood": case["likelihood"],
              "class_names": case["class_names"]}
    for key, value in expect.items():
        if config.get(key) != value:
            sys.exit(f"FAIL: metadata {key} is {config.get(key)!r}, expected {value!r}")
    check_sigma(config, ckpt, case)


def check_sigma(config, ckpt, case):
    """A learned sigma is exported as the value training reached, which cvae info prints."""
    learned = "learned" in case["flags"]
    if config.get("sigma_learned") is not learned:
        sys.exit(f"FAIL: metadata sigma_learned is {config.get('sigma_learned')!r}")
    if case["likelihood"] != "gaussian":
        if config.get("sigma") is not None:
            sys.exit(f"FAIL: a Bernoulli model's metadata sigma is {config.get('sigma')!r}")
        return
    if not learned:
        return
    m = re.search(r"sigma learned: ([0-9.eE+-]+) now", cvae("info", "--model", ckpt))
    if not m or abs(config["sigma"] - float(m.group(1))) > 1e-5 * float(m.group(1)):
        sys.exit(f"FAIL: metadata sigma {config.get('sigma')!r}, cvae info says "
                 f"{m.group(1) if m else 'nothing'}")


def check_onnx(folder, names, config):
    for name, inputs, outputs in names:
        m = onnx.load(f"{folder}/{name}.onnx")
        onnx.checker.check_model(m, full_check=True)
        got_in = [(v.name, v.type.tensor_type.shape.dim[0].dim_param) for v in m.graph.input]
        got_out = [v.name for v in m.graph.output]
        if got_in != [(n, "N") for n in inputs] or got_out != outputs:
            sys.exit(f"FAIL: {name}.onnx: inputs {got_in}, outputs {got_out}")
        if json.loads({p.key: p.value for p in m.metadata_props}["cvae"]) != config:
            sys.exit(f"FAIL: {name}.onnx: its configuration is not the safetensors file's")
    print(f"onnx.checker: {', '.join(n[0] for n in names)} valid (full check)")


def ort(work, model, feeds, outputs):
    """Runs model in ONNX Runtime on feeds (name -> array); returns its outputs."""
    args = ["node", os.path.join(SOURCE, "tests", "onnx_run.js"), model]
    for name, value in feeds.items():
        np.save(f"{work}/ort_in_{name}.npy", np.ascontiguousarray(value, np.float32))
        args.append(f"{name}={work}/ort_in_{name}.npy")
    args.append("--")
    args += [f"{name}={work}/ort_out_{name}.npy" for name in outputs]
    run(args, cwd=SOURCE)
    return [np.load(f"{work}/ort_out_{name}.npy") for name in outputs]


def check_case(work, case, seed):
    rng = np.random.default_rng(seed)
    tag = case["name"]
    data, run_dir = f"{work}/data", f"{work}/run"
    write_data(data, rng, case)
    cvae("train", "--data", data, "--out", run_dir, "--epochs", "2", "--batch", "64",
         "--hidden", ",".join(map(str, case["hidden"])), "--latent", str(case["latent"]),
         *case["flags"])
    ckpt = f"{run_dir}/model.ckpt"
    cvae("encode", "--model", ckpt, "--data", data, "--out", f"{work}/enc.npy", "--batch", "100")
    enc = np.load(f"{work}/enc.npy")
    lat = case["latent"]
    # latents: the test posteriors' means and fresh prior draws, with their conditions
    n = len(enc)
    z = np.concatenate([enc[:, :lat], rng.normal(size=(n, lat))]).astype(np.float32)
    np.save(f"{work}/z.npy", z)
    if case["condition"] == "labels":
        labels = np.concatenate([np.load(f"{data}/test_labels.npy")] * 2)
        np.save(f"{work}/zc.npy", labels)
        cond_flag = "--labels"
    else:
        np.save(f"{work}/zc.npy", np.concatenate([np.load(f"{data}/test_conditions.npy")] * 2))
        cond_flag = "--conditions"
    cvae("decode", "--model", ckpt, "--z", f"{work}/z.npy", cond_flag, f"{work}/zc.npy",
         "--out", f"{work}/dec")
    decoded = np.load(f"{work}/dec/decoded.npy").reshape(len(z), -1)

    st = f"{work}/model.safetensors"
    names = ["--class-names", ",".join(case["class_names"])] if case["class_names"] else []
    cvae("export", "--model", ckpt, "--format", "safetensors", "--out", st, *names)
    cvae("export", "--model", ckpt, "--format", "onnx", "--out", f"{work}/onnx", *names)
    model = CVAE.load(st)
    check_state(model, st, ckpt, case)
    x, c = test_inputs(data, case, model)
    zc = np.concatenate([c, c])
    with torch.no_grad():
        mean, logvar = model.encode(torch.from_numpy(x), torch.from_numpy(c))
        close(f"{tag}: PyTorch encode vs cvae encode", np.hstack([mean, logvar]), enc)
        close(f"{tag}: PyTorch decode vs cvae decode",
              model.decode(torch.from_numpy(z), torch.from_numpy(zc)), decoded)

    names = [("encoder", ["x", "c"], ["mean", "logvar"]), ("decoder", ["z", "c"], ["x_mean"])]
    if case["prior"] == "conditional":
        names.append(("prior", ["c"], ["prior_mean", "prior_logvar"]))
    check_onnx(f"{work}/onnx", names, model.config)
    mean, logvar = ort(work, f"{work}/onnx/encoder.onnx", {"x": x, "c": c}, ["mean", "logvar"])
    close(f"{tag}: ONNX Runtime encoder vs cvae encode", np.hstack([mean, logvar]), enc)
    (x_mean,) = ort(work, f"{work}/onnx/decoder.onnx", {"z": z, "c": zc}, ["x_mean"])
    close(f"{tag}: ONNX Runtime decoder vs cvae decode", x_mean, decoded)
    (one,) = ort(work, f"{work}/onnx/decoder.onnx", {"z": z[:1], "c": zc[:1]}, ["x_mean"])
    close(f"{tag}: ONNX Runtime decoder, a batch of 1", one, decoded[:1])
    if case["prior"] == "conditional":
        pm, pl = ort(work, f"{work}/onnx/prior.onnx", {"c": c}, ["prior_mean", "prior_logvar"])
        with torch.no_grad():
            tm, tl = model.prior(torch.from_numpy(c))
        close(f"{tag}: ONNX Runtime prior vs PyTorch prior", np.hstack([pm, pl]),
              np.hstack([tm, tl]))


CASES = [
    {"name": "labels", "shape": (6, 5, 1), "float": False, "condition": "labels", "k": 4,
     "hidden": [24], "latent": 3, "prior": "standard", "likelihood": "bernoulli", "flags": [],
     "class_names": ["T-shirt/top", 'a "quoted" \\ name', "zwei", "drei"]},
    {"name": "vectors", "shape": (4, 3, 3), "float": True, "condition": "vectors", "k": 3,
     "hidden": [20, 12], "latent": 5, "prior": "conditional", "likelihood": "gaussian",
     "flags": ["--prior", "conditional", "--likelihood", "gaussian", "--sigma", "learned"],
     "class_names": None},
]


def main():
    seed = int(os.environ.get("CVAE_TEST_SEED", int.from_bytes(os.urandom(4), "little")))
    print(f"seed {seed} (CVAE_TEST_SEED={seed} replays it)")
    for i, case in enumerate(CASES):
        with tempfile.TemporaryDirectory() as work:
            check_case(work, case, seed + i)
    print("PASS")


if __name__ == "__main__":
    main()
