#!/usr/bin/env bash
# Smoke test of the mDNS lab: avahi <-> python-zeroconf both ways across two namespaces, then a
# clean teardown. Silent and exit 0 on success; -v prints what it saw. Needs root.
#   Tests/netns/selftest.sh [-v] [PREFIX]        (PREFIX default: kst<pid mod 1000>)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
LAB=$here/lab.sh
PEER=$here/../python/zeroconf_peer.py
verbose=0; [ "${1:-}" = -v ] && { verbose=1; shift; }
P=${1:-kst$(($$ % 1000))}
LABDIR=${KIANA_LAB_ROOT:-/tmp}/kiana-lab-$P
log() { [ $verbose -eq 0 ] || echo "$*"; }
fail() { echo "selftest: $*" >&2; exit 1; }

"$LAB" down "$P"
trap '"$LAB" down "$P"' EXIT
"$LAB" up "$P"
"$LAB" avahi "$P" b >/dev/null
IPA=$("$LAB" ip "$P" a)

# 1: avahi-publish in b, zeroconf browse in a.
"$LAB" exec "$P" b avahi-publish -s "avahi peer" _kiana._tcp 4242 "id=abc" "v=1" >/dev/null 2>&1 &
out=$("$LAB" exec "$P" a python3 "$PEER" browse --ip "$IPA" --timeout 10 --count 1) \
    || fail "zeroconf did not resolve the avahi service"
log "zeroconf saw: $out"
grep -q '"event":"resolved","name":"avahi peer._kiana._tcp.local."' <<<"$out" || fail "unexpected: $out"
grep -q '"port":4242' <<<"$out" && grep -q '"txt":{"v":"1","id":"abc"}\|"txt":{"id":"abc","v":"1"}' <<<"$out" \
    || fail "unexpected port/txt: $out"

# 2: zeroconf publish in a, avahi-browse in b.
publog=$LABDIR/zc-publish.log
"$LAB" exec "$P" a python3 "$PEER" publish --ip "$IPA" --name "zc peer" --port 5151 --txt id=def \
    --seconds 30 >"$publog" 2>&1 &
for _ in $(seq 150); do grep -q '"event":"published"' "$publog" && break; sleep 0.1; done
grep -q '"event":"published"' "$publog" || fail "zeroconf publish did not report: $(cat "$publog")"
start=$EPOCHREALTIME
out=$("$LAB" exec "$P" b avahi-browse -rtp _kiana._tcp)
log "avahi-browse -rtp took $(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.2f", b-a}')s:"
log "$out"
grep -q "^=;${P}vb;IPv4;zc\\\\032peer;_kiana._tcp;local;zc-${IPA//./-}.local;$IPA;5151;\"id=def\"$" <<<"$out" \
    || fail "avahi did not resolve the zeroconf service: $out"

# 3+4: teardown leaves nothing behind.
trap - EXIT
"$LAB" down "$P"
for n in a b c br; do [ ! -e "/run/netns/$P$n" ] || fail "namespace $P$n left behind"; done
[ ! -e "$LABDIR" ] || fail "lab dir left behind"
if pgrep -f "$LABDIR/" >/dev/null; then fail "lab processes left behind"; fi
log "ok"
