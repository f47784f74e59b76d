import Foundation
import GRDB
import KianaCore
import KianaStore
import Testing

/// Blocks from elsewhere that must be refused, held, or flagged.
@Suite struct ImportAdversarialTests {
    let a = DeviceIdentity.generate()
    let b = DeviceIdentity.generate()
    let t0: UInt64 = 1_764_288_000_000

    /// Two stores of one network with authorities a and b.
    func pair() throws -> (LedgerStore, LedgerStore, Block) {
        let g = Block.genesis(identity: a, time: t0, others: [b.publicKey])
        let sa = LedgerStore(database: try KianaDatabase())
        let sb = LedgerStore(database: try KianaDatabase())
        try sa.initialize(genesis: g, now: t0)
        try sb.initialize(genesis: g, now: t0)
        return (sa, sb, g)
    }

    func put(_ text: String) -> KnowledgeOp { .put(ItemID.random(), KnowledgeFields(text: text)) }

    @Test func importIsIdempotentAndSideBranchesAreKept() throws {
        let (sa, sb, _) = try pair()
        let ra = try sa.write([put("from a")], identity: a, now: t0 + 10)
        let rb = try sb.write([put("from b")], identity: b, now: t0 + 20)
        // Equal heights: the lower hash wins on both sides.
        let aWins = ForkChoice.prefers(height: 1, hash: ra.block.hash, over: 1, rb.block.hash)
        #expect(try sa.importBlock(rb.block, now: t0 + 30) == (aWins ? .sideBranch : .newHead(reorganized: true)))
        #expect(try sa.importBlock(rb.block, now: t0 + 30) == .duplicate)
        #expect(try sb.importBlock(ra.block, now: t0 + 30) == (aWins ? .newHead(reorganized: true) : .sideBranch))
        #expect(try sa.head() == sb.head())
        #expect(try sa.sideBranches().count == 1)
        // The loser's entry went back to pending on its author's device and is re-included.
        let loser = aWins ? (sb, b) : (sa, a)
        #expect(try loser.0.counts().pending == 1)
        let resealed = try #require(try loser.0.sealPending(identity: loser.1, now: t0 + 40))
        let winner = aWins ? sa : sb
        #expect(try winner.importBlock(resealed, now: t0 + 50) == .newHead(reorganized: false))
        #expect(try winner.items().count == 2 && loser.0.items().count == 2)
        _ = try winner.verify(now: t0 + 100)
        _ = try loser.0.verify(now: t0 + 100)
    }

    /// A batch is taken in one line while it extends the head, block by block after that: a
    /// leading duplicate, a line, then a sibling (a side branch); the search index follows.
    @Test func batchTakesTheLineThenTheRest() throws {
        let (sa, sb, g) = try pair()
        let word = ItemID.random()
        var blocks: [Block] = []
        for i in 0..<5 {
            let op: KnowledgeOp = i == 3 ? .put(word, KnowledgeFields(text: "edited marigold")) : i == 0 ? .put(word, KnowledgeFields(text: "first tulip")) : put("fact \(i)")
            blocks.append(try sb.write([op], identity: b, now: t0 + 10 + UInt64(i)).block)
        }
        // A sibling of block 3 (parent block 2), sealed by a on its own copy of blocks 1-2.
        let sc = LedgerStore(database: try KianaDatabase())
        try sc.initialize(genesis: g, now: t0)
        _ = try sc.importBatch(Array(blocks.prefix(2)), now: t0 + 100)
        let sibling = try sc.write([put("sibling")], identity: a, now: t0 + 20).block
        #expect(sibling.header.parent == blocks[1].hash)
        let batch = [g] + blocks + [sibling]
        let r = try sa.importBatch(batch, now: t0 + 100)
        #expect(r.refused == nil)
        #expect(r.outcomes.first == .duplicate)
        #expect(r.outcomes[1...5].allSatisfy { $0 == .newHead(reorganized: false) })
        #expect(r.outcomes.last == .sideBranch)
        #expect(try sa.head()?.hash == blocks.last!.hash)
        #expect(try sa.sideBranches().count == 1)
        let search = SearchStore(database: sa.database)
        #expect(try search.keywordSearch("marigold", limit: 5).map(\.0) == [word])
        #expect(try search.keywordSearch("tulip", limit: 5).isEmpty)
        try sa.database.writer.write { db in try db.execute(sql: "INSERT INTO itemSearch(itemSearch, rank) VALUES ('integrity-check', 1)") }
        _ = try sa.verify(now: t0 + 1000)
        // Again: all duplicates, nothing changes.
        #expect(try sa.importBatch(batch, now: t0 + 200).outcomes.allSatisfy { $0 == .duplicate })
    }

