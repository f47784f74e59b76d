import Foundation
import KianaCore
@testable import KianaNet
import KianaTestSupport
import Testing

/// The DNS codec against python-zeroconf (PyPI) both ways, round trips, and hostile input.
@Suite struct DNSTests {
    static let script = Shared.packageRoot.appendingPathComponent("Tests/python/dns_crosscheck.py").path

    static func python(_ args: [String]) async throws -> [String: Any] {
        let r = try await runProcess(python3(), [script] + args)
        try #require(r.status == 0, "\(String(decoding: r.err, as: UTF8.self))")
        return try #require(try JSONSerialization.jsonObject(with: r.out) as? [String: Any])
    }

    static let responder = MDNSResponder(
        info: MDNSServiceInfo(
            instance: "kiana-test", hostLabel: "kiana-test", port: 8470,
            txt: [("v", "1"), ("id", "ABCD-EFGH"), ("net", "0011223344556677")],
            ipv4: [[10, 77, 1, 2]], ipv6: [Array(0..<16)]))

    @Test("Messages zeroconf encodes decode to the same records")
    func decodesZeroconf() async throws {
        let out = try await Self.python(["encode"])
        let response = try DNSMessage(decoding: try #require(Hex.decode(out["response"] as! String)))
        #expect(response.isResponse)
        let all = response.answers + response.additionals
        #expect(all.count == 6)
        #expect(all.contains { $0.type == DNSType.ptr && $0.data == .ptr(DNSName("kiana-test._kiana._tcp.local")) && $0.ttl == 4500 && !$0.cacheFlush })
        #expect(all.contains { $0.data == .srv(priority: 0, weight: 0, port: 8470, target: DNSName("kiana-test.local")) && $0.cacheFlush })
        let txt = try #require(all.first { $0.type == DNSType.txt })
        #expect(txt.txtPairs == ["v": "1a", "id": "ABCD-EFGH"])
        #expect(all.contains { $0.data == .a([10, 77, 1, 2]) && $0.ttl == 120 })
        #expect(all.contains { $0.data == .aaaa(Array(0..<16)) })
        #expect(all.contains { $0.data == .nsec(next: DNSName("kiana-test.local"), types: [1, 28]) })
        let query = try DNSMessage(decoding: try #require(Hex.decode(out["query"] as! String)))
        #expect(!query.isResponse)
        #expect(query.questions == [DNSQuestion(name: DNSName("_kiana._tcp.local"), type: DNSType.ptr)])
        #expect(query.answers.first?.ttl == 4000)
    }

    @Test("Messages we encode decode in zeroconf to the same records")
    func zeroconfDecodesOurs() async throws {
        var announcement = Self.responder.announcement()
        announcement.additionals = [
            DNSRecord(
                name: DNSName("kiana-test.local"), type: DNSType.nsec, cacheFlush: true, ttl: 120,
                data: .nsec(next: DNSName("kiana-test.local"), types: [1, 28]))
        ]
        let parsed = try await Self.python(["decode", Hex.encode(try announcement.encoded())])
        #expect(parsed["valid"] as? Bool == true)
        let records = try #require(parsed["records"] as? [[String: Any]])
        func find(_ type: Int) -> [String: Any]? { records.first { $0["type"] as? Int == type } }
        #expect(find(12)?["alias"] as? String == "kiana-test._kiana._tcp.local.")
        #expect(find(33)?["port"] as? Int == 8470 && find(33)?["server"] as? String == "kiana-test.local.")
        #expect(find(33)?["flush"] as? Bool == true)
        #expect(find(16)?["text"] as? String == Hex.encode(Array("\u{3}v=1\u{c}id=ABCD-EFGH\u{14}net=0011223344556677".utf8)))
        #expect(find(1)?["address"] as? String == "0a4d0102")
        #expect(find(28)?["address"] as? String == Hex.encode(Array(0..<16)))
        #expect((find(47)?["types"] as? [Int]) == [1, 28])
        let probe = try await Self.python(["decode", Hex.encode(try Self.responder.probe().encoded())])
        let qs = try #require(probe["questions"] as? [[String: Any]])
        #expect(qs.count == 2 && qs.allSatisfy { $0["qu"] as? Bool == true && $0["type"] as? Int == 255 })
    }

    /// A deterministic generator for the round-trip law.
    struct SplitMix {
        var s: UInt64
        mutating func next() -> UInt64 {
            s &+= 0x9E3779B97F4A7C15
            var z = s
            z = (z ^ (z >> 30)) &* 0xBF58476D1CE4E5B9
            z = (z ^ (z >> 27)) &* 0x94D049BB133111EB
            return z ^ (z >> 31)
        }
    }

    static func randomName(_ g: inout SplitMix) -> DNSName {
        let pool = ["local", "_tcp", "_kiana", "kiana-ab12", "Host", "x", "_services", "_dns-sd", "_udp", "a-b.c"]
        return DNSName(labels: (0..<(1 + Int(g.next() % 4))).map { _ in pool[Int(g.next() % UInt64(pool.count))] })
    }

    static func randomRecord(_ g: inout SplitMix) -> DNSRecord {
        let name = randomName(&g)
        let ttl = UInt32(truncatingIfNeeded: g.next())
        let flush = g.next() % 2 == 0
        switch g.next() % 7 {
        case 0: return DNSRecord(name: name, type: DNSType.a, cacheFlush: flush, ttl: ttl, data: .a((0..<4).map { _ in UInt8(truncatingIfNeeded: g.next()) }))
        case 1:
            return DNSRecord(
                name: name, type: DNSType.aaaa, cacheFlush: flush, ttl: ttl, data: .aaaa((0..<16).map { _ in UInt8(truncatingIfNeeded: g.next()) }))
        case 2: return DNSRecord(name: name, type: DNSType.ptr, cacheFlush: flush, ttl: ttl, data: .ptr(randomName(&g)))
        case 3:
            return DNSRecord(
                name: name, type: DNSType.srv, cacheFlush: flush, ttl: ttl,
                data: .srv(priority: UInt16(truncatingIfNeeded: g.next()), weight: 1, port: UInt16(truncatingIfNeeded: g.next()), target: randomName(&g)))
        case 4:
            return DNSRecord(
                name: name, type: DNSType.txt, cacheFlush: flush, ttl: ttl,
                data: .txt((0..<(1 + Int(g.next() % 3))).map { _ in (0..<Int(g.next() % 40)).map { _ in UInt8(truncatingIfNeeded: g.next()) } }))
        case 5:
            return DNSRecord(
                name: name, type: DNSType.nsec, cacheFlush: flush, ttl: ttl,
                data: .nsec(next: name, types: Array(Set((0..<3).map { _ in UInt16(g.next() % 300) })).sorted()))
        default:
            return DNSRecord(
                name: name, type: 99, cacheFlush: flush, ttl: ttl, data: .other((0..<Int(g.next() % 20)).map { _ in UInt8(truncatingIfNeeded: g.next()) }))
        }
    }

    @Test("decode(encode(m)) == m for 500 random messages")
    func roundTrip() throws {
        var g = SplitMix(s: 42)
        for _ in 0..<500 {
            let m = DNSMessage(
                id: UInt16(truncatingIfNeeded: g.next()), flags: g.next() % 2 == 0 ? 0 : DNSMessage.responseFlags,
                questions: (0..<Int(g.next() % 3)).map { _ in
                    DNSQuestion(name: Self.randomName(&g), type: UInt16(g.next() % 256), unicastResponse: g.next() % 2 == 0)
                },
                answers: (0..<Int(g.next() % 4)).map { _ in Self.randomRecord(&g) },
                authorities: (0..<Int(g.next() % 2)).map { _ in Self.randomRecord(&g) },
                additionals: (0..<Int(g.next() % 3)).map { _ in Self.randomRecord(&g) })
            #expect(try DNSMessage(decoding: try m.encoded()) == m)
        }
    }

    static let header: [UInt8] = [0, 0, 0x84, 0, 0, 0, 0, 1, 0, 0, 0, 0]

    @Test(
        "Hostile input is rejected with a reason, never trusted",
        arguments: [
            ("forward pointer", header + [0xC0, 0x20] + [0, 1, 0, 1, 0, 0, 0, 1, 0, 4, 1, 2, 3, 4]),
            ("pointer to itself", header + [0xC0, 12] + [0, 1, 0, 1, 0, 0, 0, 1, 0, 4, 1, 2, 3, 4]),
            ("truncated label", header + [5, 0x61, 0x62]),
            ("reserved label type", header + [0x40, 0x61, 0] + [0, 1, 0, 1, 0, 0, 0, 1, 0, 4, 1, 2, 3, 4]),
            ("A record of 5 bytes", header + [1, 0x61, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 5, 1, 2, 3, 4, 5]),
            ("rdata past the end", header + [1, 0x61, 0, 0, 16, 0, 1, 0, 0, 0, 1, 0, 50, 3, 0x61]),
            ("TXT string past its record", header + [1, 0x61, 0, 0, 16, 0, 1, 0, 0, 0, 1, 0, 2, 9, 0x61]),
            ("counts beyond the message", [0, 0, 0x84, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0]),
            ("short header", [0, 0, 0x84]),
            ("label that is not UTF-8", header + [2, 0xFF, 0xFE, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4, 1, 2, 3, 4]),
            ("NSEC windows out of order", header + [1, 0x61, 0, 0, 47, 0, 1, 0, 0, 0, 1, 0, 8, 0xC0, 12, 1, 1, 0x40, 0, 1, 0x40]),
        ] as [(String, [UInt8])])
    func hostile(_ name: String, _ bytes: [UInt8]) {
        #expect(throws: KianaNetError.self, "\(name)") { try DNSMessage(decoding: bytes) }
    }

    @Test("Names longer than 255 bytes and messages over 9000 bytes are refused")
    func limits() throws {
        var bytes = Self.header
        for _ in 0..<5 { bytes += [63] + [UInt8](repeating: 0x61, count: 63) }
        bytes += [0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4, 1, 2, 3, 4]
        #expect(throws: KianaNetError.self) { try DNSMessage(decoding: bytes) }
        #expect(throws: KianaNetError.self) { try DNSMessage(decoding: Self.header + [UInt8](repeating: 0, count: 9000)) }
        let long = DNSMessage(answers: [DNSRecord(name: DNSName(labels: [String(repeating: "x", count: 64)]), type: 1, ttl: 1, data: .a([1, 2, 3, 4]))])
        #expect(throws: KianaNetError.self) { try long.encoded() }
        // 255 bytes on the wire, counting the final zero, is the most a name may take (RFC 1035):
        // the decoder and the encoder agree on the boundary (the fuzz target found them apart).
        func name(last: Int) -> [UInt8] {
            var b = Self.header
            for _ in 0..<3 { b += [63] + [UInt8](repeating: 0x61, count: 63) }
            return b + [UInt8(last)] + [UInt8](repeating: 0x62, count: last) + [0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4, 1, 2, 3, 4]
        }
        let longest = try DNSMessage(decoding: name(last: 61))
        #expect(try DNSMessage(decoding: try longest.encoded()) == longest)
        #expect(throws: KianaNetError.self) { try DNSMessage(decoding: name(last: 62)) }
    }

    @Test("An empty TXT record reads as the one empty string it is written as")
    func emptyTXT() throws {
        let m = try DNSMessage(decoding: Self.header + [1, 0x61, 0, 0, 16, 0, 1, 0, 0, 0, 1, 0, 0])
        #expect(m.answers.first?.data == .txt([[]]))
        #expect(try DNSMessage(decoding: try m.encoded()) == m)
        #expect(
            try DNSMessage(decoding: try DNSMessage(answers: [DNSRecord(name: DNSName("a"), type: DNSType.txt, ttl: 1, data: .txt([]))]).encoded())
                .answers.first?.data == .txt([[]]))
    }
}

/// The responder's and browser's rules (RFC 6762/6763) on real messages.
@Suite struct MDNSLogicTests {
    let r = DNSTests.responder

