#!/usr/bin/env python3
"""PyTorch reference fixture for seqrec-models' BERT4Rec (whole network, cloze loss, step 0).

The encoder is PyTorch's own `nn.TransformerEncoderLayer` (post-LN, `norm_first=False`, GELU, batch
first) fed with `src_key_padding_mask`, so the reference shares no code with seqrec's transcription; the
embedding layer (item + position on real slots, layer norm), the head (`LN(GELU(W h + b))`, tied item
table, per-item bias) and the masked cross-entropy are written out. Float64, no dropout.

Writes crates/seqrec-models/tests/fixtures/bert4rec.json: {"name": {"shape": [..], "data": [..]}} with
the parameters ("param.<name>", seqrec's names, which are PyTorch's inside the encoder), the batch
("batch.inputs", "batch.labels"), the loss ("loss"), every gradient ("grad.<name>") and the evaluation
scores ("scores", `[3, n_items + 1]`) of the histories "batch.histories" (the output at a [MASK] appended
after the last L - 1 items). Read by crates/seqrec-models/tests/bert4rec.rs.

Run from the repository root:  python3 scripts/fixtures_bert4rec.py
"""
import json
import os

import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "seqrec-models", "tests", "fixtures")
N_ITEMS, D, HEADS, BLOCKS, FF, L = 7, 8, 2, 2, 12, 6
MASK = N_ITEMS + 1
EPS = 1e-5
INPUTS = [0, 0, 1, 8, 3, 8, 5, 8, 7, 1, 2, 8, 0, 0, 0, 0, 0, 8]
LABELS = [0, 0, 0, 2, 0, 4, 0, 6, 0, 0, 0, 3, 0, 0, 0, 0, 0, 7]
HISTORIES = [0, 0, 1, 2, 3, 4, 5, 6, 7, 1, 2, 3, 0, 0, 0, 0, 0, 6]

torch.manual_seed(20232)
dt = torch.float64


def rnd(*shape, scale=0.4, base=0.0):
    return (base + scale * torch.randn(*shape, dtype=dt)).requires_grad_(True)


params = {}
item = 0.5 * torch.randn(N_ITEMS + 2, D, dtype=dt)
item[0] = 0.0
params["item_emb.weight"] = item.requires_grad_(True)
params["pos_emb.weight"] = rnd(L, D, scale=0.5)
params["emb_norm.weight"] = rnd(D, scale=0.1, base=1.0)
params["emb_norm.bias"] = rnd(D, scale=0.1)
layers = []
for i in range(BLOCKS):
    layer = torch.nn.TransformerEncoderLayer(
        D, HEADS, dim_feedforward=FF, dropout=0.0, activation="gelu", layer_norm_eps=EPS,
        batch_first=True, norm_first=False, dtype=dt)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            base = 1.0 if name.endswith("norm1.weight") or name.endswith("norm2.weight") else 0.0
            scale = 0.1 if p.dim() == 1 else 0.4
            p.copy_(base + scale * torch.randn(*p.shape, dtype=dt))
    for name, p in layer.named_parameters():
        params[f"encoder.layers.{i}.{name}"] = p
    layers.append(layer)
params["head.dense.weight"] = rnd(D, D)
params["head.dense.bias"] = rnd(D, scale=0.1)
params["head.norm.weight"] = rnd(D, scale=0.1, base=1.0)
params["head.norm.bias"] = rnd(D, scale=0.1)
params["out_bias"] = rnd(N_ITEMS + 2, scale=0.3)


def hidden(P, ids):
    keep = ids != 0
    x = P["item_emb.weight"][ids] + P["pos_emb.weight"][None] * keep[..., None]
    x = F.layer_norm(x, (D,), P["emb_norm.weight"], P["emb_norm.bias"], eps=EPS)
    for layer in layers:
        x = layer(x, src_key_padding_mask=~keep)
    return x


def head(P, h):
    z = h @ P["head.dense.weight"].T + P["head.dense.bias"]
    u = F.layer_norm(F.gelu(z), (D,), P["head.norm.weight"], P["head.norm.bias"], eps=EPS)
    logits = u @ P["item_emb.weight"].T + P["out_bias"]
    cols = torch.arange(N_ITEMS + 2)
    return logits.masked_fill((cols == 0) | (cols == MASK), float("-inf"))


ids = torch.tensor(INPUTS).reshape(-1, L)
labels = torch.tensor(LABELS).reshape(-1, L)
h = hidden(params, ids)
logits = head(params, h)
loss = F.cross_entropy(logits.reshape(-1, N_ITEMS + 2), labels.reshape(-1), ignore_index=0)
loss.backward()


def t2j(t):
    t = t.detach().to(torch.float64)
    return {"shape": list(t.shape), "data": [float(v) for v in t.reshape(-1).tolist()]}


out = {f"param.{k}": t2j(v) for k, v in params.items()}
out["batch.inputs"] = t2j(torch.tensor(INPUTS, dtype=dt))
out["batch.labels"] = t2j(torch.tensor(LABELS, dtype=dt))
out["batch.histories"] = t2j(torch.tensor(HISTORIES, dtype=dt))
out["loss"] = t2j(loss.reshape(1))
for k, v in params.items():
    g = v.grad.clone()
    if k == "item_emb.weight":
        g[0] = 0.0  # padding_idx=0: the padding row gets no gradient
    out[f"grad.{k}"] = t2j(g)
with torch.no_grad():
    # Model.score: the last L - 1 history items, then [MASK]; the output at the [MASK] slot.
    hist = torch.tensor(HISTORIES).reshape(-1, L)
    q = torch.cat([hist[:, 1:], torch.full((hist.shape[0], 1), MASK)], 1)
    s = head(params, hidden(params, q)[:, -1])
    # Columns 0..=n_items as seqrec writes them (column 0 unmasked: u . E[0] + b[0]).
    u_logits = s[:, : N_ITEMS + 1].clone()
    z = hidden(params, q)[:, -1] @ params["head.dense.weight"].T + params["head.dense.bias"]
    u = F.layer_norm(F.gelu(z), (D,), params["head.norm.weight"], params["head.norm.bias"], eps=EPS)
    u_logits[:, 0] = u @ params["item_emb.weight"][0] + params["out_bias"][0]
    out["scores"] = t2j(u_logits)
os.makedirs(OUT, exist_ok=True)
path = os.path.join(OUT, "bert4rec.json")
with open(path, "w") as f:
    json.dump(out, f)
print(f"{path}: {os.path.getsize(path)} bytes, loss {out['loss']['data']}")
