#!/usr/bin/env python3
"""Regenerates the PyTorch reference fixtures of seqrec-nn's core layers, losses and optimizers.

Usage: python3 scripts/fixtures_core.py   (writes crates/seqrec-nn/tests/fixtures/core/*.json and
torch_modules.safetensors). Every tensor is stored as {"shape": [...], "data": [...]} with the float64
values of the float32 computation. Only needed to regenerate; the Rust tests read the committed files.
"""
import json
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "seqrec-nn", "tests", "fixtures", "core")
torch.manual_seed(20261125)


def t(x):
    x = x.detach()
    return {"shape": list(x.shape), "data": x.double().flatten().tolist()}


def ints(x):
    return {"shape": list(x.shape), "data": [int(v) for v in x.flatten().tolist()]}


def dump(name, d):
    path = os.path.join(OUT, name + ".json")
    with open(path, "w") as f:
        json.dump(d, f)
    print(path, os.path.getsize(path), "bytes")


def linear():
    fc = torch.nn.Linear(5, 3)
    x = torch.randn(2, 4, 5, requires_grad=True)
    y = fc(x)
    r = torch.randn_like(y)
    (y * r).sum().backward()
    dump("linear", {"fc.weight": t(fc.weight), "fc.bias": t(fc.bias), "x": t(x), "y": t(y), "dy": t(r),
                    "dx": t(x.grad), "fc.weight.grad": t(fc.weight.grad), "fc.bias.grad": t(fc.bias.grad)})


def layernorm():
    ln = torch.nn.LayerNorm(6, eps=1e-5)
    with torch.no_grad():
        ln.weight.copy_(torch.randn(6))
        ln.bias.copy_(torch.randn(6))
    x = (torch.randn(3, 4, 6) * 2 + 0.5).requires_grad_()
    y = ln(x)
    r = torch.randn_like(y)
    (y * r).sum().backward()
    dump("layernorm", {"ln.weight": t(ln.weight), "ln.bias": t(ln.bias), "x": t(x), "y": t(y), "dy": t(r),
                       "dx": t(x.grad), "ln.weight.grad": t(ln.weight.grad), "ln.bias.grad": t(ln.bias.grad)})


def embedding():
    emb = torch.nn.Embedding(9, 4, padding_idx=0)
    ids = torch.tensor([[0, 0, 3, 5, 3], [1, 8, 8, 8, 0]])  # padding and repeated ids
    y = emb(ids)
    r = torch.randn_like(y)
    (y * r).sum().backward()
    dump("embedding", {"emb.weight": t(emb.weight), "ids": ints(ids), "y": t(y), "dy": t(r),
                       "emb.weight.grad": t(emb.weight.grad)})


def cross_entropy():
    logits = (torch.randn(12, 301) * 3).requires_grad_()
    targets = torch.randint(1, 301, (12,))
    targets[[0, 5, 6]] = 0  # ignored (padding)
    targets[3] = 300
    loss = F.cross_entropy(logits, targets, ignore_index=0)
    loss.backward()
    dump("cross_entropy", {"logits": t(logits), "targets": ints(targets), "loss": t(loss),
                           "dlogits": t(logits.grad)})


def bce():
    # SASRec.pytorch: two BCEWithLogits means over the unmasked positions.
    n = 10
    pos = (torch.randn(n) * 3).requires_grad_()
    neg = (torch.randn(n) * 3).requires_grad_()
    mask = torch.ones(n, dtype=torch.bool)
    mask[[1, 4, 9]] = False
    loss = F.binary_cross_entropy_with_logits(pos[mask], torch.ones(int(mask.sum()))) + \
        F.binary_cross_entropy_with_logits(neg[mask], torch.zeros(int(mask.sum())))
    loss.backward()
    dump("bce", {"pos": t(pos), "neg": t(neg), "mask": ints(mask.int()), "loss": t(loss),
                 "dpos": t(pos.grad), "dneg": t(neg.grad)})