    /// The line stops at a refused block: the blocks before it are kept, the refusal names it.
    @Test func refusalInTheLineKeepsThePrefix() throws {
        let (sa, sb, _) = try pair()
        var blocks: [Block] = []
        for i in 0..<4 { blocks.append(try sb.write([put("fact \(i)")], identity: b, now: t0 + 10 + UInt64(i)).block) }
        // Block 3 re-signed by a stranger: the authority rule refuses it.
        let stranger = DeviceIdentity.generate()
        let forged = Block.seal(entries: blocks[2].entries, parent: blocks[1].header, parentHash: blocks[1].hash, time: blocks[2].header.time, identity: stranger)
        let r = try sa.importBatch([blocks[0], blocks[1], forged, blocks[3]], now: t0 + 100)
        #expect(r.refused?.index == 2)
        #expect(r.refused?.rule == "authority")
        #expect(r.outcomes.count == 2)
        #expect(try sa.head()?.hash == blocks[1].hash)
        #expect(try sa.items().count == 2)
        // The rest arrives honestly later and continues the line.
        #expect(try sa.importBatch(Array(blocks[2...]), now: t0 + 100).stored == 2)
        #expect(try sa.head()?.hash == blocks[3].hash)
        _ = try sa.verify(now: t0 + 1000)
    }

    @Test func forgedMerkleRootIsRejectedWithTheRule() throws {
        let (sa, sb, g) = try pair()
        let r = try sb.write([put("x")], identity: b, now: t0 + 10)
        // Same entries, header claiming another root, validly signed by b.
        var h = r.block.header
        h.entryRoot = SHA.hash([1])
        let forged = try Block(
            decoding: CBOR.map([
                "header": h.cbor, "sig": .bytes(b.sign(Array("KIANA-BLOCK-V1".utf8) + h.hash)),
                "entries": .array(r.block.entries.map(\.cbor)),
            ]).encoded)
        #expect(forged.header.parent == g.hash)
        do {
            _ = try sa.importBlock(forged, now: t0 + 20)
            Issue.record("forged root accepted")
        } catch {
            #expect(error.message.contains("merkle-root"), "\(error.message)")
        }
        #expect(try sa.head()?.height == 0)
    }

    @Test func blockFromADroppedAuthorityIsRejected() throws {
        let (sa, sb, _) = try pair()
        // Both vote b out (b may vote itself out); the drop passes with 2 of 2.
        let v1 = try sa.write(vote: Vote(target: b.publicKey, authorize: false), identity: a, now: t0 + 10)
        _ = try sb.importBlock(v1.block, now: t0 + 11)
        let v2 = try sb.write(vote: Vote(target: b.publicKey, authorize: false), identity: b, now: t0 + 12)
        #expect(try sa.importBlock(v2.block, now: t0 + 13) == .newHead(reorganized: false))
        #expect(try sa.authorities() == [a.publicKey])
        // b's store still lets b seal nothing more: it is no longer an authority there either.
        #expect(throws: KianaStoreError.self) { _ = try sb.write([self.put("late")], identity: self.b, now: t0 + 20) }
        // A block b signs anyway (built by hand on the head) is refused by a.
        let head = try sa.blocks().last!
        let e = Entry(
            signedBy: b, network: try sa.network()!, sequence: 99, hlc: HLC(wall: t0 + 30), kind: .knowledgePut,
            payload: put("sneaky").payload)
        let rogue = Block.seal(entries: [e], parent: head.header, parentHash: head.hash, time: t0 + 30, identity: b)
        do {
            _ = try sa.importBlock(rogue, now: t0 + 40)
            Issue.record("block by a dropped authority accepted")
        } catch {
            #expect(error.message.contains("[authority]"), "\(error.message)")
        }
    }

    @Test func equivocationIsFlaggedAndReported() throws {
        let (sa, sb, g) = try pair()
        _ = sb
        // b signs two different entries with sequence 1, sealed on two branches.
        let e1 = Entry(signedBy: b, network: g.hash, sequence: 1, hlc: HLC(wall: t0 + 1), kind: .knowledgePut, payload: put("one").payload)
        let e2 = Entry(signedBy: b, network: g.hash, sequence: 1, hlc: HLC(wall: t0 + 2), kind: .knowledgePut, payload: put("two").payload)
        let b1 = Block.seal(entries: [e1], parent: g.header, parentHash: g.hash, time: t0 + 10, identity: b)
        let b2 = Block.seal(entries: [e2], parent: g.header, parentHash: g.hash, time: t0 + 11, identity: b)
        _ = try sa.importBlock(b1, now: t0 + 20)
        _ = try sa.importBlock(b2, now: t0 + 20)
        let eq = try sa.equivocations()
        #expect(eq.count == 1)
        #expect(eq.first?.author == b.publicKey && eq.first?.sequence == 1)
        #expect(Set(eq.first?.entryIDs ?? []) == [e1.id, e2.id])
        #expect(try sa.sequenceGaps().isEmpty)
        // On one branch the reuse is simply invalid.
        let b3 = Block.seal(entries: [e2], parent: b1.header, parentHash: b1.hash, time: t0 + 12, identity: b)
        #expect(throws: KianaStoreError.self) { _ = try sa.importBlock(b3, now: t0 + 30) }
    }

