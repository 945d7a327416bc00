#!/usr/bin/env python3
"""Reference fixture of EASE (Steck 2019) for seqrec-models, computed with numpy in float64.

Writes crates/seqrec-models/tests/fixtures/ease.json: a small set of user sequences (dense item ids
1..n, repeats allowed: X is binary), lambda, the weights B (n x n, without the padding row/column) and
the scores of a few histories. Read by crates/seqrec-models/tests/ease.rs.

The closed form, exactly as in the paper's listing:
    G = X.T @ X; G[diag] += lambda; P = inv(G); B = P / (-diag(P)); B[diag] = 0
Run from the repository root:  python3 scripts/fixtures_ease.py
"""
import json
import os

import numpy as np

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "seqrec-models", "tests", "fixtures")

rng = np.random.default_rng(20261125)
n_items, n_users, lam = 9, 14, 3.5
sequences = []
for u in range(n_users):
    length = int(rng.integers(3, 9))
    sequences.append([int(i) for i in rng.integers(1, n_items + 1, size=length)])

X = np.zeros((n_users, n_items))
for u, s in enumerate(sequences):
    for i in s:
        X[u, i - 1] = 1.0
G = X.T @ X
G[np.diag_indices(n_items)] += lam
P = np.linalg.inv(G)
B = P / (-np.diag(P))
B[np.diag_indices(n_items)] = 0.0

histories = [[1], [2, 5, 2], [9, 3, 4, 7], list(range(1, n_items + 1))]
scores = []
for h in histories:
    x = np.zeros(n_items)
    for i in h:
        x[i - 1] = 1.0
    scores.append((x @ B).tolist())

os.makedirs(OUT, exist_ok=True)
with open(os.path.join(OUT, "ease.json"), "w") as f:
    json.dump(
        {
            "n_items": n_items,
            "lambda": lam,
            "sequences": sequences,
            "B": B.tolist(),
            "histories": histories,
            "scores": scores,
        },
        f,
    )
print("wrote", os.path.join(OUT, "ease.json"))
