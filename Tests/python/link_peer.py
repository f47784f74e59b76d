"""An independent implementation of a KI_ana device link, built on PyPI `noiseprotocol`
(Noise_XX_25519_ChaChaPoly_SHA256), `cryptography` (Ed25519, X25519) and `cbor2`, used by the
Swift tests as the other side of real loopback TCP connections.

Wire format (docs/decisions.md): 15-byte preamble "KIANA" 1 mode tag8; prologue
"KIANA-LINK-V1" + preamble (+ network ID for member links); frames u16-BE length + Noise message;
handshake payload CBOR {"id": Ed25519 key, "sig": sig over "KIANA-NOISE-V1" + static key};
transport stream of u32-BE length + CBOR {"k","t","i","v","b"}; first message "hello".

usage:
  link_peer.py connect HOST:PORT --network HEX|- --scenario NAME [--rekey N] [--identity-out FILE]
  link_peer.py listen --network HEX --scenario NAME     (prints {"port": P} then serves one link)
Scenarios: echo (requests echo/unknown/bad kind, checks answers), rekey (200 messages each way
with rekeying every --rekey messages), bad-version, forge (signature over another static key),
stall (preamble and half a handshake message, then silence), oversized (a frame announcing
more than allowed inside the transport), garbage (a well-encrypted non-CBOR message).
Reports JSON lines on stdout; exit 0 when the scenario behaved as expected.
"""
import argparse
import hashlib
import json
import socket
import struct
import sys
import time

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from noise.connection import Keypair, NoiseConnection


def raw(key):
    if hasattr(key, "private_bytes"):
        return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def report(**kw):
    print(json.dumps(kw), flush=True)


