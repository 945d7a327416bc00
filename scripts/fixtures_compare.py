#!/usr/bin/env python3
"""scipy reference values for `cargo xtask compare` on per-user CSVs.

Writes xtask/tests/fixtures/compare/{large,small}_{a,b}.csv in the layout of `cargo xtask eval --per-user`
(user,rank,HR@k,NDCG@k,MRR@k,...,MRR; rows deliberately not sorted by user) and scipy.json with, per case
and metric: the means, the mean difference a - b, its 95% CI, and the p-values of scipy.stats.ttest_rel
and scipy.stats.wilcoxon (defaults: zero_method='wilcox', correction=False, method='auto').
Read by the tests in xtask/src/compare.rs.

Run from the repository root:  python3 scripts/fixtures_compare.py   (scipy >= 1.11)
"""
import json
import math
import os

import numpy as np
import scipy
from scipy import stats

OUT = os.path.join(os.path.dirname(__file__), "..", "xtask", "tests", "fixtures", "compare")
CUTOFFS = [5, 10, 20]


def metric(name, rank):
    if name == "mrr":
        return 1.0 / (rank + 1)
    kind, k = name.split("@")
    k = int(k)
    if rank >= k:
        return 0.0
    return {"ndcg": 1.0 / math.log2(rank + 2), "hr": 1.0, "mrr": 1.0 / (rank + 1)}[kind]


def write_csv(path, users, ranks):
    cols = [f"{m}@{k}" for k in CUTOFFS for m in ("HR", "NDCG", "MRR")] + ["MRR"]
    with open(path, "w") as f:
        f.write("user,rank," + ",".join(cols) + "\n")
        for u, r in zip(users, ranks):
            vals = [metric(c.lower(), r) for c in cols]
            f.write(f"{int(u)},{int(r)}," + ",".join(repr(float(v)) for v in vals) + "\n")


rng = np.random.default_rng(5)
cases = {
    # 80 users: many zero differences (both ranks >= 10) and ties: the normal approximation.
    "large": 80,
    # 11 users: scipy's auto picks the exact / permutation distribution.
    "small": 11,
}
ref = {"scipy": scipy.__version__}
os.makedirs(OUT, exist_ok=True)
for name, n in cases.items():
    users = np.arange(1, n + 1)
    ra = rng.geometric(0.12, size=n) - 1
    rb = rng.geometric(0.08, size=n) - 1
    order_a = rng.permutation(n)
    order_b = rng.permutation(n)
    write_csv(os.path.join(OUT, f"{name}_a.csv"), users[order_a], ra[order_a])
    write_csv(os.path.join(OUT, f"{name}_b.csv"), users[order_b], rb[order_b])
    ref[name] = {}
    for m in ["ndcg@10", "hr@10", "mrr"]:
        a = np.array([metric(m, r) for r in ra])
        b = np.array([metric(m, r) for r in rb])
        t = stats.ttest_rel(a, b)
        ci = t.confidence_interval(0.95)
        w = stats.wilcoxon(a, b)
        ref[name][m] = {
            "mean_a": float(a.mean()),
            "mean_b": float(b.mean()),
            "mean_diff": float((a - b).mean()),
            "ci95": [float(ci.low), float(ci.high)],
            "t": float(t.statistic),
            "t_p": float(t.pvalue),
            "wilcoxon_statistic": float(w.statistic),
            "wilcoxon_p": float(w.pvalue),
        }
with open(os.path.join(OUT, "scipy.json"), "w") as f:
    json.dump(ref, f, indent=1)
print(json.dumps(ref, indent=1))