    @Test func sequenceGapsAreReported() throws {
        let (sa, _, g) = try pair()
        let e1 = Entry(signedBy: b, network: g.hash, sequence: 1, hlc: HLC(wall: t0 + 1), kind: .knowledgePut, payload: put("one").payload)
        let e4 = Entry(signedBy: b, network: g.hash, sequence: 4, hlc: HLC(wall: t0 + 2), kind: .knowledgePut, payload: put("four").payload)
        let blk = Block.seal(entries: [e1, e4], parent: g.header, parentHash: g.hash, time: t0 + 10, identity: b)
        #expect(try sa.importBlock(blk, now: t0 + 20) == .newHead(reorganized: false))
        let gaps = try sa.sequenceGaps()
        #expect(gaps.count == 1)
        #expect(gaps.first?.author == b.publicKey && gaps.first?.missing == [2, 3])
    }

    @Test func orphansAreHeldBoundedAndConnectedLater() throws {
        let (sa, sb, _) = try pair()
        var chain: [Block] = []
        for i in 0..<5 { chain.append(try sb.write([put("o\(i)")], identity: b, now: t0 + UInt64(i)).block) }
        // Children first: held as orphans, not as valid blocks.
        for blk in chain.dropFirst().reversed() { #expect(try sa.importBlock(blk, now: t0 + 100) == .orphan) }
        #expect(try sa.head()?.height == 0)
        #expect(try sa.orphanCount() == 4)
        // The missing parent connects them all.
        #expect(try sa.importBlock(chain[0], now: t0 + 100) == .newHead(reorganized: true) || sa.head()?.height == 5)
        #expect(try sa.head()?.height == 5)
        #expect(try sa.orphanCount() == 0)
        // The pool is bounded.
        let far = try pair().1
        var junk = try far.blocks().last!
        var held: [Block] = []
        for i in 0..<(LedgerStore.maxOrphans + 20) {
            junk = Block.seal(
                entries: [
                    Entry(
                        signedBy: b, network: junk.entries.first?.network ?? junk.hash, sequence: UInt64(i + 1), hlc: HLC(wall: t0), kind: .knowledgePut,
                        payload: put("j").payload)
                ],
                parent: junk.header, parentHash: junk.hash, time: t0, identity: b)
            held.append(junk)
        }
        for blk in held.dropFirst() { _ = try sa.importBlock(blk, now: t0 + 200) }
        #expect(try sa.orphanCount() == LedgerStore.maxOrphans)
    }

    /// a's entry left a's chain for b's longer one: it waits in a's pending pool. Returns both
    /// stores and b's head.
    func aPendingOnA() throws -> (LedgerStore, LedgerStore, Block) {
        let (sa, sb, _) = try pair()
        _ = try sa.write([put("from a")], identity: a, now: t0 + 10)
        let b1 = try sb.write([put("b one")], identity: b, now: t0 + 20).block
        let b2 = try sb.write([put("b two")], identity: b, now: t0 + 21).block
        _ = try sa.importBlocks([b1, b2], now: t0 + 30)
        #expect(try sa.pendingCount() == 1)
        return (sa, sb, b2)
    }

    /// A pending entry shapes what is served and is sealed into the next block: a forged one
    /// (a signature byte flipped on disk, its ID unchanged) is damage at the next check, not
    /// served and signed over.
    @Test func aForgedPendingEntryIsDamage() throws {
        let (sa, _, _) = try aPendingOnA()
        _ = try sa.verify(now: t0 + 40)
        try sa.database.writer.write { db in
            let row = try #require(try Row.fetchOne(db, sql: "SELECT entry.id, entry.raw FROM pending JOIN entry ON entry.id = pending.entryId"))
            var raw = [UInt8](row[1] as Data)
            let e = try Entry(decoding: raw)
            let at = try #require((0...(raw.count - 64)).first { Array(raw[$0..<($0 + 64)]) == e.signature })
            raw[at + 7] ^= 1
            try db.execute(sql: "UPDATE entry SET raw = ? WHERE id = ?", arguments: [Data(raw), row[0] as Data])
        }
        #expect {
            _ = try sa.verify(now: t0 + 50)
        } throws: { ($0 as? KianaStoreError)?.code == .corrupt && "\($0)".contains("pending entry") && "\($0)".contains("[entry-signature]") }
        #expect(throws: KianaStoreError.self) { _ = try sa.startupCheck(now: t0 + 50) }
    }

