#!/usr/bin/env bash
# Builds the runtime image's file tree: the kiana binary, exactly the shared libraries `ldd`
# says it loads, and a non-root user. deploy/Dockerfile copies this tree into an empty image;
# RuntimeImageTests runs the same tree in a chroot, so what the image would run is tested.
# usage: scripts/runtime-rootfs.sh KIANA_BINARY DEST [MODEL_DIR]
set -euo pipefail
bin=${1:?usage: runtime-rootfs.sh KIANA_BINARY DEST [MODEL_DIR]}
dest=${2:?usage: runtime-rootfs.sh KIANA_BINARY DEST [MODEL_DIR]}
models=${3:-}
[ -x "$bin" ] || { echo "runtime-rootfs: $bin is not an executable" >&2; exit 1; }
mkdir -p "$dest/usr/local/bin" "$dest/etc" "$dest/tmp" "$dest/data" "$dest/usr/local/share/kiana/models"
chmod 1777 "$dest/tmp"
install -m 0755 "$bin" "$dest/usr/local/bin/kiana"
# Every library the dynamic loader resolves, and the loader itself, at the same paths.
ldd "$bin" | awk '/=> \// { print $3 } /^[ \t]*\// { print $1 }' | sort -u | while read -r lib; do
    mkdir -p "$dest$(dirname "$lib")"
    cp -L "$lib" "$dest$lib"
done
# The node runs as kiana (uid/gid 10001), owning only /data.
echo "kiana:x:10001:10001:KI_ana:/data:/usr/sbin/nologin" > "$dest/etc/passwd"
echo "kiana:x:10001:" > "$dest/etc/group"
chown 10001:10001 "$dest/data" 2>/dev/null || true
chmod 0700 "$dest/data"
if [ -n "$models" ] && [ -d "$models" ]; then
    cp -rL "$models/." "$dest/usr/local/share/kiana/models/"
    # Readable by the node's user (make setup leaves them private to root).
    chmod -R a+rX "$dest/usr/local/share/kiana/models"
fi
