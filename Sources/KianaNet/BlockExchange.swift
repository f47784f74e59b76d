import Foundation
import KianaCore
import KianaStore
import Logging

/// Where blocks come from when catching up: a peer's link (its "blocks" request), or in tests
/// another exchange directly.
public protocol BlockSource: Sendable {
    /// The canonical blocks after the newest locator hash the source has on its chain (from
    /// genesis when none matches), at most one batch, each as its encoded bytes.
    func blocks(after locator: [[UInt8]]) async throws -> [[UInt8]]
    /// A name for logs.
    var label: String { get }
}

/// Keeps a ledger in step with peers: answers block requests from our chain and pulls a
/// peer's chain in batches, each block validated by the store before it is kept. Works on any
/// `SyncStore`; knows nothing of sockets.
public struct BlockExchange: Sendable {
    public let store: any SyncStore
    public let logger: Logger
    /// Blocks per answer (a pull asks again until a batch comes back short).
    public var batch: Int
    /// Batches one pull takes at most (a peer cannot keep us pulling forever).
    public var maxBatches = 1000

    public static let defaultBatch = 500

    public init(store: any SyncStore, logger: Logger, batch: Int = BlockExchange.defaultBatch) {
        self.store = store
        self.logger = logger
        self.batch = batch
    }

    /// Dense then exponentially spaced hashes of our chain, newest first (Bitcoin's locator).
    public func locator() async throws -> [[UInt8]] {
        let hashes = try await store.chainHashes()
        return BlockLocator.heights(tip: UInt64(max(hashes.count - 1, 0))).compactMap { h in
            hashes.indices.contains(Int(h)) ? hashes[Int(h)] : nil
        }
    }

    /// Our canonical blocks after the newest locator hash on our chain, at most `batch`.
    public func blocks(after locator: [[UInt8]]) async throws -> [[UInt8]] {
        var from: UInt64 = 0
        for hash in locator.prefix(64) {
            if let height = try await store.heightOnChain(of: hash) {
                from = height + 1
                break
            }
        }
        return try await store.encodedBlocks(from: from, through: from + UInt64(batch) - 1)
    }

    /// The answer to a peer's "blocks" request body `{locator: [hash…]}`.
    public func answer(_ body: CBOR) async -> LinkReply {
        do {
            let m = try body.mapValue("blocks request")
            let list = try (m[.text("locator")] ?? .array([])).arrayValue("locator")
            guard list.count <= 64 else { return .error(code: .invalidInput, message: "a locator has at most 64 hashes") }
            let locator = try list.map { try $0.bytesValue("locator hash", count: 32) }
            return .stream(try await blocks(after: locator).map { .bytes($0) })
        } catch {
            return .error(code: .invalidInput, message: "\(error)")
        }
    }

    /// Pulls `source`'s chain until we have its head (or it sends a short batch), importing each
    /// batch; returns whether our head changed. Stops at the first failure (logged).
    @discardableResult
    public func pull(from source: some BlockSource, peerHead: [UInt8]? = nil, now: @Sendable () -> UInt64 = currentMillis) async -> Bool {
        if let peerHead, (try? await store.hasBlock(peerHead)) == true { return false }
        var changed = false
        for _ in 0..<maxBatches {
            do {
                let encoded = try await source.blocks(after: try await locator())
                if encoded.isEmpty { break }
                let blocks = try encoded.map { try Block(decoding: $0) }
                if try await store.importPeerBlocks(blocks, now: now()) {
                    changed = true
                    logger.info("imported blocks from peer", metadata: ["peer": .string(source.label), "count": .stringConvertible(blocks.count)])
                }
                if encoded.count < batch { break }
            } catch {
                logger.warning("block exchange failed", metadata: ["peer": .string(source.label), "reason": .string("\(error)")])
                break
            }
        }
        return changed
    }
}

extension PeerLink: BlockSource {
    public nonisolated var label: String { deviceID.description }

    public func blocks(after locator: [[UInt8]]) async throws -> [[UInt8]] {
        let items = try await requestStream("blocks", .map(["locator": .array(locator.map { .bytes($0) })]))
        return try items.map { try $0.bytesValue("block") }
    }
}
