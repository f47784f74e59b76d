import KianaCore
import Testing

/// A small valid chain and helpers to break it one rule at a time.
struct ChainFixture {
    let owner = DeviceIdentity.generate()
    let stranger = DeviceIdentity.generate()
    let t0: UInt64 = 1_764_288_000_000
    var now: UInt64 { t0 + 3_600_000 }
    let genesis: Block
    var blocks: [Block]

    init(blocks count: Int = 3, perBlock: Int = 3) {
        genesis = Block.genesis(identity: owner, time: t0, name: "test")
        blocks = [genesis]
        var seq: UInt64 = 0
        for b in 0..<count {
            var entries: [Entry] = []
            for _ in 0..<perBlock {
                seq += 1
                entries.append(entry(seq: seq, wall: t0 + seq))
            }
            blocks.append(
                Block.seal(entries: entries, parent: blocks.last!.header, parentHash: blocks.last!.hash, time: t0 + UInt64(b) * 10 + 100, identity: owner))
        }
    }

    func entry(by who: DeviceIdentity? = nil, seq: UInt64, wall: UInt64, network: [UInt8]? = nil, op: KnowledgeOp? = nil) -> Entry {
        let op = op ?? .put(ItemID.random(), KnowledgeFields(text: "fact \(seq)"))
        return Entry(signedBy: who ?? owner, network: network ?? genesis.hash, sequence: seq, hlc: HLC(wall: wall), kind: op.kind, payload: op.payload)
    }

    /// Replaces the last block with one sealed from `entries` by `signer`.
    func withLast(entries: [Entry], signer: DeviceIdentity? = nil, time: UInt64? = nil) -> [Block] {
        var bs = Array(blocks.dropLast())
        let parent = bs.last!
        bs.append(
            Block.seal(entries: entries, parent: parent.header, parentHash: parent.hash, time: time ?? blocks.last!.header.time, identity: signer ?? owner))
        return bs
    }
}

@Suite struct LedgerTests {
    @Test func validChainValidates() throws {
        let f = ChainFixture(blocks: 5, perBlock: 4)
        let s = try ChainValidator.validate(blocks: f.blocks, now: f.now)
        #expect(s.height == 5)
        #expect(s.entryCount == 20)
        #expect(s.network == f.genesis.hash)
        let s2 = try ChainValidator.validate(encodedBlocks: f.blocks.map(\.encoded), now: f.now)
        #expect(s2.tipHash == s.tipHash)
        #expect(s2.historyRoot == Merkle.root(leafHashes: f.blocks.map { Merkle.leafHash($0.hash) }))
    }

    @Test(arguments: [0, 1, 3, 30])
    func splicedEncodingEqualsTheBlocks(perBlock: Int) throws {
        let f = ChainFixture(blocks: 2, perBlock: perBlock)
        for b in f.blocks {
            let spliced = Block.splicedEncoding(signedHeaderBytes: b.signedHeaderCBOR.encoded, entryBytes: b.entries.map(\.encoded))
            #expect(spliced == b.encoded)
        }
        #expect(Block.splicedEncoding(signedHeaderBytes: [0xA1, 0x60, 0x60], entryBytes: []) == nil)
    }

    @Test func encodeDecodeIsIdentity() throws {
        let f = ChainFixture()
        for b in f.blocks {
            let d = try Block(decoding: b.encoded)
            #expect(d == b)
            #expect(d.encoded == b.encoded)
            for e in b.entries { #expect(try Entry(decoding: e.encoded) == e) }
        }
    }

    /// Decision 113: a block over `maxBlockBytes` does not decode, whoever signed it; one just
    /// under it does.
    @Test func blockOverTheSizeLimitDoesNotDecode() throws {
        let f = ChainFixture(blocks: 1)
        let text = String(repeating: "x", count: 500_000)
        func block(_ count: Int) -> Block {
            let entries = (1...count).map { i in
                f.entry(seq: UInt64(i), wall: f.t0 + UInt64(i), op: .put(ItemID.random(), KnowledgeFields(text: text)))
            }
            return f.withLast(entries: entries).last!
        }
        let fits = block(4)
        #expect(fits.encoded.count > LedgerLimits.maxBlockBytes * 9 / 10 && fits.encoded.count <= LedgerLimits.maxBlockBytes)
        #expect(try Block(decoding: fits.encoded) == fits)
        let over = block(5)
        #expect(over.encoded.count > LedgerLimits.maxBlockBytes)
        #expect {
            _ = try Block(decoding: over.encoded)
        } throws: { ($0 as? KianaCoreError)?.code == .tooLarge }
    }

