import Foundation
import KianaCore
import Logging

/// The authority's side of pairing: while the window is open, joiners may connect in pairing
/// mode and ask to join; the owner confirms the code a joiner shows. A matching code is
/// reported to the caller, which writes the add-authority vote and then lets the joiner fetch
/// the ledger (`admit`); the window itself writes nothing.
public actor PairingWindow {
    let logger: Logger
    var until: ContinuousClock.Instant?
    var requests: [[UInt8]: (request: PairingRequest, answer: CheckedContinuation<Bool, Never>?)] = [:]
    var admitted: Set<[UInt8]> = []
    /// Devices waiting at once, at most.
    public let maxWaiting = 8

    public init(logger: Logger) { self.logger = logger }

    /// Opens the window for `seconds`.
    public func open(seconds: Int) {
        until = .now + .seconds(seconds)
        logger.notice("pairing window open", metadata: ["seconds": .stringConvertible(seconds)])
    }

    /// Closes the window and turns away everyone still waiting.
    public func close() {
        until = nil
        for (key, r) in requests {
            r.answer?.resume(returning: false)
            requests[key] = nil
        }
    }

    public var isOpen: Bool { until.map { $0 > .now } ?? false }

    public func pending() -> [PairingRequest] {
        requests.values.map(\.request).sorted { $0.device < $1.device }
    }

    /// The owner typed `code` for `device` (or the only waiting device). Returns the request,
    /// its identity key and whether the code matched; a mismatch turns the joiner away at once.
    /// A match leaves the joiner waiting until `admit` or `reject`.
    public func check(device: String?, code: String) throws(KianaNetError) -> (request: PairingRequest, key: [UInt8], matched: Bool) {
        let candidates = requests.filter { device == nil || $0.value.request.device == device || $0.value.request.key.hasPrefix(device!) }
        guard candidates.count == 1, let (key, entry) = candidates.first else {
            throw KianaNetError(.pairing, candidates.isEmpty ? "no device is waiting to pair" : "several devices are waiting: name one")
        }
        guard PairingCode.matches(code, entry.request.code) else {
            requests[key] = nil
            logger.warning("pairing code mismatch, request refused", metadata: ["device": .string(entry.request.device)])
            entry.answer?.resume(returning: false)
            return (entry.request, key, false)
        }
        return (entry.request, key, true)
    }

    /// Lets a confirmed joiner in (its vote written now, or before): it gets its answer and may
    /// fetch blocks.
    public func admit(_ key: [UInt8], voted: Bool = true) {
        guard let entry = requests.removeValue(forKey: key) else { return }
        admitted.insert(key)
        entry.answer?.resume(returning: true)
        logger.notice("pairing confirmed", metadata: ["device": .string(entry.request.device), "voteWritten": .stringConvertible(voted)])
    }

    /// Turns a waiting joiner away (its vote could not be written).
    public func reject(_ key: [UInt8]) {
        requests.removeValue(forKey: key)?.answer?.resume(returning: false)
    }

    func isAdmitted(_ key: [UInt8]) -> Bool { admitted.contains(key) }

    /// A pairing link ended (the joiner left or the window shut).
    func ended(_ key: [UInt8]) {
        admitted.remove(key)
        if let r = requests.removeValue(forKey: key) { r.answer?.resume(returning: false) }
    }

    /// A joiner's "pair.request": waits for the owner's decision; `accepted` builds the answer.
    func request(from link: PeerLink, body: CBOR, accepted: @Sendable () async -> CBOR) async -> LinkReply {
        let name: String? = {
            guard case .map(let m) = body, case .text(let n)? = m[.text("name")] else { return nil }
            return PeerName.clean(n)
        }()
        guard isOpen else { return .error(code: .closed, message: "the pairing window is closed") }
        guard requests[link.remoteKey] == nil else { return .error(code: .conflict, message: "already waiting") }
        guard requests.count < maxWaiting else { return .error(code: .busy, message: "too many devices waiting") }
        let request = PairingRequest(
            device: link.deviceID.description, key: Hex.encode(link.remoteKey), name: name,
            address: link.remoteAddress, code: PairingCode.code(handshakeHash: link.handshakeHash))
        logger.notice("device asks to join", metadata: ["device": .string(request.device), "address": .string(request.address)])
        let ok = await withCheckedContinuation { c in
            requests[link.remoteKey] = (request, c)
        }
        guard ok else { return .error(code: .rejected, message: "the owner did not confirm the pairing code") }
        return .body(await accepted())
    }
}
