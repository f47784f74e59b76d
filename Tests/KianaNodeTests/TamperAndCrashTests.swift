import Foundation
import KianaTestSupport
import Testing

/// The bad things: changed bytes on disk, and SIGKILL in the middle of writes.
@Suite(.serialized) struct TamperAndCrashTests {
    func sqlite(_ db: String, _ sql: String) async throws -> String {
        let r = try await runProcess("/usr/bin/sqlite3", [db, sql])
        #expect(r.status == 0, "sqlite3: \(String(decoding: r.err, as: UTF8.self))")
        return String(decoding: r.out, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The WAL file deleted under a running node: SQLite goes on writing to the unlinked file,
    /// so a kill -9 used to lose every write acknowledged since. Each acknowledged write is now
    /// checkpointed into the database file, /health says the node is degraded, and after the
    /// kill every acknowledged write is there.
    @Test func writesAcknowledgedAfterTheWALWasDeletedSurviveKill9() async throws {
        let served = try await ServeTests.Served.start(teach: ["first fact before the deletion"])
        defer { served.close() }
        let wal = served.dir.path + "/kiana.sqlite-wal"
        func post(_ text: String) async throws -> Int {
            let r = try await runProcess(
                "/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Content-Type: application/json", "-d", #"{"text":"\#(text)"}"#,
                                  served.url + "/api/v1/knowledge"])
            return Int(String(decoding: r.out, as: UTF8.self)) ?? 0
        }
        #expect(try await post("second fact before the deletion") == 201)
        #expect(FileManager.default.fileExists(atPath: wal))
        try FileManager.default.removeItem(atPath: wal)
        for i in 0..<3 { #expect(try await post("fact \(i) after the deletion") == 201) }
        let health = try await runProcess("/usr/bin/curl", ["-s", served.url + "/health"])
        let h = try JSONSerialization.jsonObject(with: health.out) as? [String: Any] ?? [:]
        #expect(h["status"] as? String == "degraded" && (h["problem"] as? String ?? "").contains("write-ahead log"), "\(h)")
        kill(served.node.process.processIdentifier, SIGKILL)
        _ = served.node.waitForExit()
        let listed = try await kiana(["list", "--data-dir", served.dir.path]).out
        for fact in ["first fact before", "second fact before"] + (0..<3).map({ "fact \($0) after" }) {
            #expect(listed.contains(fact), "lost: \(fact)\n\(listed)")
        }
        #expect(try await kiana(["ledger", "verify", "--data-dir", served.dir.path]).status == 0)
    }

    /// A flipped byte in the full-text index (which SQLite's integrity_check does not read):
    /// `ledger verify` fails and names the repair, and after `kiana index rebuild` it passes.
    @Test func damageInTheSearchIndexFailsLedgerVerify() async throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let d = ["--data-dir", dir.path]
        #expect(try await kiana(["init"] + d).status == 0)
        for fact in ["The alpha code is 9999.", "The beta code is 1111."] { #expect(try await kiana(["remember", fact] + d).status == 0) }
        #expect(try await kiana(["ledger", "verify"] + d).status == 0)
        let db = dir.path + "/kiana.sqlite"
        let row = try await sqlite(db, "SELECT id || ':' || hex(block) FROM itemSearch_data WHERE id > 100 ORDER BY id LIMIT 1")
        let parts = row.split(separator: ":")
        var hex = Array(String(parts[1]).utf8)
        hex[41] = hex[41] == UInt8(ascii: "0") ? UInt8(ascii: "1") : UInt8(ascii: "0")  // one nibble of byte 20
        _ = try await sqlite(db, "UPDATE itemSearch_data SET block = X'\(String(decoding: hex, as: UTF8.self))' WHERE id = \(parts[0])")
        let r = try await kiana(["ledger", "verify"] + d)
        #expect(r.status == 1 && r.err.contains("full-text search index is damaged") && r.err.contains("kiana index rebuild"), "\(r.out) \(r.err)")
        #expect(try await kiana(["index", "rebuild"] + d).status == 0)
        #expect(try await kiana(["ledger", "verify"] + d).status == 0)
    }

    /// A backup or export of a ledger that does not verify is refused, and no file is left: the
    /// restore or import would refuse it (a scheduled backup would rotate good files out for
    /// ones nobody can restore). Once the byte is put back, both work again.
    /// A ledger marked damaged still answers from what is stored, says so, and keeps no
    /// conversation (before: the answer, then a raw "attempt to write a readonly database").
    @Test(.needsModels) func aDamagedLedgerStillAnswersAndSaysSo() async throws {
        guard Models.hasSmolLM && Models.hasMiniLM else {
            if Shared.isCI { Issue.record("the models are missing from \(Models.directory)") }
            return
        }
        let dir = try TempDir()
        defer { dir.cleanup() }
        let d = ["--data-dir", dir.path]
        #expect(try await kiana(["init"] + d).status == 0)
        #expect(try await kiana(["remember", "The bike lock code is 4711."] + d).status == 0)
        try Data("flipped bytes in block 1\n".utf8).write(to: URL(fileURLWithPath: dir.path + "/ledger.damaged"))
        let r = try await kiana(["ask", "What is the bike lock code?"] + d)
        #expect(r.status == 0 && r.out.contains("4711") && r.err.contains("marked damaged"), "\(r.out) \(r.err)")
        #expect(!r.err.contains("SQLite"), "\(r.err)")
        #expect(try await kiana(["conversations"] + d).out.contains("No conversations yet"))
    }

    @Test func aDamagedLedgerIsNotBackedUpOrExported() async throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let d = ["--data-dir", dir.path + "/node"]
        #expect(try await kiana(["init"] + d).status == 0)
        for i in 0..<3 { #expect(try await kiana(["remember", "fact number \(i)"] + d).status == 0) }
        let db = dir.path + "/node/kiana.sqlite"
        let pass = dir.path + "/pass"
        try "correct horse battery\n".write(toFile: pass, atomically: true, encoding: .utf8)
        let raw = try await sqlite(db, "SELECT hex(raw) FROM entry ORDER BY hlcWall DESC LIMIT 1")
        let flipped = String(raw.dropLast(2)) + (raw.hasSuffix("00") ? "01" : "00")
        _ = try await sqlite(db, "UPDATE entry SET raw = X'\(flipped)' WHERE raw = X'\(raw)'")
        let backup = try await kiana(["backup", dir.path + "/b.kbk", "--passphrase-file", pass] + d)
        #expect(backup.status == 1 && backup.err.contains("does not verify") && backup.err.contains("none was written"), "\(backup.out) \(backup.err)")
        let export = try await kiana(["export", "-o", dir.path + "/e.json"] + d)
        #expect(export.status == 1 && export.err.contains("does not verify"), "\(export.out) \(export.err)")
        let left = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0 != "node" && $0 != "pass" }
        #expect(left.isEmpty, "\(left)")
        _ = try await sqlite(db, "UPDATE entry SET raw = X'\(raw)' WHERE raw = X'\(flipped)'")
        #expect(try await kiana(["backup", dir.path + "/b.kbk", "--passphrase-file", pass] + d).status == 0)
        #expect(try await kiana(["export", "-o", dir.path + "/e.json"] + d).status == 0)
    }

    /// Flips bytes spread over every stored block header and entry with sqlite3; `kiana ledger
    /// verify` must fail each time and name the block, and pass again once the byte is restored.
    @Test func flippedStoredBytesAreCaughtByLedgerVerify() async throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let d = ["--data-dir", dir.path]
        #expect(try await kiana(["init"] + d).status == 0)
        for i in 0..<3 { #expect(try await kiana(["remember", "fact number \(i)", "--tag", "x"] + d).status == 0) }
        let db = dir.path + "/kiana.sqlite"
        var targets: [(table: String, column: String, key: String, height: String)] = []
        for h in try await sqlite(db, "SELECT height || ':' || hex(hash) FROM block ORDER BY height").split(separator: "\n") {
            let parts = h.split(separator: ":")
            targets.append(("block", "signedHeader", "hash = X'\(parts[1])'", String(parts[0])))
        }
        let entries = try await sqlite(
            db,
            "SELECT chain.height || ':' || hex(entry.id) FROM entry JOIN blockEntry ON blockEntry.entryId = entry.id JOIN chain ON chain.hash = blockEntry.blockHash"
        )
        for e in entries.split(separator: "\n") {
            let parts = e.split(separator: ":")
            targets.append(("entry", "raw", "id = X'\(parts[1])'", String(parts[0])))
        }
        #expect(targets.count == 7)
        for t in targets {
            let hex = try await sqlite(db, "SELECT hex(\(t.column)) FROM \(t.table) WHERE \(t.key)")
            let bytes = Array(hex.utf8)
            let n = bytes.count / 2
            for pos in Set([0, 1, n / 3, n / 2, (2 * n) / 3, n - 2, n - 1]) {
                var flipped = bytes
                // Flip the low bit of the byte's second hex digit.
                let c = flipped[2 * pos + 1]
                let v = Int(String(UnicodeScalar(c)), radix: 16)! ^ 1
                flipped[2 * pos + 1] = Array(String(v, radix: 16).uppercased().utf8)[0]
                _ = try await sqlite(db, "UPDATE \(t.table) SET \(t.column) = X'\(String(decoding: flipped, as: UTF8.self))' WHERE \(t.key)")
                let r = try await kiana(["ledger", "verify"] + d)
                #expect(r.status == 1, "\(t.table) byte \(pos) of block \(t.height) went unnoticed")
                #expect(r.err.contains("block \(t.height)"), "\(t.table) byte \(pos): \(r.err)")
                _ = try await sqlite(db, "UPDATE \(t.table) SET \(t.column) = X'\(hex)' WHERE \(t.key)")
            }
        }
        #expect(try await kiana(["ledger", "verify"] + d).status == 0)
    }

    /// Starts `kiana remember` over and over and SIGKILLs it at random moments. After every
    /// kill the ledger verifies and every write that had reported success is there.
    @Test func sigkillDuringWritesLosesNothingAcknowledged() async throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let d = ["--data-dir", dir.path]
        #expect(try await kiana(["init"] + d).status == 0)
        // Calibrate: how long does one remember take here? The fastest of three, so one slow
        // run on a busy machine does not push every kill past the end of the write (CI once
        // killed only 5 of 40).
        var typical = Double.infinity
        for n in 0..<3 {
            let t0 = Date()
            #expect(try await kiana(["remember", "calibration \(n)"] + d).status == 0)
            typical = min(typical, Date().timeIntervalSince(t0))
        }
        typical = max(0.02, typical)
        var acknowledged: [String] = []
        var killed = 0
        var runs = 0
        var rng = SystemRandomNumberGenerator()
        // The kill window follows the machine: shorter after a run that finished first, longer
        // after one that was killed (a busy machine's timing drifts during the test). At least
        // 40 runs, and on until 10 were killed mid-run (at most 120).
        var window = typical * 1.3
        for i in 0..<120 where runs < 40 || killed < 10 {
            runs += 1
            let p = Process()
            p.executableURL = URL(fileURLWithPath: kianaBinary())
            p.arguments = ["remember", "crash fact \(i) " + String(repeating: "payload ", count: Int.random(in: 1...400, using: &rng))] + d
            let out = Pipe()
            p.standardOutput = out
            p.standardError = FileHandle.nullDevice
            try p.run()
            usleep(UInt32(Double.random(in: 0...window, using: &rng) * 1_000_000))
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
            let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            if p.terminationReason == .uncaughtSignal {
                killed += 1
                window = min(window * 1.05, typical * 3)
            } else {
                window = max(window * 0.8, 0.005)
            }
            if p.terminationReason == .exit, p.terminationStatus == 0, text.hasPrefix("Remembered ") {
                acknowledged.append(String(text.split(separator: " ")[1]))
            }
            let v = try await kiana(["ledger", "verify"] + d)
            #expect(v.status == 0, "after kill \(i): \(v.err)")
            let list = try await kiana(["list"] + d).out
            for id in acknowledged { #expect(list.contains(id), "acknowledged \(id) lost after kill \(i)") }
        }
        #expect(killed >= 10, "only \(killed) of \(runs) runs were killed before finishing")
        // The node still takes writes.
        #expect(try await kiana(["remember", "after the storm"] + d).status == 0)
        #expect(try await kiana(["ledger", "verify"] + d).status == 0)
    }

    /// SIGKILL during a large import: the import is one transaction, so afterwards the node
    /// has either none or all of it, and verifies.
    @Test func sigkillDuringImportLeavesAllOrNothing() async throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let a = ["--data-dir", dir.path + "/a"]
        #expect(try await kiana(["init"] + a).status == 0)
        for i in 0..<30 { #expect(try await kiana(["remember", "import fact \(i)"] + a).status == 0) }
        let file = dir.path + "/x.json"
        #expect(try await kiana(["export", "-o", file] + a).status == 0)
        for attempt in 0..<6 {
            let b = ["--data-dir", dir.path + "/b\(attempt)"]
            let p = Process()
            p.executableURL = URL(fileURLWithPath: kianaBinary())
            p.arguments = ["import", file] + b
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            try p.run()
            usleep(UInt32(20_000 * (attempt + 1)))
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
            let s = try await kiana(["status"] + b)
            if s.status == 0 {
                #expect(s.out.contains("height 30") || s.out.contains("height 0") || !s.out.contains("Head:"), "\(s.out)")
                if s.out.contains("height 30") { #expect(try await kiana(["ledger", "verify"] + b).status == 0) }
            }
            // Importing again completes whatever state the kill left.
            let again = try await kiana(["import", file] + b)
            #expect(again.status == 0, "\(again.err)")
            #expect(try await kiana(["ledger", "verify"] + b).status == 0)
        }
    }
}
