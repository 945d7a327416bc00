#!/usr/bin/env bash
# Writes the MovieLens-1M users' histories for benches/wrk_recommend.lua: one line per user, the movie
# ids they rated, oldest first (ties in time kept in file order), separated by spaces.
#
# Run from anywhere: bash benches/ml1m_histories.sh > /tmp/ml1m-histories.txt
# (reads ml-1m-ratings.dat, "UserID::MovieID::Rating::Timestamp", from SEQREC_DATA_DIR, default ../shared/data).
set -eu
data="${SEQREC_DATA_DIR:-$(dirname "$0")/../../shared/data}"
awk -F'::' '{print $1, $4, NR, $2}' "$data/ml-1m-ratings.dat" |
  sort -k1,1n -k2,2n -k3,3n |
  awk '$1 != user { if (NR > 1) print line; user = $1; line = $4; next } { line = line " " $4 }
       END { print line }'
