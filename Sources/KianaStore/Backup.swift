import Foundation
import GRDB
import KianaCore

extension KianaDatabase {
    /// A consistent copy of the whole database in a new file at `path` (SQLite's online backup in
    /// one step, so one read transaction: writers, in this process or another, go on meanwhile).
    public func backup(to path: String) throws(KianaStoreError) {
        guard !FileManager.default.fileExists(atPath: path) else { throw KianaStoreError(.conflict, "\(path) exists") }
        do {
            let target = try DatabaseQueue(path: path)
            try writer.backup(to: target)
            try target.writeWithoutTransaction { db in
                // One self-contained file: no WAL beside it.
                try db.execute(sql: "PRAGMA journal_mode = DELETE")
            }
            try target.close()
        } catch {
            try? FileManager.default.removeItem(atPath: path)
            throw Self.storeError(error, "cannot back up the database to \(path)")
        }
    }
}
