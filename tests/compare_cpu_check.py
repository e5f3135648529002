#!/usr/bin/python3
"""Checks bench/compare_cpu.py's agreement verdict on the test -ELBO of cvae and the peer.
With one seed each there is no spread: the difference of the two means was compared with
a spread of 0 and called "OUTSIDE the larger spread" (agree_within_spread false) whatever
it was; it is now no verdict (None). With several seeds, the verdict is the difference
against the larger spread."""
import os
import random
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "bench"))
from compare_cpu import agreement  # noqa: E402

rng = random.Random()
failures = []

one = {"cvae": [rng.uniform(200, 300)], "peer": [rng.uniform(200, 300)]}
a = agreement(one)
if a["agree_within_spread"] is not None:
    failures.append(f"one seed each: a verdict ({a['agree_within_spread']}) without a spread")
if abs(a["mean_difference"] - abs(one["cvae"][0] - one["peer"][0])) > 1e-9:
    failures.append(f"one seed each: difference {a['mean_difference']}")

base = rng.uniform(200, 300)
near = {"cvae": [base, base + 1.0, base + 0.5], "peer": [base + 0.2, base + 0.4, base + 0.3]}
far = {"cvae": [base, base + 0.1, base + 0.05], "peer": [base + 5, base + 5.1, base + 5.05]}
for name, q, want in (("near", near, True), ("far", far, False)):
    a = agreement(q)
    if a["agree_within_spread"] is not want:
        failures.append(f"{name}: verdict {a['agree_within_spread']}, want {want} ({a})")
    spread = {k: max(v) - min(v) for k, v in q.items()}
    if any(abs(a["test_neg_elbo_spread"][k] - spread[k]) > 1e-9 for k in q):
        failures.append(f"{name}: spreads {a['test_neg_elbo_spread']}, want {spread}")

for f in failures:
    print("compare_cpu_check:", f, file=sys.stderr)
sys.exit(1 if failures else 0)
