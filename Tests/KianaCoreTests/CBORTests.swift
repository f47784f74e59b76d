import Foundation
import KianaCore
import PropertyBased
import KianaTestSupport
import Testing

@Suite struct CBORTests {
    /// Encodings from RFC 8949 Appendix A (the subset KI_ana uses).
    @Test(arguments: [
        (CBOR.unsigned(0), "00"), (.unsigned(23), "17"), (.unsigned(24), "1818"), (.unsigned(100), "1864"),
        (.unsigned(1000), "1903e8"), (.unsigned(1_000_000), "1a000f4240"), (.unsigned(1_000_000_000_000), "1b000000e8d4a51000"),
        (.unsigned(UInt64.max), "1bffffffffffffffff"), (.negative(0), "20"), (.negative(9), "29"), (.negative(99), "3863"),
        (.negative(999), "3903e7"), (.bool(false), "f4"), (.bool(true), "f5"), (.null, "f6"), (.bytes([]), "40"),
        (.bytes([1, 2, 3, 4]), "4401020304"), (.text(""), "60"), (.text("a"), "6161"), (.text("IETF"), "6449455446"),
        (.text("\u{00fc}"), "62c3bc"), (.text("\u{6c34}"), "63e6b0b4"), (.array([]), "80"),
        (.array([1, 2, 3]), "83010203"), (.array([1, .array([2, 3]), .array([4, 5])]), "8301820203820405"),
        (.map([:]), "a0"), (.map([1: 2, 3: 4]), "a201020304"),
        (.map(["a": 1, "b": .array([2, 3])]), "a26161016162820203"),
        (.map(["a": "A", "b": "B", "c": "C", "d": "D", "e": "E"]), "a56161614161626142616361436164614461656145"),
    ])
    func rfc8949Examples(_ value: CBOR, _ hex: String) throws {
        #expect(Hex.encode(value.encoded) == hex)
        #expect(try CBOR.decode(Hex.decode(hex)!) == value)
    }

    /// Deterministic key order is bytewise on the encoded keys: 10 < 100 < -1 < "z" < "aa".
    @Test func mapKeyOrderIsBytewiseOnEncodedKeys() {
        let m = CBOR.map([.text("aa"): 0, .text("z"): 0, .negative(0): 0, .unsigned(100): 0, .unsigned(10): 0])
        #expect(Hex.encode(m.encoded) == "a5" + "0a00" + "186400" + "2000" + "617a00" + "62616100")
    }

    @Test(arguments: [
        ("1817", "non-shortest 1-byte int"), ("190017", "non-shortest 2-byte int"), ("1a0000ffff", "non-shortest 4-byte int"),
        ("1b00000000ffffffff", "non-shortest 8-byte int"), ("5f4101ff", "indefinite bytes"), ("9f01ff", "indefinite array"),
        ("a2616201616101", "unsorted keys"), ("a2616101616102", "duplicate key"), ("0000", "trailing byte"),
        ("f93c00", "half float"), ("fb3ff0000000000000", "double"), ("c11a514b67b0", "tag"), ("62c328", "invalid UTF-8"),
        ("5a7fffffff00", "length beyond input"), ("9bffffffffffffffff", "huge array count"), ("1c", "reserved ai 28"),
        ("f7", "undefined"), ("f0", "simple value"), ("", "empty input"), ("8201", "truncated array"),
    ])
    func rejectsNonDeterministicOrMalformed(_ hex: String, _ why: String) {
        #expect(throws: KianaCoreError.self, "\(why)") { try CBOR.decode(Hex.decode(hex)!) }
    }

    /// Found by the CBOR fuzzer: keys with different bytes that Swift's String treats as equal
    /// ("é" precomposed and "e" + combining acute; Å and the Ångström sign) were merged, so the
    /// decoded value lost an entry and no longer re-encoded to its input.
    @Test(arguments: ["a262c3a9016365cc8102", "a262c3850163e284ab02"])
    func rejectsKeysEqualOnlyAfterNormalisation(_ hex: String) {
        let bytes = Hex.decode(hex)!
        #expect(throws: KianaCoreError.self) { try CBOR.decode(bytes) }
    }

    @Test func rejectsDeepNesting() {
        let deep = [UInt8](repeating: 0x81, count: 100) + [0x00]
        #expect(throws: KianaCoreError.self) { try CBOR.decode(deep) }
        let ok = [UInt8](repeating: 0x81, count: 10) + [0x00]
        #expect(throws: Never.self) { try CBOR.decode(ok) }
    }

