#!/usr/bin/env bash
# Installs what KI_ana needs that a fresh Debian 12 + Swift machine lacks. Idempotent and quiet
# when everything is already there.
set -euo pipefail

need_apt=()
for pkg in libsqlite3-dev sqlite3 curl; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${need_apt[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
# Python packages used by the test suite as independent implementations.
need_pip=()
for spec in "cbor2:cbor2" "cryptography:cryptography" "noise:noiseprotocol"; do
    mod=${spec%%:*}; pkg=${spec##*:}
    "$PY" -c "import $mod" 2>/dev/null || need_pip+=("$pkg")
done
if [ ${#need_pip[@]} -gt 0 ]; then
    echo "setup: installing Python packages: ${need_pip[*]}"
    "$PY" -m pip install -q --disable-pip-version-check "${need_pip[@]}"
fi
