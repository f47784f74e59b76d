import Foundation
import KianaCore
import KianaStore
import Logging

/// The ledger download of a joining device over its pairing link (`blocks` request with a
/// locator): the joiner has no chain yet, so it asks from genesis, one batch after another.
/// Member links sync with `ChainSync` instead.
public struct BlockExchange: Sendable {
    public let store: any SyncStore
    /// Blocks per answer (the joiner asks again until a batch comes back short).
    public var batch: Int

    public static let defaultBatch = 500

    public init(store: any SyncStore, batch: Int = BlockExchange.defaultBatch) {
        self.store = store
        self.batch = batch
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
        return try await store.encodedBlocks(from: from, maxCount: batch, maxBytes: 2 << 20)
    }

    /// The answer to a "blocks" request body `{locator: [hash…]}`.
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
}

extension PeerLink: SyncPeer {
    public nonisolated var label: String { deviceID.description }

    public func call(_ type: String, _ body: CBOR) async throws -> CBOR {
        try await request(type, body)
    }
}
