#!/usr/bin/env bash
# Restart cost after a big sync (decision 116): node A holds N entries (N/10 blocks), B joins
# and receives them, then B restarts three times: with the verified mark as sync left it, with
# the mark removed (what every start did before decision 116), and with the mark again.
# Usage: scripts/restart-after-sync.sh path/to/kiana [N]   (loopback ports 18100-18101, 18470-18471)
set -euo pipefail
BIN=${1:?usage: restart-after-sync.sh path/to/kiana [entries]}; N=${2:-20000}
W=$(mktemp -d "${TMPDIR:-/tmp}/kiana-restart.XXXXXX"); mkdir -p $W/notes
trap 'pkill -f "kiana serve --data-dir $W" 2>/dev/null || true; rm -rf "$W"' EXIT
A=$W/a; B=$W/b
for f in $(seq 0 $((N/10-1))); do
  { for s in 0 1 2 3 4 5 6 7 8 9; do printf '## Note %d-%d\n\nfile %d section %d. The quick brown fox jumps over the lazy dog.\n\n' $f $s $f $s; done; } > $W/notes/n$f.md
done
$BIN init --data-dir $A --name rm >/dev/null
t=$(date +%s.%N); $BIN ingest $W/notes --no-embed --data-dir $A >/dev/null 2>&1; echo "ingest: $(echo "$(date +%s.%N) - $t" | bc) s"
serve() { KIANA_LOG_LEVEL=info $BIN serve --data-dir $1 --discovery off --name $2 --p2p-host 127.0.0.1 --port $3 --p2p-port $4 > $W/$2.log 2>&1 & echo $!; }
stop() { kill $1; while kill -0 $1 2>/dev/null; do sleep 0.05; done; }
ready() { for i in $(seq 1 1200); do curl -sf http://127.0.0.1:$1/health >/dev/null 2>&1 && return 0; sleep 0.05; done; return 1; }
PA=$(serve $A a 18100 18470); ready 18100
mkfifo $W/pin
( $BIN pair --data-dir $A --timeout 90 < $W/pin > $W/pair.out 2>&1 ) & PP=$!
exec 7>$W/pin
sleep 2
$BIN join 127.0.0.1:18470 --data-dir $B --name b --timeout 90 > $W/join.out 2>&1 & PJ=$!
for i in $(seq 1 200); do grep -q "Pairing code:" $W/join.out && break; sleep 0.2; done
for i in $(seq 1 200); do grep -q "asks to join" $W/pair.out && break; sleep 0.2; done
code=$(grep "Pairing code:" $W/join.out | head -1 | awk -F: '{print $NF}' | tr -d ' ')
echo "$code" >&7; exec 7>&-
wait $PP; wait $PJ
PB=$(serve $B b 18101 18471); ready 18101
ha=$(curl -s http://127.0.0.1:18100/health | python3 -c 'import json,sys;print(json.load(sys.stdin)["height"])')
t=$(date +%s.%N)
for i in $(seq 1 3000); do hb=$(curl -s http://127.0.0.1:18101/health | python3 -c 'import json,sys;print(json.load(sys.stdin)["height"])'); [ "$hb" = "$ha" ] && break; sleep 0.2; done
echo "B synced to height $hb (A $ha) in $(echo "$(date +%s.%N) - $t" | bc) s"
stop $PA
for run in mark nomark mark2; do
  stop $PB
  [ $run = nomark ] && sqlite3 $B/kiana.sqlite "DELETE FROM setting WHERE key='verified'"
  t=$(date +%s.%N); PB=$(serve $B b 18101 18471); ready 18101
  echo "restart ($run): ready in $(echo "$(date +%s.%N) - $t" | bc) s; $(grep -o 'ledger checked.*' $W/b.log | head -1)"
done
stop $PB
