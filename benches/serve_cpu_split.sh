#!/usr/bin/env bash
# CPU time per request by thread kind (HTTP threads vs model workers) of a running `seqrec-serve` under
# wrk (issue 7, docs/serving.md): starts SERVER_BIN on a loopback port for RUN, drives POST /v1/recommend
# with benches/wrk_recommend.lua (64 connections, 6 s, histories of HIST items), reads each thread's
# utime + stime from /proc/PID/task/*/stat before and after, and prints throughput, p99 and the CPU
# microseconds per request of the tokio threads and of the model thread(s). Needs wrk.
#
# Run from the repository root: bash benches/serve_cpu_split.sh SERVER_BIN RUN_DIR [HIST] [PORT]
# (alternate two builds a few times to compare them on a machine whose speed drifts).
set -u
cd "$(dirname "$0")/.."
bin="${1:?seqrec-serve binary}"; run="${2:?run directory}"; hist="${3:-200}"; port="${4:-18091}"
db="$(mktemp -d)"
trap 'rm -rf "$db"' EXIT
"$bin" --run "$run" --db "$db/s.sqlite" --addr "127.0.0.1:$port" >"$db/log" 2>&1 &
pid=$!
sleep 1.5
# "tokio model" CPU ticks (1/100 s) summed over the server's threads
snap() {
  for t in /proc/$pid/task/*; do echo "$(cat "$t/comm") $(awk '{print $14 + $15}' "$t/stat")"; done |
    awk '{k = ($1 ~ /tokio/) ? "tokio" : (($1 ~ /model/) ? "model" : "other"); a[k] += $2}
         END {print a["tokio"] + 0, a["model"] + 0}'
}
before=$(snap)
out=$(wrk -t1 -c64 -d6s --latency -s benches/wrk_recommend.lua "http://127.0.0.1:$port" -- "$run/best/items.json" "$hist")
after=$(snap)
n=$(echo "$out" | awk '/requests in/ {print $1}')
echo "$(basename "$bin"): $(echo "$out" | awk '/Requests\/sec/ {print $2}') rec/s, p99 $(echo "$out" | awk '$1 == "99%" {print $2}')," \
  "CPU per request: $(echo "$before $after $n" | awk '{printf "tokio %.0f us, model %.0f us", ($3 - $1) * 1e4 / $5, ($4 - $2) * 1e4 / $5}')"
kill -TERM $pid
wait $pid
