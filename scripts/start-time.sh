#!/usr/bin/env bash
# Start-up time of a serving node over a big ledger (the start-up check, decision 73): one data
# directory of N entries (N/10 blocks, N knowledge items), then each binary given starts on it
# in turn, R rounds interleaved (this machine drifts). Printed beside it, the floor any full
# check pays: SQLite's `integrity_check` and a raw read of every entry and item row (sqlite3 CLI).
# Usage: scripts/start-time.sh N ROUNDS path/to/kiana [path/to/other-kiana ...]
#   (loopback ports 18201, 18571; the data directory is made under $TMPDIR and removed)
set -euo pipefail
N=${1:?usage: start-time.sh N ROUNDS kiana [kiana ...]}; R=${2:?rounds}; shift 2
W=$(mktemp -d "${TMPDIR:-/tmp}/kiana-start.XXXXXX"); mkdir -p $W/notes
trap 'pkill -f "serve --data-dir $W/d" 2>/dev/null || true; rm -rf "$W"' EXIT
for f in $(seq 0 $((N/10-1))); do
  { for s in 0 1 2 3 4 5 6 7 8 9; do printf '## Note %d-%d\n\nfile %d section %d. The quick brown fox jumps over the lazy dog.\n\n' $f $s $f $s; done; } > $W/notes/n$f.md
done
$1 init --data-dir $W/d --name st >/dev/null
$1 ingest $W/notes --no-embed --data-dir $W/d >/dev/null 2>&1
echo "ledger: $N entries, $(du -m $W/d/kiana.sqlite | cut -f1) MB; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, $(date -u +%F)"
ms() { echo "($(date +%s%N) - $1) / 1000000" | bc; }
# The first start verifies the signatures of what ingest sealed; later starts are what is timed.
"$1" serve --data-dir $W/d --discovery off --port 18201 --p2p-port 18571 > $W/log 2>&1 & P=$!
until curl -sf http://127.0.0.1:18201/health >/dev/null 2>&1; do sleep 0.05; done; kill $P; wait $P || true
for round in $(seq 1 $R); do
  line="round $round:"
  for bin in "$@"; do
    t=$(date +%s%N); "$bin" serve --data-dir $W/d --discovery off --port 18201 --p2p-port 18571 > $W/log 2>&1 & P=$!
    until curl -sf http://127.0.0.1:18201/health >/dev/null 2>&1; do kill -0 $P || { cat $W/log; exit 1; }; sleep 0.02; done
    line="$line $(ms $t) ms ($(basename $(dirname $bin))/$(basename $bin))"; kill $P; wait $P || true
  done
  t=$(date +%s%N); sqlite3 $W/d/kiana.sqlite "PRAGMA integrity_check" >/dev/null; ic=$(ms $t)
  t=$(date +%s%N); sqlite3 $W/d/kiana.sqlite "SELECT sum(length(raw)) FROM entry; SELECT sum(length(state)) + sum(length(text)) FROM item" >/dev/null; rd=$(ms $t)
  echo "$line; floor: integrity_check $ic ms + raw read $rd ms"
done
