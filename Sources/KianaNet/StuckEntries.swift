import Foundation
import KianaCore
import Logging
import Synchronization

/// Offers of stuck entries between members (decision 111): entries a device holds that can
/// never be sealed as they are, because their author used their sequence numbers for other
/// entries (its data directory was restored from an older copy), go to that author, the only
/// one that can sign them again. Notification `entries.stuck`, body `{"entries": [bytes…]}`.
/// Old devices ignore it (an unknown notification).
final class StuckOffers: Sendable {
    static let messageType = "entries.stuck"
    /// At most this many entries and bytes per offer.
    static let maxEntries = 256
    static let maxBytes = 256 * 1024
    /// The same set is offered again to a member at most this often; a changed set at once.
    static let repeatAfter: Duration = .seconds(60)
    /// Offers from one member are looked at most this often (each costs signature checks).
    static let takeEvery: Duration = .seconds(2)

    private struct Sent {
        var digest: [UInt8]
        var at: ContinuousClock.Instant
    }

    private let sent = Mutex<[[UInt8]: Sent]>([:])
    private let taken = Mutex<[[UInt8]: ContinuousClock.Instant]>([:])

    /// True if `entries` should go to `member` now (a new set, or the same one after a while).
    func shouldOffer(_ entries: [[UInt8]], to member: [UInt8], now: ContinuousClock.Instant = .now) -> Bool {
        let digest = SHA.hash(entries.flatMap { SHA.hash($0) })
        return sent.withLock { s in
            if let last = s[member], last.digest == digest, now - last.at < Self.repeatAfter { return false }
            s[member] = Sent(digest: digest, at: now)
            return true
        }
    }

    /// True if an offer from `member` may be looked at now.
    func mayTake(from member: [UInt8], now: ContinuousClock.Instant = .now) -> Bool {
        taken.withLock { t in
            if let last = t[member], now - last < Self.takeEvery { return false }
            t[member] = now
            return true
        }
    }

    /// The entries of an offer's body, nil when it is not one (bounded before anything is decoded).
    static func entries(in body: CBOR) -> [[UInt8]]? {
        guard case .map(let m) = body, case .array(let list)? = m[.text("entries")], !list.isEmpty, list.count <= maxEntries else { return nil }
        var out: [[UInt8]] = []
        var bytes = 0
        for item in list {
            guard case .bytes(let b) = item, b.count <= LedgerLimits.maxEntryBytes else { return nil }
            bytes += b.count
            out.append(b)
        }
        return bytes <= maxBytes ? out : nil
    }
}

extension PeerNetwork {
    /// Offers `link`'s member the entries signed by its key that wait here stuck, if any (and
    /// not the same set just now).
    func offerStuck(to link: PeerLink) async {
        guard link.mode == .member, let entries = try? await store.stuckEntriesOffered(to: link.remoteKey), !entries.isEmpty,
            stuckOffers.shouldOffer(entries, to: link.remoteKey)
        else { return }
        logger.info("offering a member its stuck entries", metadata: ["peer": .string(link.label), "entries": .stringConvertible(entries.count)])
        counters.update { $0.stuckOffered += entries.count }
        try? await link.send(LinkMessage(kind: .notify, type: StuckOffers.messageType, body: .map(["entries": .array(entries.map { .bytes($0) })])))
    }

    /// A member offered entries signed by this device's key: those never seen here are taken
    /// into the pending pool, and the node signs them again where their numbers are taken.
    func offeredStuck(_ link: PeerLink, _ body: CBOR) async {
        guard stuckOffers.mayTake(from: link.remoteKey) else { return }
        guard let entries = StuckOffers.entries(in: body) else {
            logger.info("malformed stuck-entries offer ignored", metadata: ["peer": .string(link.label)])
            return
        }
        do {
            let taken = try await store.takeBackOwnEntries(entries, identity: identity)
            guard taken > 0 else { return }
            counters.update { $0.stuckTaken += taken }
            logger.notice(
                "took back writes signed by this device's key that it did not have; was this data directory restored from an older copy?",
                metadata: ["peer": .string(link.label), "entries": .stringConvertible(taken)])
            await hooks.afterImport()
            wake()
        } catch {
            logger.warning("stuck entries offered by a member could not be stored", metadata: ["peer": .string(link.label), "reason": .string("\(error)")])
        }
    }
}
