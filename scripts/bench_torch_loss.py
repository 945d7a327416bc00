#!/usr/bin/env python3
"""PyTorch side of benches/benches/loss.rs: same shapes, forward + backward, median of repeats.

Usage: python3 scripts/bench_torch_loss.py
"""
import statistics
import time

import torch
import torch.nn.functional as F

ROWS, ITEMS = 25_600, 3_416


def median_ms(fn, repeats, warmup=3):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main():
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(ROWS, ITEMS, generator=g) * 2).requires_grad_()
    targets = torch.randint(1, ITEMS, (ROWS,), generator=g)
    targets[torch.rand(ROWS, generator=g) < 0.1] = 0

    def ce():
        logits.grad = None
        loss = F.cross_entropy(logits, targets, ignore_index=0)
        loss.backward()
        return loss

    def ce_fwd():
        with torch.no_grad():
            return F.cross_entropy(logits, targets, ignore_index=0)

    pos = (torch.randn(ROWS, generator=g) * 2).requires_grad_()
    neg = (torch.randn(ROWS, generator=g) * 2).requires_grad_()
    mask = torch.rand(ROWS, generator=g) >= 0.1
    ones = torch.ones(int(mask.sum()))
    zeros = torch.zeros(int(mask.sum()))

    def bce():
        pos.grad = None
        neg.grad = None
        loss = F.binary_cross_entropy_with_logits(pos[mask], ones) + \
            F.binary_cross_entropy_with_logits(neg[mask], zeros)
        loss.backward()
        return loss

    print(f"torch {torch.__version__}")
    for threads in (1, 2):
        torch.set_num_threads(threads)
        print(f"threads={threads} cross_entropy 25600x3416 fwd+bwd: {median_ms(ce, 20):.2f} ms")
        print(f"threads={threads} cross_entropy 25600x3416 fwd only: {median_ms(ce_fwd, 20):.2f} ms")
        print(f"threads={threads} bce_with_logits 25600 pos/neg fwd+bwd: {median_ms(bce, 200) * 1e3:.1f} us")


if __name__ == "__main__":
    main()
