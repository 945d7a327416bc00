#!/usr/bin/env python3
"""A PyTorch gSASRec trainer with seqrec's recipe, to tell a seqrec bug from a property of the recipe.

Trains SASRec.pytorch's blocks (the same `SASRecStack` as the layer benchmark) with gBCE over `k`
uniform negatives per position (drawn from the whole catalogue, as the gSASRec repository), the item
table tied to the output, Adam lr 1e-3, batch 128, an epoch being one shuffled pass over the users'
training sequences (each user's sequence without its last two items). Every `--every` epochs it prints
`epoch  mean-training-loss  validation-NDCG@10` with seqrec's validation protocol: full ranking of the
second-to-last item, training items excluded.

`--init xavier --scale 1` is seqrec's default initialisation (Xavier-normal tables, input embeddings
times sqrt(d)); `--init torch --scale 0` is the gSASRec PyTorch repository's (N(0, 1) tables, no
scaling), seqrec's `embedding_std = 1.0, scale_embeddings = false`.

Compare with `cargo xtask train --model gsasrec --data DATA --threads 1 --patience 0
--set model.tied_output=true --set model.hidden=64 --set model.dropout=0.1 --eval-every 2` (its
`history.jsonl`). Data from SEQREC_DATA_DIR (default ../shared/data): `ml-100k` (u.data, ordered by
timestamp) or `ml-1m` (ml-1m-sasrec.txt).

Run: python3 scripts/gsasrec_torch_check.py --data ml-1m --epochs 8 --every 2
"""
import argparse
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from bench_torch_attn import SASRecStack  # noqa: E402


def load(data_dir, name):
    """Per-user item sequences in time order."""
    by_user = {}
    if name == "ml-1m":
        with open(os.path.join(data_dir, "ml-1m-sasrec.txt")) as f:
            for line in f:
                u, i = line.split()
                by_user.setdefault(int(u), []).append(int(i))
        return [v for _, v in sorted(by_user.items())]
    with open(os.path.join(data_dir, "ml-100k-u.data")) as f:
        for line in f:
            u, i, _, t = line.split("\t")
            by_user.setdefault(int(u), []).append((int(t), int(i)))
    return [[i for _, i in sorted(v, key=lambda x: x[0])] for _, v in sorted(by_user.items())]


class Gsasrec(nn.Module):
    def __init__(self, n_items, d, maxlen, dropout, init, scale):
        super().__init__()
        self.item = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.pos = nn.Embedding(maxlen, d)
        self.drop = nn.Dropout(dropout)
        self.stack = SASRecStack(d, 1, 2, dropout)
        self.scale = d**0.5 if scale else 1.0
        if init == "xavier":
            for p in self.parameters():
                if p.dim() >= 2:
                    nn.init.xavier_normal_(p)
        else:
            nn.init.normal_(self.item.weight)
            nn.init.normal_(self.pos.weight)
        with torch.no_grad():
            self.item.weight[0].zero_()

    def forward(self, x):
        e = self.drop(self.item(x) * self.scale + self.pos.weight)
        pad = x == 0
        return self.stack(e * ~pad.unsqueeze(-1), pad)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="ml-100k", choices=["ml-100k", "ml-1m"])
    ap.add_argument("--init", default="xavier", choices=["xavier", "torch"])
    ap.add_argument("--scale", type=int, default=1)
    ap.add_argument("--negatives", type=int, default=256)
    ap.add_argument("--t", type=float, default=0.75)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--maxlen", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--every", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    data_dir = os.environ.get("SEQREC_DATA_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
    seqs = load(data_dir, a.data)
    n_items, L = max(max(s) for s in seqs), a.maxlen
    train = [s[:-2] for s in seqs]
    valid = torch.tensor([s[-2] for s in seqs])

    def right_aligned(s):
        return [0] * (L - len(s[-L:])) + s[-L:]

    inputs = torch.tensor([right_aligned(s[:-1]) for s in train])
    targets = torch.tensor([right_aligned(s[1:]) for s in train])
    histories = torch.tensor([right_aligned(s) for s in train])

    model = Gsasrec(n_items, a.hidden, L, a.dropout, a.init, a.scale)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    # gSASRec's beta, with the repository's pool size n_items - 1.
    alpha = a.negatives / (n_items - 2)
    beta = alpha * (a.t * (1 - 1 / alpha) + 1 / alpha)

    def ndcg10():
        model.eval()
        with torch.no_grad():
            scores = model(histories)[:, -1] @ model.item.weight.T
            scores[:, 0] = -float("inf")
            for u, s in enumerate(train):
                scores[u, s] = -float("inf")
            target = scores[torch.arange(len(train)), valid]
            # Ties count against the model, as in seqrec.
            rank = (scores >= target.unsqueeze(1)).sum(1) - 1
            gain = torch.where(rank < 10, 1 / torch.log2(rank.float() + 2), torch.zeros(()))
        model.train()
        return gain.mean().item()

    for epoch in range(1, a.epochs + 1):
        perm = torch.randperm(len(train))
        total, batches = 0.0, 0
        for b0 in range(0, len(train), 128):
            idx = perm[b0 : b0 + 128]
            y = targets[idx]
            h = model(inputs[idx])
            mask = (y != 0).float().unsqueeze(-1)
            cand = torch.cat([y.unsqueeze(-1), torch.randint(1, n_items + 1, (*y.shape, a.negatives))], -1)
            logits = torch.gather(h @ model.item.weight.T, 2, cand)
            per_logit = torch.cat([beta * F.softplus(-logits[..., :1]), F.softplus(logits[..., 1:])], -1)
            loss = (per_logit * mask).sum() / (mask.sum() * (a.negatives + 1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
            batches += 1
        if epoch % a.every == 0:
            print(epoch, round(total / batches, 5), round(ndcg10(), 4), flush=True)


if __name__ == "__main__":
    main()
