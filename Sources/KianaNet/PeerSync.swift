import Foundation
import KianaCore
import KianaStore
import Logging
import Synchronization

/// The sync side of `PeerNetwork`: what members announce and push, pulls (one per member at a
/// time), refusals and cut-offs, and the announcements this device sends (decision 91).
extension PeerNetwork {
    func notified(_ link: PeerLink, _ m: LinkMessage) async {
        guard link.mode == .member else { return }
        switch m.type {
        case "head":
            guard let head = SyncHead(m.body) else { return }
            await book.heard(link.remoteKey, head: head)
            await pull(from: link, peerHead: head)
        case "block":
            await pushed(link, m.body)
        case "sync.refused":
            await refusedByPeer(link, m.body)
        case StuckOffers.messageType:
            await offeredStuck(link, m.body)
        default:
            break
        }
    }

    /// A block a member pushed (gossip): imported at once when we hold its parent, else pulled.
    func pushed(_ link: PeerLink, _ body: CBOR) async {
        guard case .map(let m) = body, case .bytes(let bytes)? = m[.text("block")], let block = try? Block(decoding: bytes) else { return }
        let head = m[.text("head")].flatMap(SyncHead.init) ?? SyncHead(height: block.height, hash: block.hash, size: block.height + 1, root: [])
        await book.heard(link.remoteKey, head: head)
        // Duplicate suppression: a block we hold is not imported, relayed or pulled again.
        if (try? await store.hasBlock(block.hash)) == true {
            await book.synced(link.remoteKey)
            return
        }
        guard (try? await store.hasBlock(block.header.parent)) == true else {
            await pull(from: link, peerHead: head)
            return
        }
        do {
            let result = try await store.importBatch([block], now: currentMillis(), prechecked: nil)
            counters.update {
                $0.blocksIn += result.stored
                if result.reorganized { $0.reorgs += 1 }
            }
            if let refused = result.refused {
                await refuse(link, refused)
            } else {
                await book.synced(link.remoteKey)
                if result.headChanged { await imported(block.hash, from: link) }
                await offerStuck(to: link)
            }
        } catch {
            logger.warning("pushed block could not be stored", metadata: ["peer": .string(link.label), "reason": .string("\(error)")])
        }
    }

    /// After blocks from `link` moved our head: remember where it came from (relays skip it),
    /// let the node seal what a reorg returned, and wake the announcer.
    func imported(_ hash: [UInt8], from link: PeerLink) async {
        await book.received(hash, from: link.remoteKey)
        await hooks.afterImport()
        wake()
    }

    /// Pulls a member's chain, one pull per member at a time (a request meanwhile makes the
    /// running pull go once more). A member whose blocks our ledger refuses, or that breaks the
    /// sync protocol, is told why and cut off for `cutOffBackoff`.
    func pull(from link: PeerLink, peerHead: SyncHead?) async {
        let key = link.remoteKey
        guard await book.beginPull(key, head: peerHead) else { return }
        var head = peerHead
        while true {
            var problem: String?
            var synced = false
            do {
                let report = try await sync.pull(from: link, peerHead: head)
                synced = true
                if report.stored > 0 {
                    logger.info(
                        "imported blocks from peer",
                        metadata: [
                            "peer": .string(link.label), "count": .stringConvertible(report.stored),
                            "reorganized": .stringConvertible(report.reorganized),
                        ])
                }
                // The source is recorded by the block it sent: our own block sealed meanwhile (a
                // reorg returned entries) must still be announced to it.
                if report.headChanged, let last = report.lastBlock { await imported(last, from: link) }
                if let refused = report.refused {
                    counters.update { $0.errors["refused", default: 0] += 1 }
                    problem = Self.describe(refused)
                    await refuse(link, refused)
                }
            } catch let e as KianaNetError where !e.remote && (e.code == .protocolViolation || e.code == .tooLarge) {
                problem = e.message
                counters.update { $0.errors["protocol", default: 0] += 1 }
                await cutOff(link, reason: e.message, notify: .map(["message": .text(e.message)]))
            } catch {
                let why = (error as? KianaNetError)?.message ?? "\(error)"
                let reason: String =
                    switch (error as? KianaNetError)?.code {
                    case .timeout?: "timeout"
                    case .closed?: "closed"
                    case .busy?: "busy"
                    default: "other"
                    }
                counters.update { $0.errors[reason, default: 0] += 1 }
                problem = why
                logger.info("sync with peer failed", metadata: ["peer": .string(link.label), "reason": .string(why)])
            }
            if synced { await offerStuck(to: link) }
            guard let again = await book.endPull(key, synced: synced, error: problem) else { break }
            head = again
        }
    }

