import Foundation
import KianaTestSupport
import Testing

/// A device brought back from an older copy of its own data directory (decision 111), with real
/// `kiana serve`, `backup`, `restore` and `remember` processes on loopback.
@Suite struct RestoredDeviceTests {
    /// (writes the original makes after the backup, writes the restored copy makes before it
    /// meets b). Each sealed write is a block, so the longer side's chain wins: with 3 against
    /// 2 the restored copy's writes are the stuck ones (on itself); with 2 against 5 the
    /// original's are, and only b and c hold them, which offer them to the restored device.
    @Test(
        "A device restored from an older backup: writes on either side of the reused sequence numbers are signed again, and every write lands once on every device (a non-authority member too)",
        arguments: [(3, 2), (2, 5)])
    func restoredFromAnOlderBackup(originalWrites: Int, restoredWrites: Int) async throws {
        let tmp = try TempDir("kiana-restored")
        defer { tmp.cleanup() }
        let a = DrillNode(name: "a", dir: tmp.path + "/a", lab: nil, ip: "127.0.0.1")
        let b = DrillNode(name: "b", dir: tmp.path + "/b", lab: nil, ip: "127.0.0.1")
        // c joins as a member that is not an authority: it may not seal, but must retire the
        // stuck copies it holds like the others.
        let c = DrillNode(name: "c", dir: tmp.path + "/c", lab: nil, ip: "127.0.0.1")
        let restored = a.copy(to: tmp.path + "/a-restored")
        defer {
            a.forceKill()
            b.forceKill()
            c.forceKill()
            restored.forceKill()
        }
        try await Nodes.startPaired(a, b, network: "restore")
        try await b.start()
        try await Nodes.pair(authority: a, joiner: c)
        try await c.loadIdentity()
        try await c.start()
        for (x, y) in [(b, c), (c, b)] { _ = try await x.cli(["peers", "add", y.address]) }
        // Linked: each lists the others connected (c is listed, not as an authority).
        let meshed = try await Nodes.until(60) {
            for n in [a, b, c] {
                let linked = Set(try await n.peers().filter { $0["state"] as? String == "connected" }.compactMap { $0["device"] as? String })
                guard Set([a, b, c].filter { $0 !== n }.map(\.device)).isSubset(of: linked) else { return false }
            }
            return true
        }
        try await Nodes.confirm(meshed != nil, "a, b and c never linked") { await Nodes.describePeers([a, b, c]) }
        #expect(!(try await c.status()["authorities"] as? [String] ?? []).contains(c.device))

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
        let replicated = try await Nodes.until(30) {
            let onB = try await texts(b)
            let onC = try await texts(c)
            return Set(afterBackup).isSubset(of: onB) && Set(afterBackup).isSubset(of: onC)
        }
        try await Nodes.confirm(replicated != nil, "b and c never got the original's writes") { await Nodes.describeHeads([a, b, c]) }
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
        #expect(try await c.cli(["peers", "add", restored.address]).status == 0)

        // All converge (same head, nothing pending) with every acknowledged write, each once.
        let all = ["written before the backup"] + afterBackup + afterRestore
        let nodes = [restored, b, c]
        let settled = try await Nodes.until(60) {
            guard try await Nodes.converged(nodes) else { return false }
            for n in nodes where try await texts(n).sorted() != all.sorted() { return false }
            return true
        }
        try await Nodes.confirm(settled != nil, "the restored device, b and c did not converge with every write once") {
            var d = await Nodes.describeHeads(nodes)
            for n in nodes { d += "\n\(n.name): \((try? await texts(n)) ?? []) \((try? await n.status()["stuck"]) ?? "")" }
            return d + "\n" + restored.log.suffix(3000) + "\n" + c.log.suffix(2000)
        }
        #expect(restored.log.contains("re-signed writes"), "\(restored.log.suffix(3000))")
        let stuck = min(originalWrites, restoredWrites)
        if restoredWrites > originalWrites {
            // The original's writes were stuck on b and c; one of them (whichever met the
            // restored device first) offered them to it.
            #expect(
                b.log.contains("offering a member its stuck entries") || c.log.contains("offering a member its stuck entries"),
                "\(b.log.suffix(2000))\n\(c.log.suffix(2000))")
            #expect(restored.log.contains("took back writes signed by this device's key"), "\(restored.log.suffix(3000))")
        }
        let status = try await restored.status()
        #expect(status["signedAgain"] as? Int ?? 0 >= stuck, "\(status)")
        for n in nodes {
            let s = try await n.status()
            #expect((s["stuck"] as? [String: Any] ?? ["?": 0]).isEmpty, "\(n.name): \(s)")
        }
        // /metrics counts it: writes signed again here, and (when the original's were stuck
        // elsewhere) entries taken back; the members that held them count their offers.
        func metric(_ n: DrillNode, _ name: String) async throws -> Int {
            let text = try await n.run(["/usr/bin/curl", "-s", "-m", "10", "http://127.0.0.1:\(n.httpPort)/metrics"]).out
            return intAfter("\n" + name + " ", in: text) ?? -1
        }
        #expect(try await metric(restored, "kiana_ledger_resigned_total") >= stuck)
        if restoredWrites > originalWrites {
            #expect(try await metric(restored, "kiana_sync_stuck_taken_total") >= stuck)
            let offered = try await metric(b, "kiana_sync_stuck_offered_total") + metric(c, "kiana_sync_stuck_offered_total")
            #expect(offered >= stuck)
            #expect(try await metric(c, "kiana_ledger_retired_total") >= stuck, "c retires the original's copies")
        }
        let shown = try await restored.cli(["status"])
        #expect(shown.out.contains("Signed again:"), "\(shown.out)")
        // Every device names the same entry as each item's version, and it is on the chain.
        let versions = try await restored.items().map { $0["entry"] as? String ?? "" }
        for n in [b, c] { #expect(try await n.items().map { $0["entry"] as? String ?? "" } == versions, "\(n.name)") }
        for n in nodes {
            for v in versions {
                let proof = try await n.cli(["ledger", "proof", v])
                #expect(proof.status == 0, "\(n.name): \(proof.err)")
            }
        }

        // Every ledger (and its knowledge state) verifies.
        for n in nodes { #expect(await n.stop() == 0, "\(n.name)") }
        for n in nodes {
            let v = try await n.cli(["ledger", "verify"])
            #expect(v.status == 0, "\(n.name): \(v.err)")
        }
    }
}