class Link:
    def __init__(self, sock, initiator, network, mode, scenario, rekey):
        self.sock, self.buf = sock, b""
        self.scenario, self.rekey_every = scenario, rekey
        self.ident = Ed25519PrivateKey.generate()
        self.static = X25519PrivateKey.generate()
        self.sent = self.received = self.served = 0
        self.plain = b""
        self.initiator, self.network, self.mode = initiator, network, mode

    def recv_exact(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("closed by peer")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def frame(self):
        n = int.from_bytes(self.recv_exact(2), "big")
        return self.recv_exact(n)

    def send_frame(self, body):
        self.sock.sendall(len(body).to_bytes(2, "big") + body)

    def identity_payload(self, forge=False):
        static_pub = raw(self.static.public_key())
        signed = raw(X25519PrivateKey.generate().public_key()) if forge else static_pub
        sig = self.ident.sign(b"KIANA-NOISE-V1" + signed)
        return cbor2.dumps({"id": raw(self.ident.public_key()), "sig": sig}, canonical=True)

    def handshake(self):
        if self.initiator:
            tag = hashlib.sha256(self.network).digest()[:8] if self.network else bytes(8)
            preamble = b"KIANA" + bytes([1, 0 if self.mode == "member" else 1]) + tag
            self.sock.sendall(preamble)
        else:
            preamble = self.recv_exact(15)
        prologue = b"KIANA-LINK-V1" + preamble + (self.network if preamble[6] == 0 else b"")
        n = NoiseConnection.from_name(b"Noise_XX_25519_ChaChaPoly_SHA256")
        n.set_as_initiator() if self.initiator else n.set_as_responder()
        n.set_keypair_from_private_bytes(Keypair.STATIC, raw(self.static))
        n.set_prologue(prologue)
        n.start_handshake()
        forge = self.scenario == "forge"
        if self.initiator:
            m1 = n.write_message(b"")
            if self.scenario == "stall":
                self.sock.sendall(len(m1).to_bytes(2, "big") + m1[:10])
                report(event="stalling")
                try:
                    while self.sock.recv(1024):
                        pass
                except OSError:
                    pass
                report(event="closed-by-peer")
                return False
            self.send_frame(m1)
            peer = n.read_message(self.frame())
            self.send_frame(n.write_message(self.identity_payload(forge)))
        else:
            n.read_message(self.frame())
            self.send_frame(n.write_message(self.identity_payload(forge)))
            peer = n.read_message(self.frame())
        p = cbor2.loads(peer)
        report(event="handshake", handshake_hash=n.get_handshake_hash().hex(), peer_identity=p["id"].hex(),
               identity=raw(self.ident.public_key()).hex())
        self.noise = n
        return True

    def send(self, kind, typ, ident, body, version=1, raw_bytes=None):
        msg = raw_bytes if raw_bytes is not None else cbor2.dumps({"k": kind, "t": typ, "i": ident, "v": version, "b": body}, canonical=True)
        stream = len(msg).to_bytes(4, "big") + msg
        for i in range(0, len(stream), 65519):
            self.send_frame(self.noise.encrypt(stream[i:i + 65519]))
            self.sent += 1
            if self.rekey_every and self.sent % self.rekey_every == 0:
                self.noise.noise_protocol.cipher_state_encrypt.rekey()

    def message(self):
        while True:
            if len(self.plain) >= 4:
                n = int.from_bytes(self.plain[:4], "big")
                if len(self.plain) >= 4 + n:
                    m, self.plain = self.plain[4:4 + n], self.plain[4 + n:]
                    return cbor2.loads(m)
            self.plain += self.noise.decrypt(self.frame())
            self.received += 1
            if self.rekey_every and self.received % self.rekey_every == 0:
                self.noise.noise_protocol.cipher_state_decrypt.rekey()

    def hello(self, versions=(1,)):
        self.send(5, "hello", 0, {"versions": list(versions), "info": {"name": "python"}})
        m = self.message()
        assert m["t"] == "hello", m
        return m

    def answer(self, m):
        """Answers a request from the Swift side (echo; ping)."""
        if m["k"] == 0:
            if m["t"] in ("echo", "ping"):
                self.send(1, m["t"], m["i"], m["b"])
                if m["t"] == "echo":
                    self.served += 1
            else:
                self.send(2, m["t"], m["i"], {"code": "unknown-type", "message": "unknown"})
            return True
        return False

    def request(self, typ, body, ident, version=1):
        self.send(0, typ, ident, body, version)
        while True:
            m = self.message()
            if self.answer(m):
                continue
            if m.get("i") == ident:
                return m


def run(link):
    sc = link.scenario
    if not link.handshake():
        return 0
    if sc == "forge":
        try:
            link.hello()
            report(event="accepted")
            return 1
        except (EOFError, ConnectionError, AssertionError) as e:
            report(event="refused", reason=str(e))
            return 0
    if sc == "bad-version":
        link.send(5, "hello", 0, {"versions": [99], "info": {}})
        try:
            while True:
                m = link.message()
                if m["t"] == "bye":
                    report(event="bye", reason=m["b"].get("reason"))
        except (EOFError, ConnectionError):
            report(event="closed-by-peer")
        return 0
    hello = link.hello()
    report(event="hello", peer=hello["b"])
    if sc == "echo":
        payload = {"text": "from python", "blob": bytes(range(256)) * 1200}  # ~300 kB: spans frames
        r = link.request("echo", payload, 1)
        ok_echo = r["k"] == 1 and r["b"] == payload
        r2 = link.request("no-such-type", {}, 2)
        ok_unknown = r2["k"] == 2 and r2["b"]["code"] == "unknown-type"
        link.send(9, "weird-kind", 3, {})
        while True:
            r3 = link.message()
            if not link.answer(r3):
                break
        ok_kind = r3["k"] == 2 and r3["i"] == 3 and r3["b"]["code"] == "unknown-kind"
        r4 = link.request("echo", {"after": "errors"}, 4)
        ok_alive = r4["k"] == 1 and r4["b"] == {"after": "errors"}
        # Let the Swift side ask us something (its test requests "echo" from python).
        deadline = time.time() + 5
        link.sock.settimeout(0.5)
        while time.time() < deadline and link.served < 1:
            try:
                link.answer(link.message())
            except socket.timeout:
                continue
        served = link.served
        report(event="echo", echo=ok_echo, unknown=ok_unknown, kind=ok_kind, alive=ok_alive, served=served)
        return 0 if ok_echo and ok_unknown and ok_kind and ok_alive else 1
    if sc == "serve":
        try:
            while True:
                link.answer(link.message())
        except (EOFError, ConnectionError):
            pass
        report(event="served", served=link.served, sent=link.sent, received=link.received)
        return 0
    if sc == "rekey":
        ok = True
        for i in range(200):
            r = link.request("echo", {"n": i}, 100 + i)
            ok = ok and r["b"] == {"n": i}
        report(event="rekey", ok=ok, sent=link.sent, received=link.received)
        return 0 if ok else 1
    if sc == "oversized":
        # Announce a 64 MiB link message; the peer must drop the link without waiting for it.
        link.send_frame(link.noise.encrypt((64 << 20).to_bytes(4, "big")))
        return expect_close(link)
    if sc == "garbage":
        link.send(0, "x", 1, None, raw_bytes=b"\xff\xfe not cbor")
        return expect_close(link)
    if sc == "tampered":
        # A transport frame whose ciphertext was altered in flight: authentication must fail.
        ct = bytearray(link.noise.encrypt((1).to_bytes(4, "big") + b"\xa0"))
        ct[-1] ^= 0x01
        link.send_frame(bytes(ct))
        return expect_close(link)
    if sc == "empty-frame":
        link.sock.sendall(b"\x00\x00")
        return expect_close(link)
    if sc == "truncated":
        # Announce a 1,000-byte frame, send 10 bytes of it and stop writing.
        link.sock.sendall((1000).to_bytes(2, "big") + b"x" * 10)
        link.sock.shutdown(socket.SHUT_WR)
        return expect_close(link)
    if sc == "flood-stream":
        # Answers the Swift side's first request with a stream that does not end (bounded here
        # at --flood items): the other side must cut it off and close the link.
        m = link.message()
        while not (m["k"] == 0 and m["t"] != "ping"):
            link.answer(m)
            m = link.message()
        sent = 0
        try:
            for i in range(link.flood):
                link.send(3, m["t"], m["i"], {"n": i, "pad": b"x" * 64})
                sent += 1
        except (EOFError, ConnectionError, BrokenPipeError):
            pass
        report(event="flooded", items=sent)
        return expect_close(link)
    if sc == "flood-notify":
        # --flood notifications as fast as possible, then an echo that must still be answered.
        for i in range(link.flood):
            link.send(5, "head", 0, {"height": i, "hash": bytes(32)})
        r = link.request("echo", {"after": "flood"}, 7)
        report(event="flooded", items=link.flood, alive=r["k"] == 1 and r["b"] == {"after": "flood"})
        return 0 if r["k"] == 1 else 1
    if sc == "deaf":
        # Answers the first request, then sends pings without end and never reads again (its
        # receive buffer kept small): the other side must not stop reading to wait for this
        # peer to take its pongs, and must cut the link off.
        m = link.message()
        while not link.answer(m) or m["t"] == "ping":
            m = link.message()
        link.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        link.sock.settimeout(10)
        sent = 0
        try:
            for i in range(link.flood):
                link.send(0, "ping", 1000 + i, {})
                sent += 1
        except socket.timeout:
            report(event="still-open", pings=sent)
            return 1
        except (EOFError, ConnectionError, BrokenPipeError):
            report(event="closed-by-peer", pings=sent)
            return 0
        report(event="still-open", pings=sent)
        return 1
    raise SystemExit("unknown scenario " + sc)


def expect_close(link):
    link.sock.settimeout(5)
    try:
        while True:
            link.message()
    except (EOFError, ConnectionError):
        report(event="closed-by-peer")
        return 0
    except socket.timeout:
        report(event="still-open")
        return 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("role", choices=["connect", "listen"])
    ap.add_argument("address", nargs="?")
    ap.add_argument("--network", default="-")
    ap.add_argument("--mode", default="member")
    ap.add_argument("--scenario", default="echo")
    ap.add_argument("--flood", type=int, default=20000, help="items or notifications the flood scenarios send")
    ap.add_argument("--rekey", type=int, default=0)
    a = ap.parse_args()
    network = b"" if a.network == "-" else bytes.fromhex(a.network)
    if a.role == "connect":
        host, port = a.address.rsplit(":", 1)
        s = socket.create_connection((host, int(port)), timeout=10)
        s.settimeout(10)
        link = Link(s, True, network, a.mode, a.scenario, a.rekey)
        link.flood = a.flood
        sys.exit(run(link))
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    report(port=srv.getsockname()[1])
    srv.settimeout(20)
    s, _ = srv.accept()
    s.settimeout(10)
    link = Link(s, False, network, a.mode, a.scenario, a.rekey)
    link.flood = a.flood
    sys.exit(run(link))


if __name__ == "__main__":
    main()