    /// An entry that can never be sealed on this chain (its author's sequence number was used by
    /// another entry meanwhile) stays pending on a device that cannot sign for its author, and
    /// costs one seal attempt per call, not one per block allowed: the node seals on every head
    /// tick, and a loop that kept trying made a tick take half a minute (the announcer stalled
    /// and shutdown waited on it). Its author's device re-signs it (decision 111).
    @Test func anUnsealableEntryCostsOneAttempt() throws {
        let (sa, sb, b2) = try aPendingOnA()
        #expect(try sa.head()?.hash == b2.hash)
        // Another entry of a's with the same sequence number reaches the chain first.
        let net = try #require(try sa.network())
        let twin = Entry(
            signedBy: a, network: net, sequence: 1, hlc: HLC(wall: t0 + 40, logical: 0), kind: .knowledgePut,
            payload: put("a's other first entry").payload)
        let b3 = Block.seal(entries: [twin], parent: b2.header, parentHash: b2.hash, time: t0 + 41, identity: b)
        #expect(try sa.importBlock(b3, now: t0 + 42) == .newHead(reorganized: false))
        // b's key cannot sign for a: the entry stays, one attempt per call.
        let run = try sa.sealAllPending(identity: b, now: t0 + 50)
        #expect(run == LedgerStore.SealRun(blocks: 0, entries: 0, attempts: 1))
        #expect(try sa.pendingCount() == 1)
        #expect(try sa.head()?.hash == b3.hash)
        // a's own key signs it again under sequence number 2, and it is sealed.
        let mine = try sa.sealAllPending(identity: a, now: t0 + 60)
        #expect(mine == LedgerStore.SealRun(blocks: 1, entries: 1, attempts: 2, resigned: 1, retired: 0))
        #expect(try sa.pendingCount() == 0 && sa.stuckReport(identity: a.publicKey).signedAgain == 1)
        #expect(try sa.items().compactMap(\.text).sorted() == ["a's other first entry", "b one", "b two", "from a"])
        _ = try sa.verify(now: t0 + 100)
    }