    static func describe(_ r: BatchImport.Refusal) -> String {
        "block \(r.height) refused (\(r.rule ?? "invalid")): \(r.error.message)"
    }

    /// Our ledger refused a member's block: tell it, log it, cut it off for a while.
    func refuse(_ link: PeerLink, _ r: BatchImport.Refusal) async {
        await cutOff(
            link, reason: Self.describe(r),
            notify: .map([
                "height": .unsigned(r.height), "hash": .bytes(r.hash), "rule": .text(r.rule ?? "invalid"), "message": .text(r.error.message),
            ]))
    }

    func cutOff(_ link: PeerLink, reason: String, notify body: CBOR) async {
        await book.refusedHere(link.remoteKey, reason: reason, backoff: config.cutOffBackoff)
        logger.warning("peer cut off", metadata: ["peer": .string(link.label), "reason": .string(reason)])
        try? await link.send(LinkMessage(kind: .notify, type: "sync.refused", body: body))
        link.close()
    }

    /// A member told us it refused our blocks: say so (once a minute per member) and show it.
    func refusedByPeer(_ link: PeerLink, _ body: CBOR) async {
        guard case .map(let m) = body else { return }
        let text: (String) -> String? = { k in if case .text(let t)? = m[.text(k)] { return String(t.prefix(300)) } else { return nil } }
        var reason = text("message") ?? "no reason given"
        if case .unsigned(let h)? = m[.text("height")] { reason = "block \(h) refused (\(text("rule") ?? "invalid")): " + reason }
        await book.refusedThere(link.remoteKey, reason: reason)
        if refusals.shouldLog(source: "sync.refused " + link.label, now: .now) != nil {
            logger.error("peer refused our blocks; run `kiana ledger verify`", metadata: ["peer": .string(link.label), "reason": .string(reason)])
        }
    }

    /// What to tell members about a new head: a block this device made (or another process on
    /// its data directory) is pushed whole to every member; a block that came from a peer is
    /// announced (head only) to the members other than its source that do not have it yet, who
    /// pull it if they want it. So five devices send each new block about once per receiver,
    /// plus small announcements. A member whose previous announcement is still waiting for its
    /// socket is left out (it learns the head from the next heartbeat and pulls); each target
    /// returned is marked as announcing until `PeerLink.endAnnounce`.
    func announcement(_ head: SyncHead, previous: SyncHead?) async -> (message: LinkMessage, targets: [PeerLink]) {
        let source = await book.source(of: head.hash)
        var push: [UInt8]?
        if source == nil, let previous, head.height == previous.height + 1,
            (try? await store.canonicalHashes(at: [previous.height]).first) == previous.hash,
            let block = try? await store.encodedBlocks(from: head.height, maxCount: 1, maxBytes: config.pushLimit).first,
            block.count <= config.pushLimit
        {
            push = block
        }
        let message =
            push.map { LinkMessage(kind: .notify, type: "block", body: .map(["block": .bytes($0), "head": head.cbor])) }
            ?? LinkMessage(kind: .notify, type: "head", body: head.cbor)
        var targets: [PeerLink] = []
        for link in await registry.all where link.mode == .member && link.remoteKey != source {
            if let known = await book.peer(link.remoteKey)?.head, known.hash == head.hash { continue }
            if await link.beginAnnounce() { targets.append(link) }
        }
        if push != nil { counters.update { $0.blocksOut += targets.count } }
        return (message, targets)
    }
}

/// Counts down the sends of one announcement, so the announcer can wait for them with a deadline.
final class AnnouncementRound: Sendable {
    private let remaining: Mutex<Int>
    private let finished: AsyncStream<Never>
    private let finish: AsyncStream<Never>.Continuation

    init(sends: Int) {
        remaining = Mutex(sends)
        (finished, finish) = AsyncStream.makeStream(of: Never.self)
        if sends == 0 { finish.finish() }
    }

    func sent() {
        if remaining.withLock({ $0 -= 1; return $0 == 0 }) { finish.finish() }
    }

    /// Returns when every send went out, or after `limit`, whichever comes first.
    func wait(upTo limit: Duration) async {
        let finished = self.finished
        await withTaskGroup(of: Void.self) { group in
            group.addTask { for await _ in finished {} }
            group.addTask { try? await Task.sleep(for: limit) }
            await group.next()
            group.cancelAll()
        }
    }
}