    /// Builds a CBOR tree from a list of numbers, so the generator (and its shrinking) stays simple.
    static func tree(_ seed: inout ArraySlice<UInt64>, depth: Int = 0) -> CBOR {
        guard let n = seed.popFirst() else { return .null }
        switch n % 9 {
        case 0: return .unsigned(n >> 4)
        case 1: return .negative(n >> 5)
        case 2: return .bytes((0..<Int(n % 40)).map { UInt8(truncatingIfNeeded: n >> UInt64($0 % 56)) })
        case 3: return .text(String(repeating: ["a", "ß", "水", "🙂", "z"][Int(n >> 8 % 5)], count: Int(n % 30)))
        case 4 where depth < 5:
            return .array((0..<Int(n % 5)).map { _ in tree(&seed, depth: depth + 1) })
        case 5 where depth < 5:
            var m: [CBOR: CBOR] = [:]
            for _ in 0..<Int(n % 5) { m[tree(&seed, depth: depth + 1)] = tree(&seed, depth: depth + 1) }
            return .map(m)
        case 6: return .bool(n & 16 == 0)
        case 7: return .unsigned(n)
        default: return .null
        }
    }

    @Test func roundTripProperty() async {
        await propertyCheck(count: 300, input: Gen.uint64(in: 0...UInt64.max).array(of: 1...60)) { numbers in
            var seed = numbers[...]
            let value = Self.tree(&seed)
            let bytes = value.encoded
            let decoded = try? CBOR.decode(bytes)
            #expect(decoded == value)
            #expect(decoded?.encoded == bytes)
        }
    }

    /// Any single-byte change to a valid encoding either fails to decode or decodes to a value
    /// whose encoding is exactly the changed bytes: there is one encoding per value.
    @Test func mutationsNeverDecodeToAnotherEncoding() async {
        await propertyCheck(count: 200, input: Gen.uint64(in: 0...UInt64.max).array(of: 1...30), Gen.int(in: 0...10_000), Gen.uint8(in: 1...255)) {
            numbers, pos, flip in
            var seed = numbers[...]
            var bytes = Self.tree(&seed).encoded
            bytes[pos % bytes.count] ^= flip
            if let v = try? CBOR.decode(bytes) { #expect(v.encoded == bytes) }
        }
    }
}

/// Cross-check with an independent implementation: Python's cbor2 (canonical mode).
@Suite struct CBORInteropTests {
    static let script = Shared.packageRoot.appendingPathComponent("Tests/python/cbor_crosscheck.py").path

    static func samples() -> [[UInt8]] {
        let id = DeviceIdentity.generate()
        let net = SHA.hash(Array("interop".utf8))
        let genesis = Block.genesis(identity: id, time: 1_764_288_000_000, name: "interop ✓")
        let ops: [KnowledgeOp] = [
            .put(ItemID.random(), KnowledgeFields(title: "Tea", text: "Green tea steeps at 80 °C — not boiling.", tags: ["tea", "kitchen"], source: "me")),
            .put(ItemID.random(), KnowledgeFields(text: String(repeating: "long text ", count: 3000))),
            .delete(ItemID.random()),
        ]
        let entries = ops.enumerated().map { i, op in
            Entry(
                signedBy: id, network: net, sequence: UInt64(i + 1), hlc: HLC(wall: 1_764_288_000_000 + UInt64(i), logical: UInt32(i * 300)), kind: op.kind,
                payload: op.payload)
        }
        let block = Block.seal(entries: entries, parent: genesis.header, parentHash: genesis.hash, time: 1_764_288_001_000, identity: id)
        return entries.map(\.encoded) + [
            genesis.encoded, block.encoded, block.signedHeaderCBOR.encoded, block.header.cbor.encoded,
            CBOR.map([.unsigned(10): 1, .negative(0): 2, "z": 3, "aa": 4, .bytes([1]): 5]).encoded,
        ]
    }

    @Test func swiftEncodingsAreCanonicalForCbor2() throws {
        let items = Self.samples()
        let req = try JSONSerialization.data(withJSONObject: ["items": items.map { Hex.encode($0) }])
        let r = try runProcess(python3(), [Self.script, "reencode"], input: req)
        try #require(r.status == 0, "python failed: \(String(decoding: r.err, as: UTF8.self))")
        let resp = try JSONSerialization.jsonObject(with: r.out) as! [String: [String]]
        let back = resp["items"]!
        #expect(back.count == items.count)
        for (mine, theirs) in zip(items, back) {
            #expect(Hex.encode(mine) == theirs)
        }
    }

    @Test func pythonWrittenEntryDecodesAndVerifies() throws {
        let r = try runProcess(python3(), [Self.script, "make-entry"])
        try #require(r.status == 0, "python failed: \(String(decoding: r.err, as: UTF8.self))")
        let resp = try JSONSerialization.jsonObject(with: r.out) as! [String: String]
        let bytes = Hex.decode(resp["entry"]!)!
        let e = try Entry(decoding: bytes)
        #expect(e.idHex == resp["id"])
        #expect(Hex.encode(e.author) == resp["author"])
        #expect(e.verifySignature())
        #expect(e.sequence == 300)
        #expect(e.hlc == HLC(wall: 1_764_288_000_123, logical: 7))
        #expect(e.encoded == bytes)
        guard case .put(_, let f) = try KnowledgeOp(kind: e.kind, payload: e.payload) else {
            Issue.record("not a put")
            return
        }
        #expect(f.title == "Grüße aus Python")
        #expect(f.tags == ["interop", "python"])
    }
}
