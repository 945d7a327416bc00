#!/usr/bin/env python3
"""PyTorch reference fixtures for seqrec-nn's attention layers.

Writes crates/seqrec-nn/tests/fixtures/attn/*.json, each {"name": {"shape": [..], "data": [..]}} with the
float64 values of float32 computations: inputs, parameters (under seqrec's PyTorch-style names, prefixed
"param."), outputs, the loss sum(out * r) and every gradient (prefixed "grad."). Config values are
stored as one-element tensors prefixed "cfg.". Read by crates/seqrec-nn/tests/torch_attn.rs.

Run from the repository root:  python3 scripts/fixtures_attn.py
"""
import json
import math
import os

import torch
import torch.nn as nn

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "seqrec-nn", "tests", "fixtures", "attn")


def t2j(t):
    t = t.detach().to(torch.float64)
    return {"shape": list(t.shape), "data": [float(v) for v in t.reshape(-1).tolist()]}


def save(name, tensors):
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, name + ".json")
    with open(path, "w") as f:
        json.dump({k: t2j(v) for k, v in tensors.items()}, f)
    print(f"{path}: {os.path.getsize(path)} bytes")


def cfg(**kw):
    return {f"cfg.{k}": torch.tensor([float(v)]) for k, v in kw.items()}


def randomize_(module, gen, scale=0.5):
    """Non-default values for every parameter (zero biases and unit norms would hide bugs)."""
    with torch.no_grad():
        for n, p in module.named_parameters():
            noise = (torch.rand(p.shape, generator=gen) * 2 - 1) * scale
            if "norm" in n and n.endswith("weight"):
                p.copy_(1.0 + noise * 0.5)
            elif n.endswith("bias"):
                p.copy_(noise)
            else:
                p.add_(noise * 0.2)


def keep_from_lengths(b, t, pads, left):
    """keep[b, t] = True at real positions; pads[i] padded positions at the left or right."""
    keep = torch.ones(b, t, dtype=torch.bool)
    for i, p in enumerate(pads):
        if p:
            if left:
                keep[i, :p] = False
            else:
                keep[i, t - p:] = False
    return keep


def causal_mask(t):
    return torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)  # True = not allowed


def mha_case(name, gen, b, t, d, heads, causal, pads, left, cross):
    mha = nn.MultiheadAttention(d, heads, dropout=0.0, batch_first=True)
    randomize_(mha, gen)
    xq = torch.randn(b, t, d, generator=gen).requires_grad_()
    xkv = (torch.randn(b, t, d, generator=gen) if cross else xq.detach().clone()).requires_grad_()
    r = torch.randn(b, t, d, generator=gen)
    keep = keep_from_lengths(b, t, pads, left)
    out, w = mha(xq, xkv, xkv, attn_mask=causal_mask(t) if causal else None, key_padding_mask=~keep,
                 need_weights=True, average_attn_weights=True)
    assert torch.isfinite(out).all(), "choose paddings without fully masked query rows"
    loss = (out * r).sum()
    loss.backward()
    tensors = {"x_q": xq, "x_kv": xkv, "r": r, "keep": keep.float(), "out": out, "weights": w,
               "loss": loss.reshape(1), "grad.x_q": xq.grad, "grad.x_kv": xkv.grad}
    for n, p in mha.named_parameters():
        tensors[f"param.attn.{n}"] = p
        tensors[f"grad.attn.{n}"] = p.grad
    tensors.update(cfg(heads=heads, causal=causal, cross=cross))
    save(name, tensors)


