#!/usr/bin/env bash
# A/B of two seqrec-serve binaries (docs/serving.md): for each round, starts build A on a loopback port,
# drives SASRec `POST /v1/recommend` with wrk at 1 and 64 connections (history HIST, 8 s each), stops it,
# then does the same for build B. Alternating the builds keeps the machine's minute-to-minute drift out
# of the comparison; one line per build, round and connection count.
#
# Run from the repository root: bash benches/serve_ab.sh BIN_A BIN_B RUN_DIR [ROUNDS] [HIST]
# (copy each build's target/release/seqrec-serve aside first; needs wrk: apt-get install wrk).
set -u
cd "$(dirname "$0")/.."
bin_a="${1:?first seqrec-serve binary}"
bin_b="${2:?second seqrec-serve binary}"
run="${3:?SASRec run directory}"
rounds="${4:-4}"
hist="${5:-200}"
port=18081
for round in $(seq "$rounds"); do
  for side in A B; do
    bin="$bin_a"; [ "$side" = B ] && bin="$bin_b"
    db="$(mktemp -d)"
    "$bin" --run "$run" --db "$db/ab.sqlite" --addr "127.0.0.1:$port" --token t >"$db/log" 2>&1 &
    pid=$!
    sleep 2
    for c in 1 64; do
      out="$(wrk -t1 -c"$c" -d8s --latency -s benches/wrk_recommend.lua "http://127.0.0.1:$port" \
        -- "$run/best/items.json" "$hist")"
      rps="$(echo "$out" | awk '/Requests\/sec/ {print $2}')"
      p50="$(echo "$out" | awk '$1 == "50%" {print $2}')"
      p99="$(echo "$out" | awk '$1 == "99%" {print $2}')"
      errors="$(echo "$out" | grep -E 'Non-2xx|Socket errors' | tr '\n' ' ')"
      echo "$(date +%H:%M:%S) round $round $side c=$c rec/s=$rps p50=$p50 p99=$p99 $errors"
    done
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null
    rm -rf "$db"
  done
done