def sampled_losses():
    n, k = 7, 5
    logits = (torch.randn(n, 1 + k) * 2).requires_grad_()
    mask = torch.tensor([1, 1, 0, 1, 1, 0, 1], dtype=torch.bool)
    q = torch.rand(n, 1 + k) * 0.5 + 0.01
    log_q = q.log()
    out = {"logits": t(logits), "mask": ints(mask.int()), "log_q": t(log_q)}

    def run(name, f):
        if logits.grad is not None:
            logits.grad = None
        loss = f()
        loss.backward()
        out[name + ".loss"] = t(loss)
        out[name + ".dlogits"] = t(logits.grad)

    # Sampled softmax with log-Q correction, positive in column 0.
    run("sampled_softmax", lambda: F.cross_entropy((logits - log_q)[mask], torch.zeros(int(mask.sum()), dtype=torch.long)))
    # BPR over all (positive, negative) pairs of unmasked rows.
    run("bpr", lambda: -F.logsigmoid(logits[mask, :1] - logits[mask, 1:]).mean())
    # BPR-max with score regularisation, GRU4Rec's formula.
    bpreg = 0.7

    def bpr_max():
        x = logits[mask]
        pos, neg = x[:, :1], x[:, 1:]
        w = torch.softmax(neg, dim=1)
        return torch.mean(-torch.log(torch.sum(torch.sigmoid(pos - neg) * w, dim=1) + 1e-24)
                          + bpreg * torch.sum(w * neg ** 2, dim=1))
    run("bpr_max", bpr_max)
    out["bpr_max.reg"] = {"shape": [], "data": [bpreg]}
    # gBCE, gSASRec's gbce.py: alpha = k / (pool - 1), beta = alpha (t (1 - 1/alpha) + 1/alpha).
    num_items, t_cal = 40, 0.75
    alpha = k / (num_items - 1)
    beta = alpha * (t_cal * (1 - 1 / alpha) + 1 / alpha)

    def gbce():
        x = logits[mask]
        targets = torch.zeros_like(x)
        targets[:, 0] = 1
        pos = targets * F.softplus(-x)
        negl = (1.0 - targets) * F.softplus(x)
        return (beta * pos + negl).mean()
    run("gbce", gbce)
    out["gbce.beta"] = {"shape": [], "data": [beta]}
    out["gbce.num_items"] = {"shape": [], "data": [num_items]}
    out["gbce.t"] = {"shape": [], "data": [t_cal]}
    dump("sampled_losses", out)


def optimizers():
    w0 = torch.randn(3, 4)
    b0 = torch.randn(4)
    steps = 5
    grads = [(torch.randn(3, 4), torch.randn(4)) for _ in range(steps)]
    out = {"w0": t(w0), "b0": t(b0)}
    for s, (gw, gb) in enumerate(grads):
        out[f"grad{s}.w"] = t(gw)
        out[f"grad{s}.b"] = t(gb)
    cases = {
        "sgd_momentum": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01),
        "sgd_nesterov": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
        "adagrad": lambda ps: torch.optim.Adagrad(ps, lr=0.1, lr_decay=0.01, weight_decay=0.02,
                                                  initial_accumulator_value=0.1, eps=1e-10),
        "adam": lambda ps: torch.optim.Adam(ps, lr=0.01, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.05),
        "adamw": lambda ps: torch.optim.AdamW(ps, lr=0.01, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.1),
    }
    for name, make in cases.items():
        w = w0.clone().requires_grad_()
        b = b0.clone().requires_grad_()
        opt = make([w, b])
        for s, (gw, gb) in enumerate(grads):
            w.grad = gw.clone()
            b.grad = gb.clone()
            opt.step()
            out[f"{name}.step{s}.w"] = t(w)
            out[f"{name}.step{s}.b"] = t(b)
    dump("optimizers", out)


def safetensors_modules():
    fc = torch.nn.Linear(4, 3)
    ln = torch.nn.LayerNorm(3)
    with torch.no_grad():
        ln.weight.copy_(torch.randn(3))
        ln.bias.copy_(torch.randn(3))
    emb = torch.nn.Embedding(6, 4, padding_idx=0)
    sd = {"fc.weight": fc.weight, "fc.bias": fc.bias, "ln.weight": ln.weight, "ln.bias": ln.bias,
          "item_emb.weight": emb.weight}
    save_file({k: v.detach().contiguous() for k, v in sd.items()}, os.path.join(OUT, "torch_modules.safetensors"))
    dump("torch_modules", {k: t(v) for k, v in sd.items()})


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    linear()
    layernorm()
    embedding()
    cross_entropy()
    bce()
    sampled_losses()
    optimizers()
    safetensors_modules()