    /// The device restored from an older copy of its own data directory: it does not know the
    /// sequence numbers it used after the copy was made, so its next write reuses one. Whichever
    /// of the two entries the fork choice keeps, the other is signed again by the device (which
    /// holds the key) and lands; the peer retires its stuck copy; both converge with every
    /// acknowledged write present once and verify. Run until both fork outcomes were seen.
    @Test(arguments: [true, false]) func aWriteOnARestoredCopyLands(restoredWins: Bool) throws {
        for _ in 0..<200 {
            let (original, peer, g) = try pair()
            let first = try original.write([put("before the backup")], identity: a, now: t0 + 10).block
            _ = try peer.importBlock(first, now: t0 + 11)
            // The backup: a copy of the original with the first write only.
            let restored = LedgerStore(database: try KianaDatabase())
            try restored.initialize(genesis: g, now: t0)
            _ = try restored.importBlock(first, now: t0 + 12)
            // The original writes once more (acknowledged, reaches the peer), then is lost.
            let late = try original.write([put("after the backup")], identity: a, now: t0 + 20)
            _ = try peer.importBlock(late.block, now: t0 + 21)
            // The restored copy writes with the same sequence number (2).
            let again = try restored.write([put("after the restore")], identity: a, now: t0 + 30)
            #expect(again.entries[0].sequence == late.entries[0].sequence)
            let wins = ForkChoice.prefers(height: 2, hash: again.block.hash, over: 2, late.block.hash)
            guard wins == restoredWins else { continue }
            // Sync carries canonical chains only: the restored device sees the original's block
            // only when it wins.
            if !restoredWins { _ = try restored.importBlock(late.block, now: t0 + 40) }
            _ = try peer.importBlock(again.block, now: t0 + 40)
            #expect(try restored.head() == peer.head())
            // The losing entry waits where it was on the chain before: the original's on the
            // peer, the restored copy's on the restored device (elsewhere only on a side branch).
            #expect(try restored.pendingCount() == (restoredWins ? 0 : 1) && peer.pendingCount() == (restoredWins ? 1 : 0))
            // The peer cannot sign for a: it reports the entry stuck, and offers a's entries to a.
            #expect(try peer.sealAllPending(identity: b, now: t0 + 50).blocks == 0)
            #expect(try peer.stuckReport(identity: b.publicKey).stuck.map(\.writes) == (restoredWins ? [1] : []))
            let offered = try peer.stuckEntries(of: a.publicKey)
            #expect(offered.count == 1)
            // The restored device takes what it never saw (the original's write), nothing else.
            #expect(try restored.adoptOwnEntries(offered, identity: a, now: t0 + 50) == (restoredWins ? 1 : 0))
            if restoredWins { #expect(try restored.pendingCount() == 1) }
            #expect(try restored.adoptOwnEntries(offered, identity: a, now: t0 + 50) == 0)
            #expect(try peer.adoptOwnEntries(offered, identity: b, now: t0 + 50) == 0)
            let run = try restored.sealAllPending(identity: a, now: t0 + 50)
            #expect(run.resigned == 1 && run.blocks == 1)
            _ = try peer.importBlocks(try restored.blocks().filter { $0.height > 2 }, now: t0 + 60)
            // Where the old entry waited, it is retired: its content landed.
            #expect(try peer.sealAllPending(identity: b, now: t0 + 70).retired == (restoredWins ? 1 : 0))
            for s in [restored, peer] {
                #expect(try s.head() == restored.head())
                #expect(try s.pendingCount() == 0)
                #expect(try s.items().compactMap(\.text).sorted() == ["after the backup", "after the restore", "before the backup"])
                // Every item's version names an entry on the chain, the same on both devices.
                for item in try s.items() {
                    let last = try #require(item.lastEntry)
                    #expect(try s.findEntry(idPrefix: Hex.encode(last)).entry.id == last)
                }
                _ = try s.verify(now: t0 + 100)
            }
            #expect(try restored.items().map(\.lastEntry) == peer.items().map(\.lastEntry))
            // Nothing more to do on either side.
            #expect(try restored.sealAllPending(identity: a, now: t0 + 80) == LedgerStore.SealRun(attempts: 1))
            return
        }
        Issue.record("the fork outcome \(restoredWins) was never drawn in 200 tries")
    }

    /// What a member offers as this device's own stuck entries is taken only if it is that:
    /// signed by this device's key for this network, well-formed, not a vote, not from the
    /// future, and never seen here. Anything else is ignored and nothing is stored.
    @Test func offeredEntriesAreCheckedBeforeTheyAreTaken() throws {
        let (sa, _, g) = try pair()
        let net = g.hash
        func entry(_ by: DeviceIdentity, network: [UInt8] = g.hash, seq: UInt64 = 1, at: UInt64 = 1, kind: EntryKind = .knowledgePut) -> Entry {
            let payload = kind == .authorityVote ? Vote(target: b.publicKey, authorize: false).payload : put("offered").payload
            return Entry(signedBy: by, network: network, sequence: seq, hlc: HLC(wall: t0 + at), kind: kind, payload: payload)
        }
        let known = try sa.write([put("known")], identity: a, now: t0 + 5).entries[0]
        var forged = entry(a).encoded
        forged[forged.count - 1] ^= 1  // a flipped byte (the payload's last): the signature fails
        let refused: [[UInt8]] = [
            entry(b).encoded,  // another key's
            entry(a, network: [UInt8](repeating: 7, count: 32)).encoded,  // another network's
            forged,
            entry(a, kind: .authorityVote).encoded,
            entry(a, at: 3_600_000).encoded,  // an hour ahead of `now`
            known.encoded,
            [0xA1, 0x61, 0x76],  // not an entry
        ]
        let before = try sa.counts()
        #expect(try sa.adoptOwnEntries(refused, identity: a, now: t0 + 10) == 0)
        #expect(try sa.counts() == before)
        _ = net
        #expect(try sa.adoptOwnEntries([entry(a, seq: 7).encoded], identity: a, now: t0 + 10) == 1)
        #expect(try sa.pendingCount() == 1)
        _ = try sa.verify(now: t0 + 100)
    }

    /// A vote is never signed again (votes count in chain order, so a late one could undo a
    /// later decision): it stays stuck and is reported.
    @Test func aStuckVoteIsReportedNotSignedAgain() throws {
        let (sa, _, g) = try pair()
        let net = g.hash
        let c = DeviceIdentity.generate()
        let first = Entry(signedBy: a, network: net, sequence: 1, hlc: HLC(wall: t0 + 1), kind: .knowledgePut, payload: put("first").payload)
        let vote = Entry(
            signedBy: a, network: net, sequence: 1, hlc: HLC(wall: t0 + 2), kind: .authorityVote, payload: Vote(target: c.publicKey, authorize: true).payload)
        let fromB = Entry(signedBy: b, network: net, sequence: 1, hlc: HLC(wall: t0 + 3), kind: .knowledgePut, payload: put("from b").payload)
        // The vote's branch is canonical first; the longer one carrying `first` takes over.
        let side = Block.seal(entries: [vote], parent: g.header, parentHash: g.hash, time: t0 + 3, identity: a)
        let main1 = Block.seal(entries: [first], parent: g.header, parentHash: g.hash, time: t0 + 3, identity: b)
        let main2 = Block.seal(entries: [fromB], parent: main1.header, parentHash: main1.hash, time: t0 + 4, identity: b)
        _ = try sa.importBlock(side, now: t0 + 5)
        _ = try sa.importBlocks([main1, main2], now: t0 + 6)
        #expect(try sa.pendingCount() == 1)
        let run = try sa.sealAllPending(identity: a, now: t0 + 10)
        #expect(run.resigned == 0 && run.blocks == 0)
        #expect(try sa.pendingCount() == 1)
        #expect(try sa.stuckReport(identity: a.publicKey).stuck == [LedgerStore.Stuck(author: a.publicKey, writes: 0, votes: 1)])
        #expect(try sa.stuckEntries(of: a.publicKey).isEmpty)
        _ = try sa.verify(now: t0 + 100)
    }

    /// A vote written after a stuck write and not stuck itself goes along when the write is
    /// signed again: left behind, its lower number would be stranded below the new ones.
    @Test func aYoungerVoteGoesAlongWithTheWritesSignedAgain() throws {
        let (original, peer, g) = try pair()
        let c = DeviceIdentity.generate()
        let first = try original.write([put("first")], identity: a, now: t0 + 10).block
        _ = try peer.importBlock(first, now: t0 + 11)
        let restored = LedgerStore(database: try KianaDatabase())
        try restored.initialize(genesis: g, now: t0)
        _ = try restored.importBlock(first, now: t0 + 12)
        // The original's last write, and two of b's: the peer's chain is the longer.
        let late = try original.write([put("late")], identity: a, now: t0 + 20).block
        _ = try peer.importBlock(late, now: t0 + 21)
        for i in 0..<2 { _ = try peer.write([put("b \(i)")], identity: b, now: t0 + 22 + UInt64(i)) }
        // The restored copy writes (sequence 2, taken) and then votes (sequence 3, free).
        _ = try restored.write([put("after the restore")], identity: a, now: t0 + 30)
        _ = try restored.write(vote: Vote(target: c.publicKey, authorize: true), identity: a, now: t0 + 31)
        _ = try restored.importBlocks(try peer.blocks().filter { $0.height > 0 }, now: t0 + 40)
        #expect(try restored.pendingCount() == 2)
        let run = try restored.sealAllPending(identity: a, now: t0 + 50)
        #expect(run.resigned == 2 && run.blocks >= 1, "\(run)")
        #expect(try restored.pendingCount() == 0)
        #expect(try restored.membership().votes.contains { $0.vote.target == c.publicKey })
        #expect(try restored.items().compactMap(\.text).sorted() == ["after the restore", "b 0", "b 1", "first", "late"])
        _ = try restored.verify(now: t0 + 100)
    }

    /// An entry superseded by its copy that a reorg makes canonical after all: the pending copy
    /// is superseded by it instead, so the write lands once, and the state names the original.
    @Test func anOriginalThatWinsAfterAllRetiresItsCopy() throws {
        let (sa, _, g) = try pair()
        let net = g.hash
        func entry(_ by: DeviceIdentity, _ seq: UInt64, _ at: UInt64, _ text: String) -> Entry {
            Entry(signedBy: by, network: net, sequence: seq, hlc: HLC(wall: t0 + at), kind: .knowledgePut, payload: put(text).payload)
        }
        let first = entry(a, 1, 1, "first")
        let mine = entry(a, 1, 2, "mine")
        // The branch holding `mine` is canonical first, then a longer one with `first` wins.
        let side = Block.seal(entries: [mine], parent: g.header, parentHash: g.hash, time: t0 + 3, identity: a)
        let main1 = Block.seal(entries: [first], parent: g.header, parentHash: g.hash, time: t0 + 3, identity: b)
        let main2 = Block.seal(entries: [entry(a, 2, 4, "a two")], parent: main1.header, parentHash: main1.hash, time: t0 + 4, identity: b)
        _ = try sa.importBlock(side, now: t0 + 5)
        _ = try sa.importBlocks([main1, main2], now: t0 + 6)
        #expect(try sa.pendingCount() == 1)
        // Signed again (sequence 2), not sealed yet: a resign step alone.
        #expect(try sa.resignStuck(identity: a, now: t0 + 7) == LedgerStore.ResignRun(resigned: 1, retired: 0))
        #expect(try sa.pendingCount() == 1)
        // The side branch grows past the main one (a third device extended it): `mine` is
        // canonical after all, and `first` leaves the chain.
        let side2 = Block.seal(entries: [entry(b, 1, 8, "b one")], parent: side.header, parentHash: side.hash, time: t0 + 8, identity: b)
        let side3 = Block.seal(entries: [entry(b, 2, 9, "b two")], parent: side2.header, parentHash: side2.hash, time: t0 + 9, identity: a)
        _ = try sa.importBlocks([side2, side3], now: t0 + 10)
        #expect(try sa.head()?.hash == side3.hash)
        let run = try sa.sealAllPending(identity: a, now: t0 + 11)
        // `mine` lands once (its copy retired); `first` is signed again and lands too, and so
        // is the younger "a two" with it (numbers follow the clock).
        let onChain = try sa.blocks().flatMap(\.entries)
        #expect(onChain.filter { $0.payload == mine.payload }.map(\.id) == [mine.id])
        #expect(onChain.filter { $0.payload == first.payload }.count == 1)
        #expect(try sa.items().compactMap(\.text).sorted() == ["a two", "b one", "b two", "first", "mine"])
        let report = try sa.stuckReport(identity: a.publicKey)
        #expect(try sa.pendingCount() == 0, "\(run) \(report) \(onChain.map { "\($0.author == a.publicKey ? "a" : "b")\($0.sequence)" })")
        #expect(try sa.items().first { $0.text == "mine" }?.lastEntry == mine.id)
        _ = try sa.verify(now: t0 + 100)
    }

    /// Two copies of one device (one key) both re-sign the same stuck write: the copy that lands
    /// second is retired by content wherever it waits, so the write lands once.
    @Test func aWriteResignedByTwoCopiesLandsOnce() throws {
        let (sa, sb, g) = try pair()
        let net = g.hash
        let first = Entry(signedBy: a, network: net, sequence: 1, hlc: HLC(wall: t0 + 1), kind: .knowledgePut, payload: put("first").payload)
        let stuck = Entry(signedBy: a, network: net, sequence: 1, hlc: HLC(wall: t0 + 2), kind: .knowledgePut, payload: put("stuck").payload)
        // The stuck write waits in both copies' pools (its block lost the fork on both).
        let side = Block.seal(entries: [stuck], parent: g.header, parentHash: g.hash, time: t0 + 3, identity: a)
        let main1 = Block.seal(entries: [first], parent: g.header, parentHash: g.hash, time: t0 + 3, identity: b)
        let main2 = Block.seal(
            entries: [Entry(signedBy: b, network: net, sequence: 1, hlc: HLC(wall: t0 + 4), kind: .knowledgePut, payload: put("b").payload)],
            parent: main1.header, parentHash: main1.hash, time: t0 + 4, identity: b)
        let copy2 = LedgerStore(database: try KianaDatabase())
        try copy2.initialize(genesis: g, now: t0)
        for s in [sa, copy2] {
            _ = try s.importBlock(side, now: t0 + 5)
            _ = try s.importBlocks([main1, main2], now: t0 + 6)
            #expect(try s.pendingCount() == 1)
        }
        // Both copies re-sign it (with the same clock and payload, sequence 2 on both).
        let r1 = try sa.sealAllPending(identity: a, now: t0 + 10)
        let r2 = try copy2.sealAllPending(identity: a, now: t0 + 11)
        #expect(r1.resigned == 1 && r2.resigned == 1)
        // The peer takes copy one's block, then copy two's (a sibling: a side branch or a reorg).
        let b1 = try #require(try sa.blocks().last)
        let b2 = try #require(try copy2.blocks().last)
        _ = try sb.importBlocks([side, main1, main2, b1], now: t0 + 20)
        _ = try sb.importBlock(b2, now: t0 + 21)
        _ = try sb.sealAllPending(identity: b, now: t0 + 30)
        #expect(try sb.items().filter { $0.text == "stuck" }.count == 1)
        #expect(try sb.pendingCount() == 0)
        _ = try sb.verify(now: t0 + 100)
    }
    /// Blocks a batch validated on arrival move the verified mark, so a restart does not verify
    /// a synced ledger again; a block sealed here (not validated as a chain) stops the mark, and
    /// damage under the mark is still found by the start-up check.
    @Test func syncedBlocksAreVerifiedOnceNotAgainAtStart() throws {
        let (sa, sb, g) = try pair()
        #expect(try sa.lastVerified()?.hash == g.hash)
        var blocks: [Block] = []
        for i in 0..<5 { blocks.append(try sb.write([put("fact \(i)")], identity: b, now: t0 + 10 + UInt64(i)).block) }
        #expect(try sa.importBatch(blocks, now: t0 + 100).stored == 5)
        #expect(try sa.lastVerified()?.height == 5 && sa.lastVerified()?.hash == blocks[4].hash)
        var check = try sa.startupCheck(now: t0 + 200)
        #expect(check.newlyVerified == 0 && check.previouslyVerified == 5 && check.height == 5)

        // A refused block stops the mark at the valid prefix.
        let sc = LedgerStore(database: try KianaDatabase())
        try sc.initialize(genesis: g, now: t0)
        let stranger = DeviceIdentity.generate()
        let forged = Block.seal(entries: blocks[2].entries, parent: blocks[1].header, parentHash: blocks[1].hash, time: blocks[2].header.time, identity: stranger)
        #expect(try sc.importBatch([blocks[0], blocks[1], forged], now: t0 + 100).refused?.rule == "authority")
        #expect(try sc.lastVerified()?.hash == blocks[1].hash)

        // A write sealed here leaves the mark where it was, and later synced blocks on top of
        // it do not move it: the start-up check verifies both.
        let local = try sa.write([put("sealed on a")], identity: a, now: t0 + 300).block
        #expect(try sa.lastVerified()?.hash == blocks[4].hash)
        #expect(try sb.importBatch([local], now: t0 + 310).stored == 1)
        #expect(try sb.lastVerified()?.height == 0, "b sealed its own blocks")
        let next = try sb.write([put("from b again")], identity: b, now: t0 + 320).block
        #expect(try sa.importBatch([next], now: t0 + 330).stored == 1)
        #expect(try sa.lastVerified()?.hash == blocks[4].hash)
        check = try sa.startupCheck(now: t0 + 400)
        #expect(check.newlyVerified == 2 && check.height == 7)

        // An entry of a synced block changed on disk under the mark: found, named.
        let clean = try sa.database.writer.read { db in try Data.fetchOne(db, sql: "SELECT raw FROM entry WHERE id = ?", arguments: [Data(blocks[2].entries[0].id)]) }
        let id = Data(blocks[2].entries[0].id)
        try sa.database.writer.write { db in
            var raw = try #require(try Data.fetchOne(db, sql: "SELECT raw FROM entry WHERE id = ?", arguments: [id]))
            let at = try #require(raw.range(of: Data("fact 2".utf8)))
            raw[at.upperBound - 1] = UInt8(ascii: "9")
            try db.execute(sql: "UPDATE entry SET raw = ? WHERE id = ?", arguments: [raw, id])
        }
        #expect { try sa.startupCheck(now: t0 + 500) } throws: { ($0 as? KianaStoreError)?.code == .corrupt }
        try sa.database.writer.write { db in try db.execute(sql: "UPDATE entry SET raw = ? WHERE id = ?", arguments: [clean, id]) }
        #expect(try sa.startupCheck(now: t0 + 500).newlyVerified == 2)
    }

    /// Bytes below the mark that no hash covers (signatures), changed on disk, or kept from a row
    /// that was there before the block arrived: the start-up check verifies everything again and
    /// names the damage; an unreadable mark is no mark.
    @Test func bytesBelowTheMarkAreTheBytesVerified() throws {
        let (sa, sb, _) = try pair()
        var blocks: [Block] = []
        for i in 0..<6 { blocks.append(try sb.write([put("fact \(i)")], identity: b, now: t0 + 10 + UInt64(i)).block) }
        #expect(try sa.importBatch(Array(blocks.prefix(4)), now: t0 + 100).stored == 4)
        let mark = try #require(try sa.lastVerified())
        #expect(mark.height == 4)
        func flip(_ table: String, _ column: String, key: String, _ value: Data, at needle: [UInt8]) throws {
            try sa.database.writer.write { db in
                var raw = try #require(try Data.fetchOne(db, sql: "SELECT \(column) FROM \(table) WHERE \(key) = ?", arguments: [value]))
                let at = try #require(raw.range(of: Data(needle)))
                raw[at.lowerBound + 10] ^= 0x01
                try db.execute(sql: "UPDATE \(table) SET \(column) = ? WHERE \(key) = ?", arguments: [raw, value])
            }
        }
        func restore(_ table: String, _ column: String, key: String, _ value: Data, _ body: () throws -> Void) throws {
            let saved = try sa.database.writer.read { db in try Data.fetchOne(db, sql: "SELECT \(column) FROM \(table) WHERE \(key) = ?", arguments: [value]) }
            try body()
            try sa.database.writer.write { db in try db.execute(sql: "UPDATE \(table) SET \(column) = ? WHERE \(key) = ?", arguments: [saved, value]) }
        }
        func refused(_ rule: String) -> Bool {
            do {
                _ = try sa.startupCheck(now: t0 + 200)
                return false
            } catch {
                return error.code == .corrupt && error.message.contains(rule)
            }
        }
        // A block's signature: no hash covers it.
        try restore("block", "signedHeader", key: "hash", Data(blocks[1].hash)) {
            try flip("block", "signedHeader", key: "hash", Data(blocks[1].hash), at: blocks[1].signature)
            #expect(refused("block-signature"))
        }
        // An entry's signature: its ID does not cover it either.
        try restore("entry", "raw", key: "id", Data(blocks[2].entries[0].id)) {
            try flip("entry", "raw", key: "id", Data(blocks[2].entries[0].id), at: blocks[2].entries[0].signature)
            #expect(refused("entry-signature"))
        }
        // The row's indexed copy of the header (side branches are traced by it).
        for change in ["time = time + 1", "parent = signer", "time = X'00'"] {
            try sa.database.writer.write { db in try db.execute(sql: "UPDATE block SET \(change) WHERE hash = ?", arguments: [Data(blocks[2].hash)]) }
            #expect(refused(change.hasSuffix("X'00'") ? "column time" : "block-row"), "\(change)")
            try sa.database.writer.write { db in
                try db.execute(
                    sql: "UPDATE block SET time = ?, parent = ? WHERE hash = ?",
                    arguments: [Int64(blocks[2].header.time), Data(blocks[2].header.parent), Data(blocks[2].hash)])
            }
        }
        let check = try sa.startupCheck(now: t0 + 200)
        #expect(check.newlyVerified == 0 && !check.markMismatch)
        // A row that was there before its block arrived, with other bytes, is kept by the
        // insert: the mark does not move over that block.
        let next = blocks[4].entries[0]
        var stale = Data(next.encoded)
        let at = try #require(stale.range(of: Data(next.signature)))
        stale[at.lowerBound + 3] ^= 0x01
        try sa.database.writer.write { db in
            try db.execute(
                sql: "INSERT INTO entry (id, author, seq, kind, hlcWall, hlcLogical, raw) VALUES (?, ?, ?, ?, ?, ?, ?)",
                arguments: [Data(next.id), Data(next.author), Int64(next.sequence), next.kind.rawValue, Int64(next.hlc.wall), Int64(next.hlc.logical), stale])
        }
        #expect(try sa.importBatch([blocks[4], blocks[5]], now: t0 + 300).stored == 2)
        #expect(try sa.lastVerified()?.height == 4)
        #expect(refused("entry-signature"))
        try sa.database.writer.write { db in try db.execute(sql: "UPDATE entry SET raw = ? WHERE id = ?", arguments: [Data(next.encoded), Data(next.id)]) }
        #expect(try sa.startupCheck(now: t0 + 300).newlyVerified == 2)
        // An unreadable mark, or one without a digest (as versions before decision 116 wrote
        // it): everything is verified, nothing refused.
        let head = try #require(try sa.head())
        let oldForm = Data(CBOR.array([.unsigned(head.height), .bytes(head.hash)]).encoded)
        for value in [Data([0xFF, 0x00]), oldForm] {
            try sa.database.writer.write { db in try db.execute(sql: "UPDATE setting SET value = ? WHERE key = 'verified'", arguments: [value]) }
            #expect(try sa.lastVerified() == nil)
            let full = try sa.startupCheck(now: t0 + 400)
            #expect(full.newlyVerified == 7 && full.previouslyVerified == nil)
            try sa.recordVerified(full.mark)
            #expect(try sa.startupCheck(now: t0 + 400).newlyVerified == 0)
        }
    }
}
