"""Cross-checks KI_ana's DNS message codec against python-zeroconf's (an independent mDNS
implementation from PyPI).

  dns_crosscheck.py encode   -> prints the hex of a response zeroconf builds (PTR, SRV, TXT, A,
                                AAAA, NSEC) and of a query with a known answer
  dns_crosscheck.py decode HEX -> parses HEX with zeroconf and prints its records as JSON
  dns_crosscheck.py seeds DIR  -> writes the packets of `encode` as files into DIR (fuzz corpus)
"""
import json
import sys

from zeroconf import DNSAddress, DNSIncoming, DNSNsec, DNSOutgoing, DNSPointer, DNSQuestion, DNSService, DNSText
from zeroconf.const import _CLASS_IN, _FLAGS_AA, _FLAGS_QR_QUERY, _FLAGS_QR_RESPONSE, _TYPE_A, _TYPE_AAAA, _TYPE_PTR, _TYPE_SRV, _TYPE_TXT

SVC = "_kiana._tcp.local."
INST = "kiana-test._kiana._tcp.local."
HOST = "kiana-test.local."


def packets():
    out = DNSOutgoing(_FLAGS_QR_RESPONSE | _FLAGS_AA, multicast=True)
    out.add_answer_at_time(DNSPointer(SVC, _TYPE_PTR, _CLASS_IN, 4500, INST), 0)
    out.add_answer_at_time(DNSService(INST, _TYPE_SRV, _CLASS_IN | 0x8000, 120, 0, 0, 8470, HOST), 0)
    out.add_answer_at_time(DNSText(INST, _TYPE_TXT, _CLASS_IN | 0x8000, 4500, b"\x04v=1a\x0cid=ABCD-EFGH"), 0)
    out.add_additional_answer(DNSAddress(HOST, _TYPE_A, _CLASS_IN | 0x8000, 120, bytes([10, 77, 1, 2])))
    out.add_additional_answer(DNSAddress(HOST, _TYPE_AAAA, _CLASS_IN | 0x8000, 120, bytes(range(16))))
    out.add_additional_answer(DNSNsec(HOST, 47, _CLASS_IN | 0x8000, 120, HOST, [_TYPE_A, _TYPE_AAAA]))
    q = DNSOutgoing(_FLAGS_QR_QUERY, multicast=True)
    q.add_question(DNSQuestion(SVC, _TYPE_PTR, _CLASS_IN))
    q.add_answer_at_time(DNSPointer(SVC, _TYPE_PTR, _CLASS_IN, 4000, INST), 0)
    return {"response": out.packets()[0], "query": q.packets()[0]}


def encode():
    print(json.dumps({k: v.hex() for k, v in packets().items()}))


def seeds(directory):
    import os
    os.makedirs(directory, exist_ok=True)
    for name, data in packets().items():
        with open(os.path.join(directory, "zeroconf-" + name), "wb") as f:
            f.write(data)


def decode(hexdata):
    m = DNSIncoming(bytes.fromhex(hexdata))
    if not m.valid:
        print(json.dumps({"valid": False}))
        return
    recs = []
    for r in m.answers():
        d = {"name": r.name, "type": r.type, "flush": r.unique, "ttl": r.ttl}
        if isinstance(r, DNSPointer):
            d["alias"] = r.alias
        elif isinstance(r, DNSService):
            d.update(port=r.port, server=r.server, priority=r.priority, weight=r.weight)
        elif isinstance(r, DNSText):
            d["text"] = r.text.hex()
        elif isinstance(r, DNSAddress):
            d["address"] = r.address.hex()
        elif isinstance(r, DNSNsec):
            d.update(next=r.next_name, types=sorted(r.rdtypes))
        recs.append(d)
    qs = [{"name": q.name, "type": q.type, "qu": q.unique} for q in m.questions]
    print(json.dumps({"valid": True, "id": m.id, "flags": m.flags, "records": recs, "questions": qs}))


if __name__ == "__main__":
    {"encode": lambda: encode(), "decode": lambda: decode(sys.argv[2]), "seeds": lambda: seeds(sys.argv[2])}[sys.argv[1]]()
