#!/usr/bin/env python3
"""PyTorch side of benches/benches/rnn.rs: nn.GRU / nn.LSTM (1 layer, input 100, hidden 100,
batch_first) at batch 128, length 50, f32 CPU; forward + sum(y).backward() (input requires grad, as in
the Rust bench which computes dx). Median of repeats, with torch.set_num_threads(1) and (2); with one
thread also the calling thread's CPU time (time.thread_time), which a loaded machine disturbs less.

Usage: python3 scripts/bench_torch_rnn.py [repeats]
"""
import statistics
import sys
import time

import torch

BATCH, SEQ, D = 128, 50, 100


def bench(cls, threads, repeats):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = cls(D, D, num_layers=1, batch_first=True)
    x = torch.randn(BATCH, SEQ, D, requires_grad=True)

    def once():
        net.zero_grad(set_to_none=False)
        x.grad = None
        y, _ = net(x)
        y.sum().backward()

    for _ in range(5):
        once()
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.thread_time()
        once()
        times.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    return statistics.median(times), statistics.median(cpu)


def main():
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    print(f"torch {torch.__version__}, batch {BATCH}, seq {SEQ}, d {D}, forward+backward, median of {repeats}")
    for threads in (1, 2):
        for name, cls in (("gru", torch.nn.GRU), ("lstm", torch.nn.LSTM)):
            wall, cpu = bench(cls, threads, repeats)
            extra = f", calling-thread CPU time {cpu * 1e3:.2f} ms" if threads == 1 else ""
            print(f"{name}/threads={threads}: wall {wall * 1e3:.2f} ms{extra}")


if __name__ == "__main__":
    main()
