import Foundation
import GRDB
import KianaCore

/// A stored block header with its signature; entries live in `entry` via `blockEntry`.
struct BlockRecord: Codable, FetchableRecord, PersistableRecord {
    static let databaseTableName = "block"
    var hash: Data
    var height: Int64
    var parent: Data
    var signer: Data
    var time: Int64
    /// Canonical CBOR `{"header", "sig"}`: the bytes verification trusts.
    var signedHeader: Data
}

/// The canonical chain: one block hash per height.
struct ChainRecord: Codable, FetchableRecord, PersistableRecord {
    static let databaseTableName = "chain"
    var height: Int64
    var hash: Data
}

/// A stored entry: indexed columns plus the signed canonical bytes.
struct EntryRecord: Codable, FetchableRecord, PersistableRecord {
    static let databaseTableName = "entry"
    var id: Data
    var author: Data
    var seq: Int64
    var kind: String
    var hlcWall: Int64
    var hlcLogical: Int64
    var raw: Data
}

struct BlockEntryRecord: Codable, FetchableRecord, PersistableRecord {
    static let databaseTableName = "blockEntry"
    var blockHash: Data
    var position: Int64
    var entryId: Data
}

struct PendingRecord: Codable, FetchableRecord, PersistableRecord {
    static let databaseTableName = "pending"
    var entryId: Data
    var addedAt: Int64
}

/// A pending entry that will never be sealed as it is, because its author's sequence number was
/// used on the canonical chain by another entry, and whose content landed as `by` (re-signed by
/// its author, decision 111). Kept because the knowledge state already folded it in.
struct SupersededRecord: Codable, FetchableRecord, PersistableRecord {
    static let databaseTableName = "superseded"
    var entryId: Data
    var by: Data
    var at: Int64
}

/// The materialized CRDT state of one knowledge item.
struct ItemRecord: Codable, FetchableRecord, PersistableRecord {
    static let databaseTableName = "item"
    var id: Data
    var title: String?
    var text: String?
    var tags: String?
    var source: String?
    var createdWall: Int64?
    var updatedWall: Int64?
    var deleted: Bool
    /// Canonical CBOR of `ItemState` (all registers with their stamps).
    var state: Data
}

struct SettingRecord: Codable, FetchableRecord, PersistableRecord {
    static let databaseTableName = "setting"
    var key: String
    var value: Data
}

extension Data {
    var bytes: [UInt8] { [UInt8](self) }
}