def encoder_layer_case(name, gen, b, t, d, heads, d_ff, norm_first, activation, causal, pads, left):
    layer = nn.TransformerEncoderLayer(d, heads, d_ff, dropout=0.0, activation=activation,
                                       batch_first=True, norm_first=norm_first)
    layer.train()
    randomize_(layer, gen)
    x = torch.randn(b, t, d, generator=gen).requires_grad_()
    r = torch.randn(b, t, d, generator=gen)
    keep = keep_from_lengths(b, t, pads, left)
    y = layer(x, src_mask=causal_mask(t) if causal else None, src_key_padding_mask=~keep)
    assert torch.isfinite(y).all()
    loss = (y * r).sum()
    loss.backward()
    tensors = {"x": x, "r": r, "keep": keep.float(), "y": y, "loss": loss.reshape(1), "grad.x": x.grad}
    for n, p in layer.named_parameters():
        tensors[f"param.layer.{n}"] = p
        tensors[f"grad.layer.{n}"] = p.grad
    tensors.update(cfg(heads=heads, d_ff=d_ff, norm_first=norm_first, gelu=activation == "gelu",
                       causal=causal, eps=layer.norm1.eps))
    save(name, tensors)


class PointWiseFeedForward(nn.Module):
    """SASRec.pytorch's feed-forward (pmixer/SASRec.pytorch model.py), dropout 0."""

    def __init__(self, hidden_units):
        super().__init__()
        self.conv1 = nn.Conv1d(hidden_units, hidden_units, kernel_size=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv1d(hidden_units, hidden_units, kernel_size=1)

    def forward(self, inputs):
        outputs = self.conv2(self.relu(self.conv1(inputs.transpose(-1, -2))))
        outputs = outputs.transpose(-1, -2)
        outputs += inputs
        return outputs


class SASRecStack(nn.Module):
    """SASRec.pytorch's log2feats after the embeddings: blocks of
    Q = LN1(seqs); seqs = Q + MHA(Q, seqs, seqs, causal); seqs = FF(LN2(seqs)); seqs *= ~timeline_mask;
    then last_layernorm (eps 1e-8 everywhere, as in SASRec)."""

    def __init__(self, d, heads, blocks):
        super().__init__()
        self.attention_layernorms = nn.ModuleList([nn.LayerNorm(d, eps=1e-8) for _ in range(blocks)])
        self.attention_layers = nn.ModuleList([nn.MultiheadAttention(d, heads, 0.0) for _ in range(blocks)])
        self.forward_layernorms = nn.ModuleList([nn.LayerNorm(d, eps=1e-8) for _ in range(blocks)])
        self.forward_layers = nn.ModuleList([PointWiseFeedForward(d) for _ in range(blocks)])
        self.last_layernorm = nn.LayerNorm(d, eps=1e-8)

    def forward(self, seqs, timeline_mask):
        tl = seqs.shape[1]
        attention_mask = ~torch.tril(torch.ones((tl, tl), dtype=torch.bool))
        for i in range(len(self.attention_layers)):
            seqs = torch.transpose(seqs, 0, 1)
            Q = self.attention_layernorms[i](seqs)
            mha_outputs, _ = self.attention_layers[i](Q, seqs, seqs, attn_mask=attention_mask)
            seqs = Q + mha_outputs
            seqs = torch.transpose(seqs, 0, 1)
            seqs = self.forward_layernorms[i](seqs)
            seqs = self.forward_layers[i](seqs)
            seqs = seqs * ~timeline_mask.unsqueeze(-1)
        return self.last_layernorm(seqs)


def sasrec_name(n):
    """SASRec.pytorch parameter name -> seqrec TransformerEncoder name (prefix "enc")."""
    parts = n.split(".")
    if parts[0] == "last_layernorm":
        return "enc.norm." + parts[1]
    i = parts[1]
    rest = ".".join(parts[2:])
    base = {"attention_layernorms": "norm1", "forward_layernorms": "norm2"}.get(parts[0])
    if base:
        return f"enc.layers.{i}.{base}.{rest}"
    if parts[0] == "attention_layers":
        return f"enc.layers.{i}.self_attn.{rest}"
    conv = {"conv1": "linear1", "conv2": "linear2"}[parts[2]]
    return f"enc.layers.{i}.{conv}.{parts[3]}"


def sasrec_case(name, gen, b, t, d, heads, pads):
    model = SASRecStack(d, heads, 2)
    randomize_(model, gen)
    keep = keep_from_lengths(b, t, pads, left=True)
    # SASRec zeroes padded embeddings before the first block; the stack's input is that masked tensor.
    x = (torch.randn(b, t, d, generator=gen) * keep.unsqueeze(-1)).requires_grad_()
    r = torch.randn(b, t, d, generator=gen)
    y = model(x, ~keep)
    loss = (y * r).sum()
    loss.backward()
    tensors = {"x": x, "r": r, "keep": keep.float(), "y": y, "loss": loss.reshape(1), "grad.x": x.grad}
    for n, p in model.named_parameters():
        v, g = p, p.grad
        if "conv" in n and n.endswith("weight"):
            v, g = p[:, :, 0], p.grad[:, :, 0]  # Conv1d k=1 weight [out, in, 1] -> Linear [out, in]
        tensors["param." + sasrec_name(n)] = v
        tensors["grad." + sasrec_name(n)] = g
    tensors.update(cfg(heads=heads))
    save(name, tensors)


def pooling_case(name, gen, b, t, d, d_att, pads):
    proj = nn.Linear(d, d_att)
    score = nn.Linear(d_att, 1, bias=False)
    h = torch.randn(b, t, d, generator=gen).requires_grad_()
    r = torch.randn(b, d, generator=gen)
    keep = keep_from_lengths(b, t, pads, left=True)
    s = score(torch.tanh(proj(h))).squeeze(-1).masked_fill(~keep, float("-inf"))
    w = torch.softmax(s, dim=-1)
    pooled = (w.unsqueeze(-1) * h).sum(1)
    loss = (pooled * r).sum()
    loss.backward()
    tensors = {"h": h, "r": r, "keep": keep.float(), "pooled": pooled, "weights": w, "loss": loss.reshape(1),
               "grad.h": h.grad}
    for prefix, m in [("pool.proj", proj), ("pool.score", score)]:
        for n, p in m.named_parameters():
            tensors[f"param.{prefix}.{n}"] = p
            tensors[f"grad.{prefix}.{n}"] = p.grad
    tensors.update(cfg(d_att=d_att))
    save(name, tensors)


def main():
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(20261125)
    torch.manual_seed(20261125)
    # Causal self-attention with right padding (PyTorch gives NaN for queries that see no key; seqrec
    # gives 0 there, tested separately), 2 heads.
    mha_case("mha_causal", gen, b=3, t=5, d=8, heads=2, causal=True, pads=[0, 2, 4], left=False, cross=False)
    # Bidirectional attention from one input to another (SASRec's MHA(LN(x), x)), left padding, 4 heads.
    mha_case("mha_cross_bidir", gen, b=3, t=5, d=8, heads=4, causal=False, pads=[0, 3, 1], left=True, cross=True)
    # One head (SASRec on ML-1M uses 1).
    mha_case("mha_causal_1head", gen, b=2, t=6, d=5, heads=1, causal=True, pads=[0, 3], left=False, cross=False)
    encoder_layer_case("encoder_post_relu", gen, b=3, t=5, d=8, heads=2, d_ff=12, norm_first=False,
                       activation="relu", causal=False, pads=[0, 2, 4], left=True)
    encoder_layer_case("encoder_pre_relu", gen, b=3, t=5, d=8, heads=2, d_ff=12, norm_first=True,
                       activation="relu", causal=True, pads=[1, 0, 3], left=False)
    encoder_layer_case("encoder_post_gelu", gen, b=2, t=4, d=6, heads=3, d_ff=10, norm_first=False,
                       activation="gelu", causal=True, pads=[0, 1], left=False)
    sasrec_case("sasrec_stack", gen, b=3, t=6, d=6, heads=2, pads=[0, 2, 5])
    pooling_case("attention_pooling", gen, b=3, t=5, d=6, d_att=4, pads=[0, 2, 4])


if __name__ == "__main__":
    main()
