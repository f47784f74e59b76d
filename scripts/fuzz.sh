#!/usr/bin/env bash
# Builds the libFuzzer targets in Fuzz/ (each compiled alone with the dependency-free KianaNet or
# KianaCore sources it tests, with the address sanitizer) and runs each for a bounded time.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     defaults: 20 seconds, all targets (dns frames cbor)
#
# Corpora live in .build/fuzz/corpus-TARGET (kept between runs, not in git); the DNS corpus is
# seeded with packets python-zeroconf builds, the CBOR corpus with canonical encodings cbor2
# writes. A crash leaves its input in .build/fuzz/ and fails.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-20}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(dns frames cbor)
OUT=.build/fuzz
mkdir -p "$OUT"

sources_for() {
    case "$1" in
        dns) echo "Sources/KianaNet/DNSMessage.swift Sources/KianaNet/KianaNetError.swift Sources/KianaCore/ErrorCode.swift" ;;
        frames) echo "Sources/KianaNet/Framing.swift Sources/KianaNet/KianaNetError.swift Sources/KianaCore/ErrorCode.swift" ;;
        cbor) echo "Sources/KianaCore/CBOR.swift Sources/KianaCore/KianaCoreError.swift Sources/KianaCore/ErrorCode.swift" ;;
        *) echo "fuzz.sh: unknown target $1" >&2; exit 2 ;;
    esac
}

for t in "${TARGETS[@]}"; do
    srcs=$(sources_for "$t")
    bin="$OUT/fuzz-$t"
    # Rebuild only when a source changed.
    if [ ! -x "$bin" ] || [ -n "$(find Fuzz/$t.swift $srcs -newer "$bin" 2>/dev/null)" ]; then
        # shellcheck disable=SC2086
        # (ld.gold's "cannot export local symbol __asan_…" warnings are noise and are dropped.)
        if ! swiftc -sanitize=fuzzer,address -parse-as-library -O -module-name Fuzz$t Fuzz/$t.swift $srcs -o "$bin" \
                >"$OUT/build-$t.log" 2>&1; then
            grep -v "Cannot export local symbol" "$OUT/build-$t.log" >&2
            exit 1
        fi
    fi
    corpus="$OUT/corpus-$t"
    mkdir -p "$corpus"
    if [ "$t" = dns ] && [ -z "$(ls -A "$corpus")" ]; then
        python3 Tests/python/dns_crosscheck.py seeds "$corpus"
    fi
    if [ "$t" = cbor ] && [ -z "$(ls -A "$corpus")" ]; then
        # Core deterministic encodings (cbor2, canonical=True) of the kinds of items KI_ana uses.
        python3 - "$corpus" <<'PY'
import os, sys
import cbor2
items = [
    0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1, -1, -24, -25, -2**64,
    b"", bytes(range(32)), "", "a", "Grüße", "é" * 30, True, False, None,
    [], [1, [2, [3, []]]], {}, {"b": 1, "a": 2, "aa": [b"x"]}, {1: "x", -1: "y", "k": None, b"k": True},
    {"v": 1, "author": bytes(32), "seq": 300, "hlc": [1764288000123, 7], "kind": "knowledge.put",
     "payload": {"id": bytes(range(16)), "title": "T", "tags": ["a", "b"]}},
]
for i, obj in enumerate(items):
    with open(os.path.join(sys.argv[1], f"seed-{i:02d}"), "wb") as f:
        f.write(cbor2.dumps(obj, canonical=True))
PY
    fi
    log="$OUT/fuzz-$t.log"
    # SWIFT_BACKTRACE=enable=no: the Swift backtracer, run under the address sanitizer, trips an
    # ASan "unknown-crash" in its own memory server and leaves a swift-backtrace process behind;
    # libFuzzer's and ASan's reports are enough.
    if ! SWIFT_BACKTRACE=enable=no "$bin" "$corpus" -max_total_time="$SECONDS_EACH" -max_len=9000 -timeout=10 -rss_limit_mb=2048 \
            -artifact_prefix="$OUT/crash-$t-" -print_final_stats=1 >"$log" 2>&1; then
        tail -40 "$log" >&2
        echo "fuzz: $t FAILED (input saved as $OUT/crash-$t-*)" >&2
        exit 1
    fi
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo "?")
    echo "fuzz: $t ok — $runs inputs in ${SECONDS_EACH}s, coverage $cov edges, corpus $(ls "$corpus" | wc -l) files"
done
