#!/usr/bin/env bash
# Serving latency and throughput (issue 7, docs/serving.md): starts the release `seqrec-serve` on a loopback
# port for a SASRec run and a GRU4Rec run, drives it with `seqrec-load` (1 and 64 connections, 8 s each)
# and, for SASRec, also with wrk when it is installed (benches/wrk_recommend.lua; random histories of 50 and
# 200 items, and the ML-1M users' own histories), prints the RSS of the
# server, and stops it with SIGTERM.
#
# Run from the repository root: bash benches/serve_bench.sh SASREC_RUN_DIR GRU4REC_RUN_DIR
# (e.g. after `cargo xtask train --epochs 3 --out /tmp/serve-sasrec` and
#  `cargo xtask train --model gru4rec --epochs 1 --out /tmp/serve-gru`).
set -u
cd "$(dirname "$0")/.."
sasrec_run="${1:?SASRec run directory}"
gru_run="${2:?GRU4Rec run directory}"
cargo build --release -p seqrec-serve --bins --quiet
B=target/release
db="$(mktemp -d)"
trap 'rm -rf "$db"' EXIT
uptime
for model in sasrec gru; do
  run="$sasrec_run"; [ "$model" = gru ] && run="$gru_run"
  $B/seqrec-serve --run "$run" --db "$db/$model.sqlite" --addr 127.0.0.1:18080 --token t >"$db/$model.log" 2>&1 &
  pid=$!
  sleep 3
  if [ "$model" = sasrec ]; then
    for c in 1 64; do for h in 50 200; do
      echo "== sasrec, $c connections, history $h"
      $B/seqrec-load --addr 127.0.0.1:18080 --run "$run" --connections "$c" --seconds 8 --history-len "$h" | tail -3
    done; done
    # The same load from wrk (one event-loop thread: it takes less of the two cores than
    # seqrec-load's thread per connection), when it is installed (apt-get install wrk).
    # History "real": the ML-1M users' own histories (benches/ml1m_histories.sh; a SASRec run on ml-1m).
    if command -v wrk >/dev/null; then
      bash benches/ml1m_histories.sh >"$db/real.txt"
      for c in 1 64; do for h in 50 200 real; do
        hist="$h"; [ "$h" = real ] && hist="$db/real.txt"
        echo "== sasrec, wrk, $c connections, history $h"
        wrk -t1 -c"$c" -d8s --latency -s benches/wrk_recommend.lua http://127.0.0.1:18080 \
          -- "$run/best/items.json" "$hist" | grep -E 'Requests/sec|^ +(50|90|99)%|Non-2xx|Socket errors'
      done; done
    fi
  else
    for c in 1 64; do
      echo "== gru4rec events + recommendations, $c connections"
      $B/seqrec-load --addr 127.0.0.1:18080 --run "$run" --mode user --token t --connections "$c" --seconds 8 | tail -4
    done
  fi
  grep VmRSS /proc/$pid/status
  kill -TERM $pid
  wait $pid
done
uptime