    @Test("A PTR query gets the PTR, with SRV, TXT and addresses as additionals, delayed as shared")
    func answersBrowse() throws {
        let q = DNSMessage(questions: [DNSQuestion(name: MDNS.serviceType, type: DNSType.ptr)])
        let (a, shared) = try #require(r.answer(q))
        #expect(a.answers.map(\.type) == [DNSType.ptr])
        #expect(Set(a.additionals.map(\.type)) == [DNSType.srv, DNSType.txt, DNSType.a, DNSType.aaaa])
        #expect(shared)
        #expect(a.isResponse && a.id == 0)
    }

    @Test("Known answers with at least half our TTL are suppressed")
    func knownAnswers() {
        let known = DNSRecord(name: MDNS.serviceType, type: DNSType.ptr, ttl: 4000, data: .ptr(r.instanceName))
        #expect(r.answer(DNSMessage(questions: [DNSQuestion(name: MDNS.serviceType, type: DNSType.ptr)], answers: [known])) == nil)
        var stale = known
        stale.ttl = 100
        #expect(r.answer(DNSMessage(questions: [DNSQuestion(name: MDNS.serviceType, type: DNSType.ptr)], answers: [stale])) != nil)
    }

    @Test("ANY for the instance gets the unique records at once; other names get nothing")
    func anyAndForeign() throws {
        let (a, shared) = try #require(r.answer(DNSMessage(questions: [DNSQuestion(name: r.instanceName, type: DNSType.any)])))
        #expect(Set(a.answers.map(\.type)) == [DNSType.srv, DNSType.txt])
        #expect(!shared)
        #expect(r.answer(DNSMessage(questions: [DNSQuestion(name: DNSName("_http._tcp.local"), type: DNSType.ptr)])) == nil)
        #expect(r.answer(DNSMessage(flags: DNSMessage.responseFlags, questions: [DNSQuestion(name: MDNS.serviceType, type: DNSType.ptr)])) == nil)
    }

