#!/usr/bin/env python3
"""PyTorch reference fixture for seqrec-models' SASRec (whole network, both losses, step 0).

The forward is SASRec.pytorch's `log2feats` + `forward` (pmixer/SASRec.pytorch, model.py) written out in
float64 with seqrec's parameter names, with one deliberate difference that seqrec documents: padded keys
are masked in the attention (SASRec.pytorch passes only the causal mask, so real queries also attend to
the zeroed padded positions). The full-softmax loss ("SASRec+") masks the padding column.

Writes crates/seqrec-models/tests/fixtures/sasrec.json: {"name": {"shape": [..], "data": [..]}} with the
parameters ("param.<name>"), the batch ("batch.inputs", ...), the losses ("loss.bce", "loss.ce") and
every gradient ("grad.bce.<name>", "grad.ce.<name>"), and the evaluation scores of the three histories
("scores", `[3, n_items + 1]`). Read by crates/seqrec-models/tests/sasrec.rs.

Run from the repository root:  python3 scripts/fixtures_sasrec.py
"""
import json
import math
import os

import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "seqrec-models", "tests", "fixtures")
N_ITEMS, D, HEADS, BLOCKS, L = 7, 8, 2, 2, 6
EPS = 1e-8
L2_EMB = 0.01
INPUTS = [0, 0, 1, 2, 3, 4, 5, 6, 7, 1, 2, 3, 0, 0, 0, 0, 0, 6]
TARGETS = [0, 0, 2, 3, 4, 5, 6, 7, 1, 2, 3, 4, 0, 0, 0, 0, 0, 7]
NEGATIVES = [0, 0, 6, 7, 6, 1, 2, 4, 5, 6, 7, 5, 0, 0, 0, 0, 0, 3]

torch.manual_seed(20231)
dt = torch.float64


def rnd(*shape, scale=0.4, base=0.0):
    return (base + scale * torch.randn(*shape, dtype=dt)).requires_grad_(True)


params = {}
item = 0.5 * torch.randn(N_ITEMS + 1, D, dtype=dt)
item[0] = 0.0
params["item_emb.weight"] = item.requires_grad_(True)
params["pos_emb.weight"] = rnd(L, D, scale=0.5)
for i in range(BLOCKS):
    p = f"encoder.layers.{i}."
    params[p + "self_attn.in_proj_weight"] = rnd(3 * D, D)
    params[p + "self_attn.in_proj_bias"] = rnd(3 * D, scale=0.1)
    params[p + "self_attn.out_proj.weight"] = rnd(D, D)
    params[p + "self_attn.out_proj.bias"] = rnd(D, scale=0.1)
    params[p + "linear1.weight"] = rnd(D, D)
    params[p + "linear1.bias"] = rnd(D, scale=0.1)
    params[p + "linear2.weight"] = rnd(D, D)
    params[p + "linear2.bias"] = rnd(D, scale=0.1)
    params[p + "norm1.weight"] = rnd(D, scale=0.1, base=1.0)
    params[p + "norm1.bias"] = rnd(D, scale=0.1)
    params[p + "norm2.weight"] = rnd(D, scale=0.1, base=1.0)
    params[p + "norm2.bias"] = rnd(D, scale=0.1)
params["encoder.norm.weight"] = rnd(D, scale=0.1, base=1.0)
params["encoder.norm.bias"] = rnd(D, scale=0.1)

ids = torch.tensor(INPUTS).reshape(-1, L)
pos = torch.tensor(TARGETS).reshape(-1, L)
neg = torch.tensor(NEGATIVES).reshape(-1, L)


def ln(x, w, b):
    return F.layer_norm(x, (D,), w, b, eps=EPS)


