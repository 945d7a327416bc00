#!/usr/bin/env python3
"""PyTorch CPU side of the seqrec-tensor speed comparison (same shapes as benches/benches/gemm.rs).

Prints the median time of each op, and GFLOP/s for the GEMMs, for torch.set_num_threads(1) and (2).
Outputs are preallocated (`out=`) where PyTorch allows it, like the Rust kernels.

    python3 scripts/bench_torch.py [--repeats 15]
"""
import argparse
import statistics
import time

import torch

GEMMS = [
    ("proj_25600x50x50", 25_600, 50, 50, False),
    ("logits_25600x50x3416", 25_600, 50, 3_416, False),
    ("logits_nt_25600x50x3416", 25_600, 50, 3_416, True),
    ("ffn_128x100x300", 128, 100, 300, False),
]


def timings(fn, repeats, min_time=0.2, clock=time.perf_counter):
    """(median, min) seconds per call; `clock=time.thread_time` measures the calling thread's CPU time
    (meaningful with one thread), which other processes on a shared machine disturb far less."""
    fn()  # warm-up (allocations, thread pool)
    # Repeat cheap ops so one sample lasts at least ~min_time / repeats.
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-7)
    inner = max(1, int(min_time / repeats / once))
    samples = []
    for _ in range(repeats):
        t0 = clock()
        for _ in range(inner):
            fn()
        samples.append((clock() - t0) / inner)
    return statistics.median(samples), min(samples)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, MKL {torch.backends.mkl.is_available()}, "
          f"oneDNN {torch.backends.mkldnn.is_available()}")
    for threads in (1, 2):
        torch.set_num_threads(threads)
        print(f"--- {threads} thread(s)")
        for name, m, k, n, tb in GEMMS:
            a = torch.rand(m, k) * 2 - 1
            b = (torch.rand(n, k) * 2 - 1).t() if tb else torch.rand(k, n) * 2 - 1
            c = torch.empty(m, n)
            s, lo = timings(lambda: torch.mm(a, b, out=c), args.repeats)
            print(f"gemm/{name}/{threads}t: median {s * 1e3:.3f} ms, {2 * m * n * k / s / 1e9:.1f} GFLOP/s "
                  f"(min {lo * 1e3:.3f} ms, {2 * m * n * k / lo / 1e9:.1f} GFLOP/s)")
            if threads == 1:
                s, lo = timings(lambda: torch.mm(a, b, out=c), args.repeats, clock=time.thread_time)
                print(f"gemm/{name}/1t thread CPU time: median {s * 1e3:.3f} ms, "
                      f"{2 * m * n * k / s / 1e9:.1f} GFLOP/s (min {lo * 1e3:.3f} ms)")
        x = torch.rand(25_600, 3_416) * 2 - 1
        y = torch.empty_like(x)
        s, lo = timings(lambda: torch.softmax(x, dim=-1, out=y), args.repeats)
        print(f"rows/softmax_25600x3416/{threads}t: median {s * 1e3:.3f} ms (min {lo * 1e3:.3f} ms)")
        torch.softmax(x, dim=-1, out=y)
        dy = torch.rand_like(x)
        # No out= variant: this one allocates its 350 MB result each call (page faults included).
        s, lo = timings(lambda: torch._softmax_backward_data(dy, y, -1, torch.float32), args.repeats)
        print(f"rows/softmax_bwd_25600x3416/{threads}t: median {s * 1e3:.3f} ms (min {lo * 1e3:.3f} ms, allocating)")
        del x, y, dy
        x = (torch.rand(25_600, 50) * 2 - 1).requires_grad_(False)
        gamma, beta = torch.rand(50), torch.rand(50)
        s, lo = timings(lambda: torch.nn.functional.layer_norm(x, (50,), gamma, beta, 1e-5), args.repeats)
        print(f"rows/layernorm_fwd_25600x50/{threads}t: median {s * 1e3:.3f} ms (min {lo * 1e3:.3f} ms)")
        xg = x.clone().requires_grad_(True)
        gg, bg = gamma.clone().requires_grad_(True), beta.clone().requires_grad_(True)
        yg = torch.nn.functional.layer_norm(xg, (50,), gg, bg, 1e-5)
        dout = torch.rand_like(yg)

        def ln_bwd():
            torch.autograd.grad(yg, (xg, gg, bg), dout, retain_graph=True)

        s, lo = timings(ln_bwd, args.repeats)
        print(f"rows/layernorm_bwd_25600x50/{threads}t: median {s * 1e3:.3f} ms (min {lo * 1e3:.3f} ms, autograd call)")


if __name__ == "__main__":
    main()