    @Test("Legacy unicast answers echo the ID and question, without cache-flush, TTL at most 10 s")
    func legacy() throws {
        let q = DNSMessage(id: 0x1234, questions: [DNSQuestion(name: r.hostName, type: DNSType.a)])
        let a = try #require(r.legacyAnswer(q))
        #expect(a.id == 0x1234 && a.questions == q.questions)
        #expect(a.answers.allSatisfy { !$0.cacheFlush && $0.ttl <= 10 })
        #expect(a.answers.first?.data == .a([10, 77, 1, 2]))
    }

    @Test("Conflicts: other data for our names conflicts, our own packets do not")
    func conflicts() {
        #expect(!r.conflicts(with: r.announcement()))
        #expect(!r.conflicts(with: r.probe()))
        var other = r
        other.info.port = 9999
        #expect(r.conflicts(with: other.announcement()))
        #expect(r.conflicts(with: other.probe()))
        #expect(!r.conflicts(with: other.announcement(goodbye: true)))
        #expect(MDNSResponder.renamed("kiana-ab") == "kiana-ab-2")
        #expect(MDNSResponder.renamed("kiana-ab-2") == "kiana-ab-3")
    }

    @Test("The cache resolves an announcement, drops it on goodbye and on TTL expiry, and flushes replaced records")
    func cache() {
        var c = MDNSCache()
        c.add(r.announcement(), now: 100)
        let s = c.services(MDNS.serviceType, now: 100)
        #expect(s.missing.isEmpty)
        #expect(
            s.resolved == [
                MDNSResolved(
                    instance: "kiana-test", host: "kiana-test.local.", port: 8470,
                    txt: ["v": "1", "id": "ABCD-EFGH", "net": "0011223344556677"],
                    addresses: ["10.77.1.2", MDNSCache.ipv6Text(Array(0..<16))].sorted())
            ])
        // Goodbye: gone one second later.
        var g = c
        g.add(r.announcement(goodbye: true), now: 200)
        #expect(g.services(MDNS.serviceType, now: 200).resolved.isEmpty)
        g.expire(now: 201.5)
        #expect(g.items.isEmpty)
        // TTL: the host records (120 s) expire first; the browser then asks for the address.
        c.expire(now: 100 + 121)
        let later = c.services(MDNS.serviceType, now: 221)
        #expect(later.resolved.isEmpty)
        #expect(later.missing == [DNSQuestion(name: r.instanceName, type: DNSType.any)])
        // Cache flush: a new address replaces the old one received over a second earlier.
        var f = MDNSCache()
        f.add(r.announcement(), now: 0)
        var moved = r
        moved.info.ipv4 = [[10, 77, 1, 9]]
        moved.info.ipv6 = []
        f.add(DNSMessage(flags: DNSMessage.responseFlags, answers: moved.addresses), now: 5)
        f.expire(now: 6.5)
        #expect(f.services(MDNS.serviceType, now: 6.5).resolved.first?.addresses == [MDNSCache.ipv6Text(Array(0..<16)), "10.77.1.9"].sorted())
        // Refresh at 80 % of the TTL, once.
        var t = MDNSCache()
        t.add(r.announcement(), now: 0)
        #expect(t.dueForRefresh(now: 95).isEmpty)
        #expect(Set(t.dueForRefresh(now: 97).map(\.type)) == [DNSType.srv, DNSType.a, DNSType.aaaa])
        #expect(t.dueForRefresh(now: 98).isEmpty)
    }
}

