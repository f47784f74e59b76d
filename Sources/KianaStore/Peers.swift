import Foundation
import GRDB
import KianaCore

/// A peer address the owner added by hand (`kiana peers add`), dialled where multicast
/// discovery does not reach.
public struct PeerAddress: Codable, FetchableRecord, PersistableRecord, Sendable, Equatable {
    public static let databaseTableName = "peerAddress"
    public var address: String
    public var addedAt: Int64

    public init(address: String, addedAt: Int64) {
        self.address = address
        self.addedAt = addedAt
    }
}

extension LedgerStore {
    /// Adds a manual peer address; adding it again changes nothing. Returns false if it was known.
    @discardableResult
    public func addPeerAddress(_ address: String, now: UInt64) throws(KianaStoreError) -> Bool {
        defer { database.keepWritesIfWALLost() }
        return try run("adding peer address") {
            try writer.write { db in
                if try PeerAddress.fetchOne(db, key: address) != nil { return false }
                try PeerAddress(address: address, addedAt: Int64(now)).insert(db)
                return true
            }
        }
    }

    @discardableResult
    public func removePeerAddress(_ address: String) throws(KianaStoreError) -> Bool {
        try run("removing peer address") { try writer.write { db in try PeerAddress.deleteOne(db, key: address) } }
    }

    public func peerAddresses() throws(KianaStoreError) -> [PeerAddress] {
        try run("reading peer addresses") { try writer.read { db in try PeerAddress.order(Column("addedAt")).fetchAll(db) } }
    }

    /// Whether a block with this hash is stored (canonical or on a side branch).
    public func containsBlock(_ hash: [UInt8]) throws(KianaStoreError) -> Bool {
        try run("looking up block") {
            try writer.read { db in try Bool.fetchOne(db, sql: "SELECT EXISTS(SELECT 1 FROM block WHERE hash = ?)", arguments: [Data(hash)]) ?? false }
        }
    }

    /// The canonical height of a block, or nil if it is not on the canonical chain.
    public func canonicalHeight(of hash: [UInt8]) throws(KianaStoreError) -> UInt64? {
        try run("looking up block") {
            try writer.read { db in
                try Int64.fetchOne(db, sql: "SELECT height FROM chain WHERE hash = ?", arguments: [Data(hash)]).map { UInt64($0) }
            }
        }
    }
}
