#!/usr/bin/env python3
"""PyTorch side of the training-throughput comparison (issue 4): one training epoch of SASRec (paper BCE with
one uniform negative per position, or full softmax cross-entropy) and GRU4Rec (full softmax cross-entropy) on
MovieLens-1M, with seqrec's default hyper-parameters, on the same leave-one-out training sequences.

The models follow SASRec.pytorch (pmixer) and a plain GRU4Rec (embedding -> dropout -> GRU -> dropout -> output
layer over all items), both with Adam. Data: `ml-1m-sasrec.txt` from SEQREC_DATA_DIR (the SASRec paper's
ML-1M: 6,040 users, 3,416 items, 999,611 events, the same sequences seqrec builds from ml-1m-ratings.dat);
training sequences drop each user's last two items (validation and test).

Prints one JSON line per model: seconds of the epoch (wall), process CPU seconds, sequences/s.

Run: python3 benches/torch_train_epoch.py [--threads 2] [--models sasrec-bce,sasrec-ce,gru4rec] [--epochs 1]
The seqrec side is `benches/train_vs_torch.sh`, which runs both back to back.
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))
from bench_torch_attn import SASRecStack  # noqa: E402  (SASRec.pytorch's blocks, shared with the layer bench)


def load_sequences(path):
    seqs = {}
    n_items = 0
    with open(path) as f:
        for line in f:
            u, i = line.split()
            i = int(i)
            seqs.setdefault(int(u), []).append(i)
            n_items = max(n_items, i)
    return [s[:-2] for _, s in sorted(seqs.items())], n_items


def windows(train, maxlen):
    """SASRec's training windows: inputs s[:-1], targets s[1:], right-aligned, left-padded with 0."""
    n = len(train)
    inp = torch.zeros(n, maxlen, dtype=torch.long)
    tgt = torch.zeros(n, maxlen, dtype=torch.long)
    for k, s in enumerate(train):
        x, y = s[:-1][-maxlen:], s[1:][-maxlen:]
        if x:
            inp[k, maxlen - len(x):] = torch.tensor(x)
            tgt[k, maxlen - len(y):] = torch.tensor(y)
    return inp, tgt


class SASRec(nn.Module):
    def __init__(self, n_items, d, maxlen, blocks, heads, dropout):
        super().__init__()
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.pos_emb = nn.Embedding(maxlen, d)
        self.emb_dropout = nn.Dropout(dropout)
        self.stack = SASRecStack(d, heads, blocks, dropout)
        self.d = d

    def forward(self, inp):
        x = self.item_emb(inp) * self.d**0.5
        x = x + self.pos_emb.weight.unsqueeze(0)
        x = self.emb_dropout(x)
        pad = inp == 0
        x = x * ~pad.unsqueeze(-1)
        return self.stack(x, pad)


class GRU4Rec(nn.Module):
    def __init__(self, n_items, d, h, dropout_emb, dropout_hidden):
        super().__init__()
        self.item_in = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.gru = nn.GRU(d, h, batch_first=True)
        self.drop_emb = nn.Dropout(dropout_emb)
        self.drop_hid = nn.Dropout(dropout_hidden)
        self.out = nn.Linear(h, n_items)

    def forward(self, inp):
        y, _ = self.gru(self.drop_emb(self.item_in(inp)))
        return self.drop_hid(y)


def build(model_name, n_items):
    """The model and its optimizer with seqrec's defaults (SASRec: the paper's ML-1M settings)."""
    if model_name.startswith("sasrec"):
        model = SASRec(n_items, 50, 200, 2, 1, 0.2)
        for p in model.parameters():  # SASRec.pytorch's initialisation
            if p.dim() > 1:
                torch.nn.init.xavier_normal_(p)
        return model, torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.98))
    model = GRU4Rec(n_items, 64, 64, 0.1, 0.1)
    return model, torch.optim.Adam(model.parameters(), lr=1e-3)


def epoch(model_name, model, opt, inp, tgt, n_items, batch, generator, max_batches=None):
    train = inp
    perm = torch.randperm(len(train), generator=generator)
    if max_batches:
        perm = perm[: max_batches * batch]
    model.train()
    for start in range(0, len(perm), batch):
        idx = perm[start:start + batch]
        x, y = inp[idx], tgt[idx]
        h = model(x)
        mask = y != 0
        if model_name == "sasrec-bce":
            neg = torch.randint(1, n_items + 1, y.shape, generator=generator)
            pos_logit = (h * model.item_emb(y)).sum(-1)
            neg_logit = (h * model.item_emb(neg)).sum(-1)
            loss = F.binary_cross_entropy_with_logits(pos_logit[mask], torch.ones_like(pos_logit[mask])) \
                + F.binary_cross_entropy_with_logits(neg_logit[mask], torch.zeros_like(neg_logit[mask]))
        elif model_name == "sasrec-ce":
            logits = h[mask] @ model.item_emb.weight.T
            loss = F.cross_entropy(logits, y[mask])
        else:
            logits = model.out(h[mask])
            loss = F.cross_entropy(logits, y[mask] - 1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return float(loss.detach())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default="sasrec-bce,sasrec-ce,gru4rec")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--max-batches", type=int, default=None, help="smoke test: stop each epoch early")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data_dir = os.environ.get("SEQREC_DATA_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
    train, n_items = load_sequences(os.path.join(data_dir, "ml-1m-sasrec.txt"))
    for name in args.models.split(","):
        g = torch.Generator().manual_seed(0)
        torch.manual_seed(0)
        model, opt = build(name, n_items)
        inp, tgt = windows(train, 200)
        for e in range(args.epochs):
            w0, c0 = time.perf_counter(), time.process_time()
            loss = epoch(name, model, opt, inp, tgt, n_items, args.batch, g, args.max_batches)
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            print(json.dumps({"impl": "pytorch", "model": name, "epoch": e, "threads": args.threads,
                              "seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
                              "sequences_per_second": round(min(len(train), (args.max_batches or 10**9) * args.batch) / wall, 1), "last_loss": round(loss, 4)}),
                  flush=True)


if __name__ == "__main__":
    main()