/// Framing, link messages, pairing codes and block locators.
@Suite struct FramingTests {
    @Test("Frames survive any chunking of the byte stream")
    func chunking() throws {
        var g = DNSTests.SplitMix(s: 7)
        let frames = (0..<40).map { _ in (0..<(1 + Int(g.next() % 3000))).map { _ in UInt8(truncatingIfNeeded: g.next()) } }
        let stream = try frames.flatMap { try FrameDecoder.encode($0) }
        for _ in 0..<20 {
            var d = FrameDecoder()
            var out: [[UInt8]] = []
            var i = 0
            while i < stream.count {
                let n = min(stream.count - i, 1 + Int(g.next() % 5000))
                d.append(stream[i..<(i + n)])
                while let f = try d.next() { out.append(f) }
                i += n
            }
            #expect(out == frames)
            #expect(d.pendingCount == 0)
        }
        var empty = FrameDecoder()
        empty.append([0, 0])
        #expect(throws: KianaNetError.self) { try empty.next() }
        #expect(throws: KianaNetError.self) { try FrameDecoder.encode([UInt8](repeating: 0, count: 65536)) }
    }

    @Test("Link messages reassemble across pieces; oversized or empty lengths fail before buffering")
    func messages() throws {
        let big = [UInt8](repeating: 9, count: 200_000)
        let pieces = try MessageDecoder.encode(big)
        #expect(pieces.count == 4 && pieces.allSatisfy { $0.count <= 65519 })
        var d = MessageDecoder()
        for p in pieces { d.append(p) }
        #expect(try d.next() == big)
        var over = MessageDecoder(maxMessage: 1000)
        over.append([0, 0, 0x03, 0xE9])
        #expect(throws: KianaNetError.self) { try over.next() }
        var zero = MessageDecoder()
        zero.append([0, 0, 0, 0])
        #expect(throws: KianaNetError.self) { try zero.next() }
    }