def mha(q_in, kv_in, p, keep):
    B = q_in.shape[0]
    w, bias = p["self_attn.in_proj_weight"], p["self_attn.in_proj_bias"]
    q = q_in @ w[:D].T + bias[:D]
    k = kv_in @ w[D:2 * D].T + bias[D:2 * D]
    v = kv_in @ w[2 * D:].T + bias[2 * D:]
    dh = D // HEADS
    split = lambda t: t.reshape(B, L, HEADS, dh).transpose(1, 2)
    q, k, v = split(q), split(k), split(v)
    s = q @ k.transpose(-1, -2) / math.sqrt(dh)
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    allowed = causal[None, None] & keep[:, None, None, :]
    # A large finite negative keeps fully masked (padded) query rows finite; their outputs are zeroed.
    s = s.masked_fill(~allowed, -1e30)
    a = torch.softmax(s, -1) @ v
    a = a.transpose(1, 2).reshape(B, L, D)
    return a @ p["self_attn.out_proj.weight"].T + p["self_attn.out_proj.bias"]


def log2feats(P):
    keep = ids != 0
    seqs = P["item_emb.weight"][ids] * D ** 0.5
    seqs = seqs + P["pos_emb.weight"][None] * keep[..., None]  # poss *= (log_seqs != 0)
    seqs = seqs * keep[..., None]
    for i in range(BLOCKS):
        p = {k[len(f"encoder.layers.{i}."):]: v for k, v in P.items() if k.startswith(f"encoder.layers.{i}.")}
        Q = ln(seqs, p["norm1.weight"], p["norm1.bias"])
        seqs = Q + mha(Q, seqs, p, keep)
        seqs = ln(seqs, p["norm2.weight"], p["norm2.bias"])
        ff = torch.relu(seqs @ p["linear1.weight"].T + p["linear1.bias"]) @ p["linear2.weight"].T + p["linear2.bias"]
        seqs = (seqs + ff) * keep[..., None]
    return ln(seqs, P["encoder.norm.weight"], P["encoder.norm.bias"])


def loss_bce(P):
    h = log2feats(P)
    E = P["item_emb.weight"]
    pl = (h * E[pos]).sum(-1)
    nl = (h * E[neg]).sum(-1)
    m = pos != 0
    loss = F.binary_cross_entropy_with_logits(pl[m], torch.ones_like(pl[m]))
    loss = loss + F.binary_cross_entropy_with_logits(nl[m], torch.zeros_like(nl[m]))
    return loss + L2_EMB * torch.norm(E)


def loss_ce(P):
    h = log2feats(P)
    logits = h @ P["item_emb.weight"].T
    logits = logits.masked_fill(torch.arange(N_ITEMS + 1) == 0, float("-inf"))
    return F.cross_entropy(logits.reshape(-1, N_ITEMS + 1), pos.reshape(-1), ignore_index=0)


def t2j(t):
    t = t.detach().to(torch.float64)
    return {"shape": list(t.shape), "data": [float(v) for v in t.reshape(-1).tolist()]}


out = {f"param.{k}": t2j(v) for k, v in params.items()}
out["batch.inputs"] = t2j(torch.tensor(INPUTS, dtype=dt))
out["batch.targets"] = t2j(torch.tensor(TARGETS, dtype=dt))
out["batch.negatives"] = t2j(torch.tensor(NEGATIVES, dtype=dt))
out["cfg.l2_emb"] = t2j(torch.tensor([L2_EMB], dtype=dt))
for name, fn in [("bce", loss_bce), ("ce", loss_ce)]:
    for v in params.values():
        v.grad = None
    loss = fn(params)
    loss.backward()
    out[f"loss.{name}"] = t2j(loss.reshape(1))
    for k, v in params.items():
        g = v.grad.clone()
        if k == "item_emb.weight":
            g[0] = 0.0  # padding_idx=0: the padding row gets no gradient
        out[f"grad.{name}.{k}"] = t2j(g)
with torch.no_grad():
    # Model.score: the last position's hidden state against every item (column 0 included).
    out["scores"] = t2j(log2feats(params)[:, -1] @ params["item_emb.weight"].T)
os.makedirs(OUT, exist_ok=True)
path = os.path.join(OUT, "sasrec.json")
with open(path, "w") as f:
    json.dump(out, f)
print(f"{path}: {os.path.getsize(path)} bytes, loss bce {out['loss.bce']['data']}, ce {out['loss.ce']['data']}")
