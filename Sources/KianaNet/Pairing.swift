import Foundation
import KianaCore
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// The joining side of pairing: a device without a network connects to an authority whose
/// pairing window is open, shows the code both sides derive from the handshake, waits for the
/// owner to confirm it on the authority, and receives the ledger.
public enum Pairing {
    public struct Joined: Sendable {
        public var network: [UInt8]
        /// Blocks received (handed to `receive` batch by batch, never held all at once).
        public var blockCount: Int
        /// Whether the vote already passed (false while more authorities must vote).
        public var member: Bool
        public var authorities: Int
        public var authorityDevice: DeviceID
    }

    /// Runs the join. `onCode` is called with the code and the authority's device ID as soon as
    /// the handshake completes. Throws if the owner refuses, the codes differ, or time runs out.
    public static func join(
        address: String, identity: DeviceIdentity, name: String?, wait: Duration = .seconds(300),
        config: LinkConfig = LinkConfig(), logger: Logger,
        group: MultiThreadedEventLoopGroup = .singleton,
        onCode: @escaping @Sendable (String, DeviceID) -> Void,
        /// Blocks received so far and about how many will come; first called with 0 when the
        /// owner confirmed the code (the authority has voted for this device by then).
        progress: @escaping @Sendable (_ received: Int, _ expected: Int?) -> Void = { _, _ in },
        receive: @escaping @Sendable ([Block]) async throws -> Void
    ) async throws -> Joined {
        let (host, port) = try PeerNetwork.parse(address)
        let channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>
        do {
            channel = try await ClientBootstrap(group: group)
                .connectTimeout(.seconds(5))
                .connect(host: host, port: port) { Link.wrap($0) }
        } catch {
            throw KianaNetError(.unreachable, "cannot reach \(address): \(PeerNetwork.dialFailure(error))")
        }
        var config = config
        config.requestTimeout = wait
        let context = LinkContext(
            identity: identity, network: nil, config: config, logger: logger,
            helloInfo: { name.map { .map(["name": .text($0)]) } ?? .map([:]) },
            admit: { _ in nil })  // the code comparison authenticates the authority
        let shown = ShownFlag()
        do {
            return try await run(channel, context: context, name: name, wait: wait, shown: shown, onCode: onCode, progress: progress, receive: receive)
        } catch  where !shown.value && Link.closedByPeer(error) {
            throw KianaNetError(
                .pairing, "\(address) closed the connection during the handshake: no pairing window is open there (run `kiana pair` on the authority), or it is not the authority's device-link port (8470 unless set otherwise; `kiana serve` prints it)")
        }
    }

    static func run(
        _ channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>, context: LinkContext, name: String?, wait: Duration,
        shown: ShownFlag, onCode: @escaping @Sendable (String, DeviceID) -> Void,
        progress: @escaping @Sendable (Int, Int?) -> Void, receive: @escaping @Sendable ([Block]) async throws -> Void
    ) async throws -> Joined {
        try await Link.run(channel, dial: LinkPreamble(mode: .pairing, network: nil), context: context) { link in
            shown.set()
            onCode(PairingCode.code(handshakeHash: link.handshakeHash), link.deviceID)
            var body: [CBOR: CBOR] = [:]
            if let name { body["name"] = .text(name) }
            let answer: [CBOR: CBOR]
            do {
                answer = try await link.request("pair.request", .map(body), timeout: wait).mapValue("pairing answer")
            } catch let e as KianaNetError where e.code == .rejected && e.remote {
                throw KianaNetError(.pairing, "the pairing was refused: the owner did not confirm this code on the authority")
            }
            let network = try answer.required("network", in: "pairing answer").bytesValue("network", count: 32)
            let member: Bool = {
                if case .bool(let b)? = answer[.text("member")] { return b }
                return false
            }()
            let authorities = Int((try? answer.required("authorities", in: "pairing answer").uintValue("authorities")) ?? 0)
            // Blocks to expect (genesis included), if the authority says (it may grow meanwhile).
            let expected = (try? answer.required("height", in: "pairing answer").uintValue("height")).map { Int(clamping: $0) &+ 1 }
            // The owner confirmed (the authority voted): nothing received yet.
            progress(0, expected)
            // The ledger, batch by batch, each handed over before the next is asked for.
            var last: [UInt8]?
            var count = 0
            while true {
                let locator: [CBOR] = last.map { [.bytes($0)] } ?? []
                let items = try await link.requestStream("blocks", .map(["locator": .array(locator)]), timeout: .seconds(60))
                let batch = try items.map { try Block(decoding: try $0.bytesValue("block")) }
                guard let first = batch.first else { break }
                if count == 0 {
                    guard first.height == 0, first.hash == network else {
                        throw KianaNetError(.pairing, "the authority sent a ledger that does not start with its network's genesis")
                    }
                } else if first.header.parent != last {
                    throw KianaNetError(.pairing, "the authority sent blocks that do not follow the ones before")
                }
                try await receive(batch)
                count += batch.count
                last = batch.last?.hash
                progress(count, expected.map { max($0, count) })
            }
            guard count > 0 else { throw KianaNetError(.pairing, "the authority sent no ledger") }
            return Joined(network: network, blockCount: count, member: member, authorities: authorities, authorityDevice: link.deviceID)
        }
    }
}

/// Whether the code was shown (the handshake completed).
final class ShownFlag: Sendable {
    private let shown = Mutex(false)
    var value: Bool { shown.withLock { $0 } }
    func set() { shown.withLock { $0 = true } }
}