    @Test("Many link messages buffered together come out whole under any chunking")
    func manyMessages() throws {
        var g = DNSTests.SplitMix(s: 11)
        let messages = (0..<30).map { _ in (0..<(1 + Int(g.next() % 500))).map { _ in UInt8(truncatingIfNeeded: g.next()) } }
        let stream = try messages.flatMap { try MessageDecoder.encode($0).flatMap { $0 } }
        for _ in 0..<20 {
            var d = MessageDecoder()
            var out: [[UInt8]] = []
            var i = 0
            while i < stream.count {
                let n = min(stream.count - i, 1 + Int(g.next() % 700))
                d.append(stream[i..<(i + n)])
                while let m = try d.next() { out.append(m) }
                i += n
            }
            #expect(out == messages)
        }
    }

    @Test("Link message decoding: strict fields, unknown kinds answerable")
    func linkMessages() throws {
        let m = LinkMessage(kind: .request, type: "blocks", id: 7, body: .map(["locator": .array([])]))
        #expect(try LinkMessage.decode(m.encoded) == .message(m))
        let weird = CBOR.map(["k": 42, "t": "x", "i": 3, "v": 1, "b": .null]).encoded
        #expect(try LinkMessage.decode(weird) == .unknownKind(id: 3, kind: 42))
        let extra = CBOR.map(["k": 0, "t": "x", "i": 3, "v": 1, "b": .null, "z": 1]).encoded
        #expect(throws: KianaNetError.self) { try LinkMessage.decode(extra) }
        let longType = CBOR.map(["k": 0, "t": .text(String(repeating: "t", count: 65)), "i": 3, "v": 1, "b": .null]).encoded
        #expect(throws: KianaNetError.self) { try LinkMessage.decode(longType) }
        #expect(throws: KianaNetError.self) { try LinkMessage.decode([0xFF]) }
    }

    @Test("Pairing codes: six digits from the handshake hash, compared ignoring spacing")
    func pairingCode() {
        let h1 = SHA.hash([1])
        let h2 = SHA.hash([2])
        let c1 = PairingCode.code(handshakeHash: h1)
        #expect(c1 == PairingCode.code(handshakeHash: h1))
        #expect(c1 != PairingCode.code(handshakeHash: h2))
        #expect(c1.count == 7 && c1.filter(\.isNumber).count == 6)
        #expect(PairingCode.matches(c1.replacingOccurrences(of: " ", with: "-"), c1))
        #expect(!PairingCode.matches("", c1))
        #expect(!PairingCode.matches(String(c1.dropLast()), c1))
    }

    @Test("The preamble round-trips and rejects foreign bytes")
    func preamble() throws {
        let net = SHA.hash([9])
        let p = LinkPreamble(mode: .member, network: net)
        #expect(try LinkPreamble(decoding: p.encoded) == p)
        #expect(p.encoded.count == LinkPreamble.size)
        #expect(throws: KianaNetError.self) { try LinkPreamble(decoding: Array("GET / HTTP/1.1\r\n".utf8.prefix(15))) }
        #expect(p.prologue(network: net) != LinkPreamble(mode: .pairing, network: nil).prologue(network: net))
    }
}
