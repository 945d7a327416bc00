#!/usr/bin/env python3
"""Regenerates the PyTorch reference fixtures for seqrec-nn's GRU and LSTM.

Writes crates/seqrec-nn/tests/fixtures/rnn/<case>.json, each {"name": {"shape": [..], "data": [..]}} with
float64 numbers of the float32 computation: inputs (x, mask, h0[, c0]), loss weights (ry, rh[, rc]), every
parameter under its PyTorch name, outputs (y, h_n[, c_n]), the loss, and the gradients of
L = sum(y * ry) + sum(h_n * rh) [+ sum(c_n * rc)] w.r.t. x, h0[, c0] and every parameter ("grad.<name>").

Cases: 2-layer nn.GRU / nn.LSTM (batch_first, with h0/c0) on a full batch; the same on a right-padded
batch through pack_padded_sequence; and a left-padded batch (SASRec layout) where PyTorch runs each
row's real suffix on its own.

Usage: python3 scripts/fixtures_rnn.py   (PyTorch 2.x, CPU)
"""
import json
import os

import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "seqrec-nn", "tests", "fixtures", "rnn")
BATCH, SEQ, D_IN, HIDDEN, LAYERS = 3, 6, 5, 4, 2


def t2j(t):
    t = t.detach().to(torch.float64)
    return {"shape": list(t.shape), "data": [float(v) for v in t.reshape(-1).tolist()]}


def run(kind, layout, seed):
    torch.manual_seed(seed)
    cls = torch.nn.GRU if kind == "gru" else torch.nn.LSTM
    net = cls(D_IN, HIDDEN, num_layers=LAYERS, batch_first=True)
    x = torch.randn(BATCH, SEQ, D_IN, requires_grad=True)
    h0 = torch.randn(LAYERS, BATCH, HIDDEN, requires_grad=True)
    c0 = torch.randn(LAYERS, BATCH, HIDDEN, requires_grad=True)
    ry = torch.randn(BATCH, SEQ, HIDDEN)
    rh = torch.randn(LAYERS, BATCH, HIDDEN)
    rc = torch.randn(LAYERS, BATCH, HIDDEN)
    lengths = {"full": [SEQ] * BATCH, "right": [SEQ, 3, 1], "left": [SEQ, 4, 2]}[layout]
    mask = torch.zeros(BATCH, SEQ)
    for b, n in enumerate(lengths):
        if layout == "left":
            mask[b, SEQ - n:] = 1
        else:
            mask[b, :n] = 1
    state0 = h0 if kind == "gru" else (h0, c0)

    if layout == "full":
        y, state = net(x, state0)
    elif layout == "right":
        packed = pack_padded_sequence(x, torch.tensor(lengths), batch_first=True, enforce_sorted=False)
        yp, state = net(packed, state0)
        y, _ = pad_packed_sequence(yp, batch_first=True, total_length=SEQ)
    else:
        # Left padding: each row's real suffix on its own, outputs placed at the end, zeros before.
        ys, hs, cs = [], [], []
        for b, n in enumerate(lengths):
            s0 = h0[:, b:b + 1] if kind == "gru" else (h0[:, b:b + 1], c0[:, b:b + 1])
            yb, sb = net(x[b:b + 1, SEQ - n:], s0)
            ys.append(torch.cat([torch.zeros(1, SEQ - n, HIDDEN), yb], dim=1))
            if kind == "gru":
                hs.append(sb)
            else:
                hs.append(sb[0])
                cs.append(sb[1])
        y = torch.cat(ys, dim=0)
        state = torch.cat(hs, dim=1) if kind == "gru" else (torch.cat(hs, dim=1), torch.cat(cs, dim=1))

    h_n = state if kind == "gru" else state[0]
    loss = (y * ry).sum() + (h_n * rh).sum()
    if kind == "lstm":
        loss = loss + (state[1] * rc).sum()
    loss.backward()

    out = {"x": t2j(x), "mask": t2j(mask), "h0": t2j(h0), "ry": t2j(ry), "rh": t2j(rh), "y": t2j(y),
           "h_n": t2j(h_n), "loss": t2j(loss), "grad.x": t2j(x.grad), "grad.h0": t2j(h0.grad)}
    if kind == "lstm":
        out.update({"c0": t2j(c0), "rc": t2j(rc), "c_n": t2j(state[1]), "grad.c0": t2j(c0.grad)})
    for name, p in net.named_parameters():
        out[name] = t2j(p)
        out["grad." + name] = t2j(p.grad)
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    for i, (kind, layout) in enumerate(
        [(k, l) for k in ("gru", "lstm") for l in ("full", "right", "left")]
    ):
        path = os.path.join(OUT, f"{kind}_{layout}.json")
        with open(path, "w") as f:
            json.dump(run(kind, layout, seed=100 + i), f)
        print(path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
