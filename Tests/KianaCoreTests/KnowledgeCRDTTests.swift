import KianaCore
import PropertyBased
import Testing

/// Laws of the knowledge CRDT, checked on random operation histories from three devices.
@Suite struct KnowledgeCRDTTests {
    static let devices = (0..<3).map { _ in DeviceIdentity.generate() }
    static let items = (0..<4).map { _ in ItemID.random() }
    static let net = SHA.hash([7])

    /// Each number describes one entry: device, item, delete-or-put, which fields, clock.
    static func entries(_ numbers: [UInt64]) -> [Entry] {
        var seqs = [UInt64](repeating: 0, count: devices.count)
        return numbers.map { n in
            let d = Int(n % 3)
            seqs[d] += 1
            let item = items[Int((n >> 2) % 4)]
            let wall = 1000 + (n >> 8) % 16  // few distinct times: many ties to break
            let op: KnowledgeOp
            if (n >> 4) % 5 == 0 {
                op = .delete(item)
            } else {
                let v = "v\((n >> 12) % 7)"
                let which = (n >> 16) % 8
                op = .put(
                    item,
                    KnowledgeFields(
                        title: which & 1 != 0 ? "title " + v : nil, text: which & 2 != 0 || which == 0 ? "text " + v : nil,
                        tags: which & 4 != 0 ? [v] : nil))
            }
            return Entry(
                signedBy: devices[d], network: net, sequence: seqs[d], hlc: HLC(wall: wall, logical: UInt32((n >> 20) % 3)), kind: op.kind, payload: op.payload)
        }
    }

    static let history = Gen.uint64(in: 0...UInt64.max).array(of: 0...25)

    /// `ItemState.encoded` (written directly) is byte for byte the generic encoding of `cbor`:
    /// states of random histories (puts, deletes, ties), plus a put with every field, long and
    /// non-ASCII values and clocks of every CBOR head size.
    @Test func directEncodingIsTheCanonicalOne() async {
        await propertyCheck(count: 200, input: Self.history, Gen.uint64(in: 0...UInt64.max)) { numbers, salt in
            var state = KnowledgeState(entries: Self.entries(numbers))
            let long = String(repeating: "ä€😀x", count: Int(salt % 50))
            let op = KnowledgeOp.put(
                Self.items[Int(salt % 4)], KnowledgeFields(title: "T" + long, text: long + "text", tags: ["a", String(long.prefix(6)) + "b", "c"], source: "/src/" + long))
            let walls: [UInt64] = [0, 23, 24, 255, 256, 65_535, 65_536, UInt64(UInt32.max), UInt64(UInt32.max) + 1, UInt64.max / 2]
            state.apply(
                Entry(
                    signedBy: Self.devices[0], network: Self.net, sequence: 99, hlc: HLC(wall: walls[Int(salt % 10)], logical: UInt32(salt % 70_000)),
                    kind: op.kind, payload: op.payload))
            #expect(!state.items.isEmpty)
            for s in state.items.values { #expect(s.encoded == s.cbor.encoded, "\(s)") }
        }
    }

    @Test func stateIsIndependentOfOrderAndDuplicates() async {
        await propertyCheck(count: 100, input: Self.history) { numbers in
            let es = Self.entries(numbers)
            let a = KnowledgeState(entries: es)
            #expect(KnowledgeState(entries: es.reversed()) == a)
            #expect(KnowledgeState(entries: es.shuffled()) == a)
            #expect(KnowledgeState(entries: es + es.shuffled()) == a)
        }
    }

    /// Decision 111: an entry superseded by a copy of it (same author, clock, kind, payload;
    /// another sequence number, so another ID). Folding both in and renaming the old one's
    /// stamps to the copy gives exactly the state of the copy alone, in any history (the old
    /// entry's clock is its author's own, as a device's clock never repeats).
    @Test func renamingASupersededEntryEqualsTheCopyAlone() async {
        await propertyCheck(count: 100, input: Self.history, Gen.uint64(in: 0...UInt64.max)) { numbers, pick in
            let es = Self.entries(numbers + [pick])
            let old = es[es.count - 1]
            let e = Entry(
                signedBy: Self.devices[Int(pick % 3)], network: Self.net, sequence: old.sequence, hlc: HLC(wall: 5000 + pick % 7, logical: 0),
                kind: old.kind, payload: old.payload)
            let copy = Entry(signedBy: Self.devices[Int(pick % 3)], network: Self.net, sequence: 10_000, hlc: e.hlc, kind: e.kind, payload: e.payload)
            let rest = Array(es.dropLast())
            let both = KnowledgeState(entries: rest + [e, copy])
            let renamed = both.items.mapValues { $0.renamingEntry(e.id, to: copy.id) }
            #expect(renamed == KnowledgeState(entries: rest + [copy]).items)
            // Without the renaming the two differ whenever the old entry's ID wins a tie.
            if e.id.lexicographicallyPrecedes(copy.id) == false {
                #expect(both.items != KnowledgeState(entries: rest + [copy]).items)
            }
        }
    }

    @Test func mergeIsCommutativeAssociativeIdempotent() async {
        await propertyCheck(count: 100, input: Self.history, Self.history, Self.history) { x, y, z in
            let a = KnowledgeState(entries: Self.entries(x))
            let b = KnowledgeState(entries: Self.entries(y))
            let c = KnowledgeState(entries: Self.entries(z))
            #expect(a.merged(with: b) == b.merged(with: a))
            #expect(a.merged(with: b).merged(with: c) == a.merged(with: b.merged(with: c)))
            #expect(a.merged(with: a) == a)
        }
    }

    @Test func mergeEqualsStateOfTheUnion() async {
        await propertyCheck(count: 100, input: Self.history) { numbers in
            let es = Self.entries(numbers)
            let cut = es.count / 2
            let left = KnowledgeState(entries: es[..<cut])
            let right = KnowledgeState(entries: es[cut...])
            #expect(left.merged(with: right) == KnowledgeState(entries: es))
        }
    }

    @Test func lastWriterWinsPerFieldAndTombstones() throws {
        let d = Self.devices[0]
        let item = ItemID.random()
        func e(_ seq: UInt64, _ wall: UInt64, _ op: KnowledgeOp) -> Entry {
            Entry(signedBy: d, network: Self.net, sequence: seq, hlc: HLC(wall: wall), kind: op.kind, payload: op.payload)
        }
        let put1 = e(1, 10, .put(item, KnowledgeFields(title: "old title", text: "old text")))
        let put2 = e(2, 20, .put(item, KnowledgeFields(text: "new text")))
        let del = e(3, 30, .delete(item))
        let put3 = e(4, 40, .put(item, KnowledgeFields(tags: ["back"])))
        var s = KnowledgeState(entries: [put2, put1])
        var st = s.items[item]!
        #expect(st.title?.value == "old title")
        #expect(st.text?.value == "new text")
        #expect(st.created == HLC(wall: 10))
        #expect(!st.isDeleted)
        s = KnowledgeState(entries: [del, put1, put2])
        #expect(s.items[item]!.isDeleted)
        #expect(s.visible.isEmpty)
        s = KnowledgeState(entries: [put3, del, put1, put2])
        st = s.items[item]!
        #expect(!st.isDeleted)
        #expect(st.tags?.value == ["back"])
        #expect(st.updated == HLC(wall: 40))
        // The stored form round-trips.
        #expect(try ItemState(cbor: CBOR.decode(st.cbor.encoded)) == st)
    }
}