    /// An entry over `maxEntryBytes` does not decode inside a block either (the store refuses to
    /// read one back, so a device that took it could not start again); one at the limit does.
    @Test func anEntryOverItsLimitDoesNotDecodeInABlock() throws {
        let f = ChainFixture(blocks: 1)
        func entry(payloadBytes: Int) -> Entry {
            Entry(
                signedBy: f.owner, network: f.genesis.hash, sequence: 1, hlc: HLC(wall: f.t0 + 1), kind: .knowledgePut,
                payload: .map(["id": .bytes([UInt8](repeating: 1, count: 16)), "source": .text(String(repeating: "s", count: payloadBytes))]))
        }
        // Find the payload size that puts the entry exactly at the limit.
        let base = entry(payloadBytes: 0).encoded.count
        var atLimit = entry(payloadBytes: LedgerLimits.maxEntryBytes - base)
        var n = LedgerLimits.maxEntryBytes - base
        while atLimit.encoded.count > LedgerLimits.maxEntryBytes {
            n -= 1
            atLimit = entry(payloadBytes: n)
        }
        let fits = f.withLast(entries: [atLimit]).last!
        #expect(try Block(decoding: fits.encoded).entries.first?.encoded.count == atLimit.encoded.count)
        let over = f.withLast(entries: [entry(payloadBytes: n + 1)]).last!
        #expect(over.entries[0].encoded.count == LedgerLimits.maxEntryBytes + 1)
        #expect {
            _ = try Block(decoding: over.encoded)
        } throws: { ($0 as? KianaCoreError)?.message.contains("exceeds \(LedgerLimits.maxEntryBytes)") == true }
    }

    func expectRule(_ rule: LedgerRule, height: UInt64, _ blocks: [Block], now: UInt64, sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            _ = try ChainValidator.validate(blocks: blocks, now: now)
            Issue.record("chain was accepted; expected [\(rule.rawValue)]", sourceLocation: sourceLocation)
        } catch {
            #expect(error.rule == rule, "got \(error)", sourceLocation: sourceLocation)
            #expect(error.height == height, "got \(error)", sourceLocation: sourceLocation)
        }
        // The same verdict from the encoded form.
        #expect(throws: KianaCoreError.self, sourceLocation: sourceLocation) {
            try ChainValidator.validate(encodedBlocks: blocks.map(\.encoded), now: now)
        }
    }

    @Test func entrySignedByNonAuthorityIsRejected() {
        let f = ChainFixture()
        let e = f.entry(by: f.stranger, seq: 1, wall: f.t0)
        expectRule(.entryAuthor, height: 3, f.withLast(entries: [e]), now: f.now)
    }

    @Test func blockSignedByNonAuthorityIsRejected() {
        let f = ChainFixture()
        expectRule(.authority, height: 3, f.withLast(entries: [f.entry(seq: 10, wall: f.t0)], signer: f.stranger), now: f.now)
    }

    @Test func ruleViolationsAreNamed() {
        let f = ChainFixture()
        let now = f.now
        // Sequence must increase per author.
        expectRule(.sequence, height: 3, f.withLast(entries: [f.entry(seq: 6, wall: f.t0)]), now: now)
        // An entry already in the chain.
        expectRule(.duplicateEntry, height: 3, f.withLast(entries: [f.blocks[1].entries[0]]), now: now)
        // Same entry twice in one block.
        let e = f.entry(seq: 10, wall: f.t0)
        expectRule(.duplicateEntry, height: 3, f.withLast(entries: [e, e]), now: now)
        // Entry from another network.
        expectRule(.network, height: 3, f.withLast(entries: [f.entry(seq: 10, wall: f.t0, network: SHA.hash([9]))]), now: now)
        // Timestamps.
        expectRule(.timestamp, height: 3, f.withLast(entries: [f.entry(seq: 10, wall: now + LedgerLimits.maxClockDrift + 60_000)]), now: now)
        expectRule(.timestamp, height: 3, f.withLast(entries: [f.entry(seq: 10, wall: f.t0)], time: now + LedgerLimits.maxClockDrift + 60_000), now: now)
        // Empty block.
        expectRule(.emptyBlock, height: 3, f.withLast(entries: []), now: now)
        // Invalid payload.
        let bad = Entry(signedBy: f.owner, network: f.genesis.hash, sequence: 10, hlc: HLC(wall: f.t0), kind: .knowledgePut, payload: .map(["id": .bytes([1])]))
        expectRule(.payload, height: 3, f.withLast(entries: [bad]), now: now)
        let unknown = Entry(signedBy: f.owner, network: f.genesis.hash, sequence: 10, hlc: HLC(wall: f.t0), kind: "mystery", payload: .null)
        expectRule(.payload, height: 3, f.withLast(entries: [unknown]), now: now)
        // Missing block: heights and links.
        var gap = f.blocks
        gap.remove(at: 2)
        expectRule(.height, height: 2, gap, now: now)
        var swapped = f.blocks
        swapped.swapAt(1, 2)
        expectRule(.height, height: 1, swapped, now: now)
    }

    /// Flipping any single byte of any encoded block makes validation fail at that block.
    @Test func everyByteFlipIsDetected() throws {
        let f = ChainFixture(blocks: 3, perBlock: 2)
        let encoded = f.blocks.map(\.encoded)
        for b in encoded.indices {
            for i in encoded[b].indices {
                var copy = encoded
                copy[b][i] ^= 0x01
                do {
                    _ = try ChainValidator.validate(encodedBlocks: copy, now: f.now)
                    Issue.record("flip of byte \(i) in block \(b) went unnoticed")
                } catch {
                    #expect(error.height == UInt64(b), "byte \(i) of block \(b): \(error)")
                }
            }
        }
    }

    @Test func genesisRules() {
        let f = ChainFixture(blocks: 0)
        #expect(throws: Never.self) { try LedgerState(genesis: f.genesis, now: f.now) }
        let other = DeviceIdentity.generate()
        // A genesis whose signature is by a key other than the signer's.
        let forged = ChainFixture(blocks: 0)
        let mixed = try! Block(decoding: CBOR.map(["header": f.genesis.header.cbor, "sig": .bytes(forged.genesis.signature), "entries": .array([])]).encoded)
        #expect(throws: KianaCoreError.self) { try LedgerState(genesis: mixed, now: f.now) }
        #expect(throws: KianaCoreError.self) { try ChainValidator.validate(blocks: [mixed], now: f.now) }
        _ = other
        #expect(throws: KianaCoreError.self) { try ChainValidator.validate(blocks: [], now: f.now) }
    }

    @Test func oversizedInputIsRejectedBeforeDecoding() {
        let big = [UInt8](repeating: 0, count: LedgerLimits.maxEntryBytes + 1)
        #expect(throws: KianaCoreError.self) { try Entry(decoding: big) }
        #expect(throws: KianaCoreError.self) { try Block(signedHeaderBytes: [UInt8](repeating: 0, count: LedgerLimits.maxHeaderBytes + 1), entryBytes: []) }
    }

    @Test func unknownFieldsAreRejected() throws {
        let f = ChainFixture(blocks: 1, perBlock: 1)
        guard case .map(var m) = f.blocks[1].entries[0].cbor else {
            Issue.record("not a map")
            return
        }
        m["extra"] = 1
        #expect(throws: KianaCoreError.self) { try Entry(cbor: .map(m)) }
    }
}

