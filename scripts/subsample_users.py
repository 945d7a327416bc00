#!/usr/bin/env python3
"""How precise is a metric averaged over a random subset of users?

SASRec's reference code (`util.py::evaluate`) scores a random 10,000 users when a dataset has more;
its published figure is one such draw. Given the per-user CSV of a run
(`cargo xtask eval --run RUN --per-user users.csv`), this prints, for each metric, the mean over all
users, the per-user standard deviation, the standard error of a mean over `n` users drawn without
replacement (finite-population corrected), the spread of `draws` actual resamples, and how often such a
resample reaches `target`.

Usage: python3 scripts/subsample_users.py users.csv [--n 10000] [--draws 400]
       [--target NDCG@10=0.536 --target HR@10=0.741]
"""
import argparse
import csv
import math
import random
import statistics


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("csv")
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--draws", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target", action="append", default=[], help="METRIC=VALUE, e.g. NDCG@10=0.536")
    args = ap.parse_args()
    rows = list(csv.DictReader(open(args.csv)))
    total = len(rows)
    n = min(args.n, total)
    targets = dict(t.split("=") for t in args.target) or {"NDCG@10": None, "HR@10": None}
    rng = random.Random(args.seed)
    print(f"{total} users, subsets of {n}, {args.draws} resamples")
    for metric, target in targets.items():
        values = [float(r[metric]) for r in rows]
        mean, sd = statistics.fmean(values), statistics.pstdev(values)
        fpc = math.sqrt((total - n) / (total - 1)) if total > 1 else 0.0
        means = [statistics.fmean(rng.sample(values, n)) for _ in range(args.draws)]
        line = (f"{metric}: mean {mean:.4f}, per-user sd {sd:.3f}, standard error of a {n}-user mean "
                f"{sd / math.sqrt(n) * fpc:.4f} (resamples: sd {statistics.pstdev(means):.4f})")
        if target is not None:
            share = sum(m >= float(target) for m in means) / len(means)
            line += f", resamples >= {target}: {share:.0%}"
        print(line)


if __name__ == "__main__":
    main()
