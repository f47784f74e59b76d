#!/usr/bin/env python3
"""Opens a KI_ana backup independently of the Swift code: hashlib.scrypt, the `cryptography`
package's ChaCha20-Poly1305 and `cbor2`, following docs/decisions.md 96. Prints JSON: each file's
size and SHA-256, and for kiana.sqlite the canonical chain's length read with sqlite3. Exit 2 on
a wrong passphrase, 3 on a damaged file.

usage: backup_open.py BACKUP PASSPHRASE_FILE OUT_DIR
"""
import hashlib, hmac, json, os, sqlite3, struct, sys

import cbor2
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305


def main():
    path, pass_file, out = sys.argv[1], sys.argv[2], sys.argv[3]
    passphrase = open(pass_file, "rb").read().split(b"\n")[0]
    data = open(path, "rb").read()
    if data[:8] != b"KIANABK1":
        sys.exit("not a backup")
    (hlen,) = struct.unpack(">I", data[8:12])
    header_bytes = data[12:12 + hlen]
    h = cbor2.loads(header_bytes)
    aad = data[:12 + hlen]
    key = hashlib.scrypt(passphrase, salt=h["salt"], n=1 << h["logN"], r=h["r"], p=h["p"], maxmem=1 << 30, dklen=32)
    if hmac.new(key, b"kiana backup passphrase check", hashlib.sha256).digest()[:16] != h["check"]:
        print("wrong passphrase", file=sys.stderr)
        sys.exit(2)
    aead = ChaCha20Poly1305(key)
    pos, index, plain, last = 12 + hlen, 0, bytearray(), False
    try:
        while not last:
            (n,) = struct.unpack(">I", data[pos:pos + 4])
            body = data[pos + 4:pos + 4 + n]
            if len(body) != n:
                raise ValueError("cut short")
            pos += 4 + n
            for flag in (0, 1):
                nonce = h["nonce"] + struct.pack(">I", index) + bytes([flag])
                try:
                    plain += aead.decrypt(nonce, body, aad)
                    last = flag == 1
                    break
                except Exception:
                    if flag == 1:
                        raise
            index += 1
        if pos != len(data):
            raise ValueError("data after the end")
    except Exception as e:
        print(f"damaged: {e!r}", file=sys.stderr)
        sys.exit(3)
    files, p = {}, 0
    os.makedirs(out, exist_ok=True)
    while True:
        (nl,) = struct.unpack(">H", plain[p:p + 2]); p += 2
        if nl == 0:
            break
        name = plain[p:p + nl].decode(); p += nl
        (size,) = struct.unpack(">Q", plain[p:p + 8]); p += 8
        content = bytes(plain[p:p + size]); p += size
        open(os.path.join(out, name), "wb").write(content)
        files[name] = {"size": size, "sha256": hashlib.sha256(content).hexdigest()}
    db = sqlite3.connect(os.path.join(out, "kiana.sqlite"))
    chain = db.execute("SELECT COUNT(*) FROM chain").fetchone()[0]
    print(json.dumps({"files": files, "chain": chain, "created": h["created"]}))


if __name__ == "__main__":
    main()