/// Votes recorded as entries change who may sign, in chain order.
@Suite struct LedgerMembershipTests {
    @Test func votedInDeviceMaySignAndVotedOutMayNot() throws {
        let f = ChainFixture(blocks: 1, perBlock: 1)
        let newcomer = DeviceIdentity.generate()
        let now = f.now
        func voteEntry(by who: DeviceIdentity, seq: UInt64, target: DeviceIdentity, add: Bool) -> Entry {
            let v = Vote(target: target.publicKey, authorize: add)
            return Entry(signedBy: who, network: f.genesis.hash, sequence: seq, hlc: HLC(wall: f.t0 + seq), kind: .authorityVote, payload: v.payload)
        }
        var chain = f.blocks
        func seal(_ entries: [Entry], by who: DeviceIdentity) -> Block {
            Block.seal(entries: entries, parent: chain.last!.header, parentHash: chain.last!.hash, time: chain.last!.header.time + 1, identity: who)
        }
        // Before the vote the newcomer cannot sign.
        #expect(throws: KianaCoreError.self) {
            try ChainValidator.validate(blocks: chain + [seal([f.entry(by: newcomer, seq: 1, wall: f.t0)], by: newcomer)], now: now)
        }
        chain.append(seal([voteEntry(by: f.owner, seq: 2, target: newcomer, add: true)], by: f.owner))
        var s = try ChainValidator.validate(blocks: chain, now: now)
        #expect(s.authorities == [f.owner.publicKey, newcomer.publicKey])
        // Now it can sign blocks and author entries.
        chain.append(seal([f.entry(by: newcomer, seq: 1, wall: f.t0 + 10)], by: newcomer))
        s = try ChainValidator.validate(blocks: chain, now: now)
        #expect(s.height == 3)
        // Dropping needs more than half of two: both must vote (the owner alone is not enough).
        chain.append(seal([voteEntry(by: f.owner, seq: 3, target: newcomer, add: false)], by: f.owner))
        s = try ChainValidator.validate(blocks: chain, now: now)
        #expect(s.authorities.count == 2)
        #expect(s.membership.votes.count == 1)
        // A device may vote itself out; then the drop passes.
        chain.append(seal([voteEntry(by: newcomer, seq: 2, target: newcomer, add: false)], by: newcomer))
        s = try ChainValidator.validate(blocks: chain, now: now)
        #expect(s.authorities == [f.owner.publicKey])
        // A block signed by the dropped device is rejected and named.
        do {
            _ = try ChainValidator.validate(blocks: chain + [seal([f.entry(by: newcomer, seq: 3, wall: f.t0 + 20)], by: newcomer)], now: now)
            Issue.record("dropped authority signed a block")
        } catch {
            #expect(error.rule == .authority && error.height == 6)
        }
    }

    /// A device moves its seat to a new key with one entry it writes and the new key co-signs:
    /// afterwards the new key signs and the old one cannot; others' votes are not needed, the old
    /// key's pending votes stop counting, and a forged or misdirected link is refused.
    @Test func rotationMovesTheSeatToTheNewKey() throws {
        let f = ChainFixture(blocks: 1, perBlock: 1)
        let net = f.genesis.hash
        let other = DeviceIdentity.generate()
        let next = DeviceIdentity.generate()
        var chain = f.blocks
        func seal(_ entries: [Entry], by who: DeviceIdentity) -> Block {
            Block.seal(entries: entries, parent: chain.last!.header, parentHash: chain.last!.hash, time: chain.last!.header.time + 1, identity: who)
        }
        func voteEntry(_ v: Vote, by who: DeviceIdentity, seq: UInt64) -> Entry {
            Entry(signedBy: who, network: net, sequence: seq, hlc: HLC(wall: f.t0 + 100 + seq), kind: .authorityVote, payload: v.payload)
        }
        // Two authorities; the owner also proposes a third device (pending: 1 of 2).
        chain.append(seal([voteEntry(Vote(target: other.publicKey, authorize: true), by: f.owner, seq: 2)], by: f.owner))
        let third = DeviceIdentity.generate()
        chain.append(seal([voteEntry(Vote(target: third.publicKey, authorize: true), by: f.owner, seq: 3)], by: f.owner))
        var s = try ChainValidator.validate(blocks: chain, now: f.now)
        #expect(s.authorities == [f.owner.publicKey, other.publicKey] && s.membership.tally[third.publicKey]?.count == 1)

        // Forged links are refused by rule: written by another device, signed by the wrong key, for another network.
        var stolen = Vote.rotation(network: net, old: f.owner.publicKey, new: next)
        #expect(stolen.problem(author: other.publicKey, network: net) != nil)
        stolen.proof = other.sign(Vote.rotationMessage(network: net, old: f.owner.publicKey, new: next.publicKey))
        #expect(stolen.problem(author: f.owner.publicKey, network: net) != nil)
        let elsewhere = Vote.rotation(network: [UInt8](repeating: 7, count: 32), old: f.owner.publicKey, new: next)
        for bad in [stolen, elsewhere] {
            do {
                _ = try ChainValidator.validate(blocks: chain + [seal([voteEntry(bad, by: f.owner, seq: 4)], by: f.owner)], now: f.now)
                Issue.record("a forged rotation was accepted")
            } catch { #expect(error.rule == .payload, "\(error)") }
        }

        // The real rotation: one entry by the old key, no vote by the other authority.
        let rotation = Vote.rotation(network: net, old: f.owner.publicKey, new: next)
        #expect(try Vote(payload: rotation.payload) == rotation)
        chain.append(seal([voteEntry(rotation, by: f.owner, seq: 4)], by: f.owner))
        s = try ChainValidator.validate(blocks: chain, now: f.now)
        #expect(s.authorities == [next.publicKey, other.publicKey])
        // The seat keeps its pending proposal, now cast by the new key.
        #expect(s.membership.tally[third.publicKey]?.count == 1)
        #expect(s.membership.votes.map(\.signer) == [next.publicKey])
        // The new key signs blocks and entries (its own sequence from 1); the old key cannot.
        chain.append(seal([f.entry(by: next, seq: 1, wall: f.t0 + 200)], by: next))
        s = try ChainValidator.validate(blocks: chain, now: f.now)
        #expect(s.height == UInt64(chain.count - 1))
        do {
            _ = try ChainValidator.validate(blocks: chain + [seal([f.entry(seq: 5, wall: f.t0 + 300)], by: f.owner)], now: f.now)
            Issue.record("the retired key signed an accepted block")
        } catch { #expect(error.rule == .authority) }
        // A rotation onto a key that already holds a seat changes nothing.
        let onto = Vote.rotation(network: net, old: next.publicKey, new: other)
        chain.append(seal([voteEntry(onto, by: next, seq: 2)], by: next))
        s = try ChainValidator.validate(blocks: chain, now: f.now)
        #expect(s.authorities == [next.publicKey, other.publicKey])
    }

    /// A drop under way against a device survives its rotation: the votes now concern the new
    /// key, and one more vote completes the drop (rotating cannot shake off a drop).
    @Test func aPendingDropFollowsTheRotatedSeat() throws {
        let a = DeviceIdentity.generate()
        let b = DeviceIdentity.generate()
        let c = DeviceIdentity.generate()
        let next = DeviceIdentity.generate()
        var m = Membership(authorities: [a.publicKey, b.publicKey, c.publicKey])
        try m.apply(signer: b.publicKey, vote: Vote(target: a.publicKey, authorize: false))
        #expect(m.tally[a.publicKey]?.count == 1)
        try m.apply(signer: a.publicKey, vote: Vote.rotation(network: [UInt8](repeating: 3, count: 32), old: a.publicKey, new: next))
        #expect(m.authorities == [next.publicKey, b.publicKey, c.publicKey])
        #expect(m.tally[a.publicKey] == nil && m.tally[next.publicKey]?.authorize == false && m.tally[next.publicKey]?.count == 1)
        try m.apply(signer: c.publicKey, vote: Vote(target: next.publicKey, authorize: false))
        #expect(m.authorities == [b.publicKey, c.publicKey])
    }

    @Test func votePayloadsRoundTripAndOldOnesStillDecode() throws {
        let a = DeviceIdentity.generate()
        let b = DeviceIdentity.generate()
        let plain = Vote(target: b.publicKey, authorize: false)
        #expect(try Vote(payload: plain.payload) == plain)
        #expect(try Vote(payload: .map(["target": .bytes(b.publicKey), "authorize": .bool(true)])).isRotation == false)
        let net = [UInt8](repeating: 1, count: 32)
        let r = Vote.rotation(network: net, old: a.publicKey, new: b)
        #expect(try Vote(payload: r.payload) == r)
        #expect(r.problem(author: a.publicKey, network: net) == nil)
        // A proof without replaces, a rotation that drops, a rotation to itself: malformed.
        guard case .map(var m) = r.payload else { return }
        var noReplaces = m
        noReplaces["replaces"] = nil
        #expect(throws: KianaCoreError.self) { try Vote(payload: .map(noReplaces)) }
        m["authorize"] = .bool(false)
        #expect(throws: KianaCoreError.self) { try Vote(payload: .map(m)) }
        let selfRotation = Vote.rotation(network: net, old: b.publicKey, new: b)
        #expect(throws: KianaCoreError.self) { try Vote(payload: selfRotation.payload) }
    }

    @Test func malformedVotePayloadIsRejected() {
        let f = ChainFixture(blocks: 1, perBlock: 1)
        let bad = Entry(
            signedBy: f.owner, network: f.genesis.hash, sequence: 5, hlc: HLC(wall: f.t0), kind: .authorityVote,
            payload: .map(["target": .bytes([1, 2]), "authorize": .bool(true)]))
        let b = Block.seal(entries: [bad], parent: f.blocks.last!.header, parentHash: f.blocks.last!.hash, time: f.t0 + 500, identity: f.owner)
        do {
            _ = try ChainValidator.validate(blocks: f.blocks + [b], now: f.now)
            Issue.record("accepted")
        } catch { #expect(error.rule == .payload) }
    }
}
