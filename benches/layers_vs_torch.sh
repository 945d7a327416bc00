#!/usr/bin/env bash
# Issue 3's speed comparisons in one run: GEMM at recommender shapes, the 2-block causal attention
# stack, and 1-layer GRU / LSTM, forward + backward, seqrec (criterion medians) and PyTorch (the
# scripts in scripts/) back to back on 1 and 2 threads. PyTorch runs before and after seqrec, so a
# change of machine load between the two sides shows up as a spread in PyTorch's figures.
#
# Run from anywhere: bash benches/layers_vs_torch.sh [gemm|attention|rnn ...]   (default: all three)
# Needs python3 with torch (pip install torch). Prints the load average before and after.
set -euo pipefail
cd "$(dirname "$0")/.."
groups=("$@")
[ ${#groups[@]} -eq 0 ] && groups=(gemm attention rnn)

cargo bench -p seqrec-benches --no-run --bench gemm --bench attention --bench rnn >/dev/null 2>&1

criterion_medians() {
  # Criterion prints "<name>\n   time:   [low median high]" (or on one line for short names).
  awk '/^[a-z_0-9]+\// {name=$1} /time:/ {for (i=1;i<=NF;i++) if ($i ~ /^\[/) {print name": median "$(i+2)" "$(i+3); break}}'
}

torch_side() {
  case "$1" in
    gemm) python3 scripts/bench_torch.py --repeats 10 | grep -E "^(torch|---|gemm/)" ;;
    attention) python3 scripts/bench_torch_attn.py --repeats 10 ;;
    rnn) python3 scripts/bench_torch_rnn.py 20 ;;
  esac
}

seqrec_side() {
  case "$1" in
    gemm) cargo bench -p seqrec-benches --bench gemm -- gemm/ 2>/dev/null | criterion_medians ;;
    attention) SEQREC_BENCH_CPU=1 cargo bench -p seqrec-benches --bench attention 2>/dev/null \
      | tee >(grep "median of" >&2) | criterion_medians ;;
    rnn) cargo bench -p seqrec-benches --bench rnn 2>/dev/null | criterion_medians ;;
  esac
}

echo "load: $(cut -d' ' -f1-3 /proc/loadavg)  $(date -u +%FT%TZ)  $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
for g in "${groups[@]}"; do
  echo "===== $g: PyTorch (before)"
  torch_side "$g"
  echo "===== $g: seqrec"
  seqrec_side "$g"
  echo "===== $g: PyTorch (after)"
  torch_side "$g"
done
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
