"""Independent CBOR check for KI_ana, using the PyPI packages cbor2 and cryptography.

mode "reencode": reads JSON {"items": [hex, ...]} on stdin; for each item decodes it with cbor2
and re-encodes it canonically; prints JSON {"items": [hex, ...]}.
mode "make-entry": writes a signed entry built entirely in Python: prints JSON
{"entry": hex, "id": hex, "author": hex}.
"""
import hashlib
import json
import sys

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def reencode():
    req = json.load(sys.stdin)
    out = []
    for h in req["items"]:
        obj = cbor2.loads(bytes.fromhex(h))
        out.append(cbor2.dumps(obj, canonical=True).hex())
    json.dump({"items": out}, sys.stdout)


def make_entry():
    key = Ed25519PrivateKey.generate()
    author = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    entry = {
        "v": 1,
        "net": hashlib.sha256(b"python network").digest(),
        "author": author,
        "seq": 300,
        "hlc": [1764288000123, 7],
        "kind": "knowledge.put",
        "payload": {"id": bytes(range(16)), "title": "Grüße aus Python", "text": "written by cbor2",
                    "tags": ["interop", "python"], "source": "cbor2"},
    }
    unsigned = cbor2.dumps(entry, canonical=True)
    entry_id = hashlib.sha256(unsigned).digest()
    entry["sig"] = key.sign(b"KIANA-ENTRY-V1" + entry_id)
    json.dump({"entry": cbor2.dumps(entry, canonical=True).hex(), "id": entry_id.hex(), "author": author.hex()}, sys.stdout)


if __name__ == "__main__":
    {"reencode": reencode, "make-entry": make_entry}[sys.argv[1]]()
