#!/usr/bin/env python3
"""PyTorch reference fixture for seqrec-models' LSTM + attention (`lstm_attn`), whole model, step 0.

The model of `crates/seqrec-models/src/lstm_attn.rs`, written out plainly in float64 with seqrec's
parameter names: item embedding (real items only, row i - 1 = item i), optional time-gap / position
embeddings fused by concatenation, addition or in the attention keys, `nn.LSTM(batch_first=True)` run
on the real (left-padded) part of each row only, additive attention scores, the causal pooling of every
prefix computed the slow way (a masked softmax per prefix), the MLP head on [pooled; last state], tied or
untied output with bias, and the mean cross-entropy over positions with a target. Dropout is off.

Writes crates/seqrec-models/tests/fixtures/lstm_attn.json: {"name": {"shape": [..], "data": [..]}} with,
per variant V, the parameters ("V.param.<name>"), the loss ("V.loss"), every gradient
("V.grad.<name>") and the scores of the last position of each row ("V.scores", `[3, n_items]`, padding
column left out). Read by the unit tests in crates/seqrec-models/src/lstm_attn.rs.

Run from the repository root:  python3 scripts/fixtures_lstm_attn.py
"""
import json
import os

import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "seqrec-models", "tests", "fixtures")
N_ITEMS, D, H, A, M, C, N_BUCKETS, MAX_POS, B, L = 7, 4, 3, 3, 5, 2, 5, 4, 3, 5
# Rows: fully padded, left-padded (3 real), full with one masked target (as the Rust unit tests).
INPUTS = [0, 0, 0, 0, 0, 0, 0, 3, 1, 7, 2, 4, 4, 6, 1]
TARGETS = [0, 0, 0, 0, 0, 0, 0, 1, 7, 2, 0, 4, 6, 1, 3]
BUCKETS = [0, 0, 0, 0, 0, 0, 0, 1, 4, 2, 1, 2, 3, 4, 4]
POSITIONS = [0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 1, 2, 3, 4, 4]
# (name, context fusion, LSTM layers, tied output)
VARIANTS = [
    ("none_l1_tied", "none", 1, True),
    ("concat_l1_tied", "concat", 1, True),
    ("add_l1_untied", "add", 1, False),
    ("attention_l2_tied", "attention", 2, True),
]
dt = torch.float64


def make_params(fusion, layers, tied):
    c = D if fusion == "add" else C
    d_in = D + 2 * C if fusion == "concat" else D
    key = H + 2 * C if fusion == "attention" else H
    r = lambda *s, scale=0.5: (scale * torch.randn(*s, dtype=dt)).requires_grad_(True)
    p = {"item_emb.weight": r(N_ITEMS, D)}
    if fusion != "none":
        p["time_emb.weight"] = r(N_BUCKETS - 1, c)
        p["pos_emb.weight"] = r(MAX_POS, c)
    for k in range(layers):
        inp = d_in if k == 0 else H
        p[f"lstm.weight_ih_l{k}"] = r(4 * H, inp)
        p[f"lstm.weight_hh_l{k}"] = r(4 * H, H)
        p[f"lstm.bias_ih_l{k}"] = r(4 * H, scale=0.2)
        p[f"lstm.bias_hh_l{k}"] = r(4 * H, scale=0.2)
    p["att.proj.weight"] = r(A, key)
    p["att.proj.bias"] = r(A, scale=0.2)
    p["att.score.weight"] = r(1, A, scale=1.5)
    p["mlp.0.weight"] = r(M, 2 * H)
    p["mlp.0.bias"] = r(M, scale=0.2)
    p["mlp.2.weight"] = r(D, M)
    p["mlp.2.bias"] = r(D, scale=0.2)
    if not tied:
        p["item_out.weight"] = r(N_ITEMS, D)
    p["item_out.bias"] = r(N_ITEMS, scale=0.3)
    return p


def lookup(table, ids):
    """Rows `id - 1` of `table`, zeros for id 0."""
    out = torch.zeros(len(ids), table.shape[1], dtype=dt)
    rows = [i for i, v in enumerate(ids) if v != 0]
    if rows:
        out[rows] = table[[ids[i] - 1 for i in rows]]
    return out


def forward(p, fusion, layers, tied):
    """Returns the mean loss and the last-position scores [B, N_ITEMS]."""
    e = lookup(p["item_emb.weight"], INPUTS)
    if fusion != "none":
        tau = lookup(p["time_emb.weight"], BUCKETS)
        pi = lookup(p["pos_emb.weight"], POSITIONS)
    if fusion == "concat":
        x = torch.cat([e, tau, pi], dim=1)
    elif fusion == "add":
        x = e + tau + pi
    else:
        x = e
    x = x.reshape(B, L, -1)
    lstm = torch.nn.LSTM(x.shape[2], H, layers, batch_first=True).to(dt)
    for name, _ in list(lstm.named_parameters()):
        delattr(lstm, name)
        setattr(lstm, name, p["lstm." + name])
    ys = []
    for row in range(B):
        ids = INPUTS[row * L:(row + 1) * L]
        first = next((t for t, v in enumerate(ids) if v != 0), L)
        y = torch.zeros(L, H, dtype=dt)
        if first < L:
            out, _ = lstm(x[row:row + 1, first:])
            y = torch.cat([torch.zeros(first, H, dtype=dt), out[0]], dim=0)
        ys.append(y)
    y = torch.stack(ys).reshape(B * L, H)
    keys = torch.cat([y, tau, pi], dim=1) if fusion == "attention" else y
    s = (torch.tanh(keys @ p["att.proj.weight"].T + p["att.proj.bias"]) @ p["att.score.weight"].T)[:, 0]
    pooled = []
    for row in range(B):
        for t in range(L):
            real = [row * L + u for u in range(t + 1) if INPUTS[row * L + u] != 0]
            if INPUTS[row * L + t] == 0:
                pooled.append(torch.zeros(H, dtype=dt))
                continue
            w = torch.softmax(s[real], dim=0)
            pooled.append(w @ y[real])
    pooled = torch.stack(pooled)
    q = torch.cat([pooled, y], dim=1)
    o = F.relu(q @ p["mlp.0.weight"].T + p["mlp.0.bias"]) @ p["mlp.2.weight"].T + p["mlp.2.bias"]
    out_w = p["item_emb.weight"] if tied else p["item_out.weight"]
    logits = o @ out_w.T + p["item_out.bias"]
    rows = [i for i, t in enumerate(TARGETS) if t != 0]
    loss = F.cross_entropy(logits[rows], torch.tensor([TARGETS[i] - 1 for i in rows]))
    last = [row * L + L - 1 for row in range(B)]
    return loss, logits[last]


def main():
    torch.manual_seed(7_2026)
    fx = {}
    put = lambda k, t: fx.__setitem__(k, {"shape": list(t.shape), "data": t.detach().reshape(-1).tolist()})
    for name, fusion, layers, tied in VARIANTS:
        p = make_params(fusion, layers, tied)
        loss, scores = forward(p, fusion, layers, tied)
        loss.backward()
        for k, v in p.items():
            put(f"{name}.param.{k}", v)
            put(f"{name}.grad.{k}", v.grad)
        put(f"{name}.loss", loss.reshape(1))
        put(f"{name}.scores", scores)
        print(f"{name}: loss {loss.item():.12f}")
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "lstm_attn.json"), "w") as f:
        json.dump(fx, f)


if __name__ == "__main__":
    main()
