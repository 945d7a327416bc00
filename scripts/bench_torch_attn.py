#!/usr/bin/env python3
"""PyTorch side of benches/benches/attention.rs: forward + backward of a two-block causal self-attention
stack at SASRec's ML-1M shape (batch 128, length 200, width 50, 1 head, feed-forward 50, dropout 0.2,
training mode), on 1 and 2 threads; prints the medians of the repeats (process CPU time, which a
machine shared with other jobs distorts less, and wall-clock) in milliseconds.

- sasrec:  SASRec.pytorch's log2feats after the embeddings (the module of scripts/fixtures_attn.py with
           dropout: MHA dropout, PointWiseFeedForward dropouts, timeline zeroing, last_layernorm);
- post_ln: two nn.TransformerEncoderLayer(norm_first=False) with a causal mask and a key-padding mask
           (padding on the right so no query row is fully masked: PyTorch would give NaN there).

Run: python3 scripts/bench_torch_attn.py [--repeats 30]
"""
import argparse
import statistics
import time

import torch
import torch.nn as nn

B, T, D = 128, 200, 50


class PointWiseFeedForward(nn.Module):
    def __init__(self, hidden_units, dropout_rate):
        super().__init__()
        self.conv1 = nn.Conv1d(hidden_units, hidden_units, kernel_size=1)
        self.dropout1 = nn.Dropout(p=dropout_rate)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv1d(hidden_units, hidden_units, kernel_size=1)
        self.dropout2 = nn.Dropout(p=dropout_rate)

    def forward(self, inputs):
        outputs = self.dropout2(self.conv2(self.relu(self.dropout1(self.conv1(inputs.transpose(-1, -2))))))
        outputs = outputs.transpose(-1, -2)
        outputs += inputs
        return outputs


class SASRecStack(nn.Module):
    def __init__(self, d, heads, blocks, dropout):
        super().__init__()
        self.attention_layernorms = nn.ModuleList([nn.LayerNorm(d, eps=1e-8) for _ in range(blocks)])
        self.attention_layers = nn.ModuleList([nn.MultiheadAttention(d, heads, dropout) for _ in range(blocks)])
        self.forward_layernorms = nn.ModuleList([nn.LayerNorm(d, eps=1e-8) for _ in range(blocks)])
        self.forward_layers = nn.ModuleList([PointWiseFeedForward(d, dropout) for _ in range(blocks)])
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


class PostLN(nn.Module):
    def __init__(self, d, heads, d_ff, dropout):
        super().__init__()
        self.layers = nn.ModuleList([
            nn.TransformerEncoderLayer(d, heads, d_ff, dropout=dropout, batch_first=True, norm_first=False)
            for _ in range(2)])

    def forward(self, x, pad):
        causal = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
        for layer in self.layers:
            x = layer(x, src_mask=causal, src_key_padding_mask=pad)
        return x


def lengths():
    return [1 + (b * 7919) % T for b in range(B)]


def timeit(step, repeats):
    """Median wall-clock and process CPU time (all threads) per step, in ms."""
    for _ in range(3):
        step()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall) * 1e3, statistics.median(cpu) * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    torch.manual_seed(0)
    lens = lengths()
    left_pad = torch.zeros(B, T, dtype=torch.bool)
    right_pad = torch.zeros(B, T, dtype=torch.bool)
    for b, n in enumerate(lens):
        left_pad[b, : T - n] = True
        right_pad[b, n:] = True
    r = torch.randn(B, T, D)

    sasrec = SASRecStack(D, 1, 2, 0.2).train()
    x_s = (torch.randn(B, T, D) * ~left_pad.unsqueeze(-1)).requires_grad_()

    def step_sasrec():
        sasrec.zero_grad(set_to_none=False)
        y = sasrec(x_s, left_pad)
        (y * r).sum().backward()

    post = PostLN(D, 1, D, 0.2).train()
    x_p = torch.randn(B, T, D).requires_grad_()

    def step_post():
        post.zero_grad(set_to_none=False)
        y = post(x_p, right_pad)
        (y * r).sum().backward()

    print(f"torch {torch.__version__}, B={B} T={T} D={D}, median of {args.repeats}")
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for name, step in (("sasrec", step_sasrec), ("post_ln", step_post)):
            wall, cpu = timeit(step, args.repeats)
            print(f"attention/{name}_fwd_bwd/threads{threads}: median of {args.repeats}: "
                  f"cpu {cpu:.1f} ms, wall {wall:.1f} ms")


if __name__ == "__main__":
    main()
