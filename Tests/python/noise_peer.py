"""The other side of a Noise_XX_25519_ChaChaPoly_SHA256 handshake, using the PyPI package
noiseprotocol. Frames on stdin/stdout are 2-byte big-endian length + bytes.

usage: noise_peer.py initiator|responder PROLOGUE_HEX
After the handshake it decrypts one transport message, answers "echo:" + it, then sends a
plaintext JSON report: handshake hash, its static public key, the payloads it received.
"""
import json
import sys

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from noise.connection import Keypair, NoiseConnection


def rd():
    head = sys.stdin.buffer.read(2)
    if len(head) < 2:
        sys.exit(3)
    return sys.stdin.buffer.read(int.from_bytes(head, "big"))


def wr(b):
    sys.stdout.buffer.write(len(b).to_bytes(2, "big") + b)
    sys.stdout.buffer.flush()


def main():
    role, prologue = sys.argv[1], bytes.fromhex(sys.argv[2])
    key = X25519PrivateKey.generate()
    priv = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    pub = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    conn = NoiseConnection.from_name(b"Noise_XX_25519_ChaChaPoly_SHA256")
    conn.set_as_initiator() if role == "initiator" else conn.set_as_responder()
    conn.set_keypair_from_private_bytes(Keypair.STATIC, priv)
    conn.set_prologue(prologue)
    conn.start_handshake()
    got = []
    if role == "initiator":
        wr(conn.write_message(b"python says hello"))
        got.append(conn.read_message(rd()))
        wr(conn.write_message(b"python's identity payload"))
    else:
        got.append(conn.read_message(rd()))
        wr(conn.write_message(b"python's identity payload"))
        got.append(conn.read_message(rd()))
    assert conn.handshake_finished
    msg = conn.decrypt(rd())
    wr(conn.encrypt(b"echo:" + msg))
    wr(json.dumps({"hh": conn.get_handshake_hash().hex(), "static": pub.hex(), "payloads": [p.hex() for p in got]}).encode())


if __name__ == "__main__":
    main()
