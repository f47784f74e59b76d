import Foundation
import KianaTestSupport
import Testing

/// A device brought back from an older copy of its own data directory (decision 111), with real
/// `kiana serve`, `backup`, `restore` and `remember` processes on loopback.
@Suite struct RestoredDeviceTests {
    /// (writes the original makes after the backup, writes the restored copy makes before it
    /// meets b). Each sealed write is a block, so the longer side's chain wins: with 3 against
    /// 2 the restored copy's writes are the stuck ones (on itself); with 2 against 5 the
    /// original's are, and only b holds them, which offers them to the restored device.
    @Test(
        "A device restored from an older backup: writes on either side of the reused sequence numbers are signed again, and every write lands once on both devices",
        arguments: [(3, 2), (2, 5)])
    func restoredFromAnOlderBackup(originalWrites: Int, restoredWrites: Int) async throws {
        let tmp = try TempDir("kiana-restored")
        defer { tmp.cleanup() }
        let a = DrillNode(name: "a", dir: tmp.path + "/a", lab: nil, ip: "127.0.0.1")
        let b = DrillNode(name: "b", dir: tmp.path + "/b", lab: nil, ip: "127.0.0.1")
        let restored = a.copy(to: tmp.path + "/a-restored")
        defer {
            a.forceKill()
            b.forceKill()
            restored.forceKill()
        }
        try await Nodes.startPaired(a, b, network: "restore")
        try await b.start()
        let meshed = try await Nodes.until(60) { try await Nodes.meshed([a, b]) }
        try await Nodes.confirm(meshed != nil, "a and b never linked") { await Nodes.describePeers([a, b]) }

        func texts(_ n: DrillNode) async throws -> [String] { try await n.items().compactMap { $0["text"] as? String } }
        func write(_ text: String) async throws {
            let r = try await a.rest("POST", "knowledge", json: ["text": text])
            try #require(r.code == 201 || r.code == 200, "write on a: \(r.code) \(r.body)")
        }
        try await write("written before the backup")
        let pass = tmp.path + "/pass"
        try Data("a long enough passphrase\n".utf8).write(to: URL(fileURLWithPath: pass))
        let backup = try await a.run([kianaBinary(), "backup", tmp.path + "/a.kbk", "--data-dir", a.dir, "--passphrase-file", pass])
        try #require(backup.status == 0, "\(backup.err)")
        // The original goes on writing (acknowledged, and replicated to b), then is lost.
        let afterBackup = (1...originalWrites).map { "written on the original after the backup, \($0)" }
        for t in afterBackup { try await write(t) }
        let replicated = try await Nodes.until(30) { Set(afterBackup).isSubset(of: try await texts(b)) }
        try await Nodes.confirm(replicated != nil, "b never got the original's writes") { await Nodes.describeHeads([a, b]) }
        #expect(await a.stop() == 0, "\(a.lastLog.suffix(2000))")

        // The owner restores the backup on a new disk and writes before the device meets b:
        // these writes reuse the sequence numbers of the original's last three.
        let r = try await restored.run([kianaBinary(), "restore", tmp.path + "/a.kbk", "--data-dir", restored.dir, "--passphrase-file", pass])
        try #require(r.status == 0, "\(r.err)")
        let afterRestore = (1...restoredWrites).map { "written on the restored copy, \($0)" }
        for t in afterRestore {
            let w = try await restored.cli(["remember", t])
            try #require(w.status == 0, "\(w.err)")
        }
        try await restored.start(logLevel: "info")
        #expect(try await b.cli(["peers", "add", restored.address]).status == 0)

        // Both converge (same head, nothing pending) with every acknowledged write, each once.
        let all = ["written before the backup"] + afterBackup + afterRestore
        let settled = try await Nodes.until(60) {
            guard try await Nodes.converged([restored, b]) else { return false }
            for n in [restored, b] where try await texts(n).sorted() != all.sorted() { return false }
            return true
        }
        try await Nodes.confirm(settled != nil, "the restored device and b did not converge with every write once") {
            var d = await Nodes.describeHeads([restored, b])
            for n in [restored, b] { d += "\n\(n.name): \((try? await texts(n)) ?? [])" }
            return d + "\n" + restored.log.suffix(3000)
        }
        #expect(restored.log.contains("re-signed writes"), "\(restored.log.suffix(3000))")
        let stuck = min(originalWrites, restoredWrites)
        if restoredWrites > originalWrites {
            // The original's writes were stuck on b, which offered them to the restored device.
            #expect(b.log.contains("offering a member its stuck entries"), "\(b.log.suffix(3000))")
            #expect(restored.log.contains("took back writes signed by this device's key"), "\(restored.log.suffix(3000))")
        }
        let status = try await restored.status()
        #expect(status["signedAgain"] as? Int ?? 0 >= stuck, "\(status)")
        #expect((status["stuck"] as? [String: Int] ?? [:]).isEmpty, "\(status)")
        #expect((try await b.status()["stuck"] as? [String: Int] ?? [:]).isEmpty)
        let shown = try await restored.cli(["status"])
        #expect(shown.out.contains("Signed again:"), "\(shown.out)")
        // Both devices name the same entry as each item's version, and it is on the chain.
        let versions = try await restored.items().map { $0["entry"] as? String ?? "" }
        #expect(try await b.items().map { $0["entry"] as? String ?? "" } == versions)
        for v in versions.prefix(3) {
            let proof = try await restored.cli(["ledger", "proof", v])
            #expect(proof.status == 0, "\(proof.err)")
        }

        // Both ledgers (and their knowledge state, superseded entries included) verify.
        #expect(await restored.stop() == 0)
        #expect(await b.stop() == 0)
        for n in [restored, b] {
            let v = try await n.cli(["ledger", "verify"])
            #expect(v.status == 0, "\(n.name): \(v.err)")
        }
    }
}
