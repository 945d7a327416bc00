#!/usr/bin/env bash
# Training throughput, seqrec against PyTorch, back to back on the same machine (issue 4):
# the mean epoch time over `epochs` epochs of SASRec-BCE, SASRec-CE and GRU4Rec on ML-1M with the same
# hyper-parameters, 2 threads each (THREADS=1 for one). Prints one JSON line per implementation and
# model (PyTorch: one per epoch).
#
# Run from the repository root: bash benches/train_vs_torch.sh [epochs=2]
set -euo pipefail
cd "$(dirname "$0")/.."
epochs="${1:-2}"
threads="${THREADS:-2}"
export SEQREC_DATA_DIR="${SEQREC_DATA_DIR:-$(cd ../shared/data && pwd)}"
cargo build --release -p xtask --quiet
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
seqrec() { # name, xtask args...
  local name="$1"; shift
  ./target/release/xtask train --quiet --epochs "$epochs" --eval-every 1000 --patience 0 \
    --threads "$threads" --out "$out/$name" "$@" >/dev/null
  python3 - "$out/$name/metrics.json" "$name" "$threads" <<'PY'
import json, sys
path, name, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
t = json.load(open(path))["train"]
print(json.dumps({"impl": "seqrec", "model": name, "epochs": t["epochs"], "threads": threads,
                  "seconds_per_epoch": round(t["seconds_per_epoch"], 2),
                  "sequences_per_second": round(t["sequences_per_second"], 1)}))
PY
}
for model in sasrec-bce sasrec-ce gru4rec; do
  case "$model" in
    sasrec-bce) seqrec "$model" --model sasrec --set model.loss=bce --set model.hidden=50 --set model.dropout=0.2 ;;
    sasrec-ce) seqrec "$model" --model sasrec --set model.loss=ce --set model.hidden=50 --set model.dropout=0.2 ;;
    gru4rec) seqrec "$model" --model gru4rec ;;
  esac
  python3 benches/torch_train_epoch.py --threads "$threads" --models "$model" --epochs "$epochs"
done
