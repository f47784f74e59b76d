import Foundation
import KianaCore
import KianaTestSupport
import Testing

/// Several real node processes on loopback: pairing with the confirmed code, membership by
/// vote, links between all members, and refusal of every device that does not belong.
@Suite(.serialized) struct PairingTests {
    struct Node {
        let dir: String
        let process: ChildProcess
        let p2p: Int
    }

    static func serve(_ dir: String) async throws -> Node {
        let p = try ChildProcess(
            kianaBinary(), ["serve", "--data-dir", dir, "--port", "0", "--p2p-port", "0", "--p2p-host", "127.0.0.1", "--discovery", "off"],
            environment: ["KIANA_LOG_LEVEL": "info"])
        let line = try #require(await p.waitFor("device links on port", timeout: 60), "serve did not start: \(p.output)")
        let port = try #require(line.range(of: #"port (\d+)"#, options: .regularExpression).flatMap { Int(line[$0].dropFirst(5)) }, "\(line)")
        return Node(dir: dir, process: p, p2p: port)
    }

    static func peers(_ dir: String) throws -> [[String: Any]] {
        let r = try kiana(["peers", "list", "--json", "--data-dir", dir])
        guard r.status == 0 else { return [] }
        return (try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [[String: Any]]) ?? []
    }

    /// Runs `kiana pair` on `authority` and `kiana join` for `joiner`; types `code` (nil: the
    /// code the joiner shows). Returns both processes' exit status and output.
    static func pair(authority: Node, joiner: String, name: String, code: ((String) -> String)? = nil)
        async throws -> (pair: Int32, pairOut: String, join: Int32, joinOut: String)
    {
        let pair = try ChildProcess(kianaBinary(), ["pair", "--data-dir", authority.dir, "--timeout", "30"])
        _ = try #require(await pair.waitFor("Pairing window open"), "\(pair.output)")
        let join = try ChildProcess(kianaBinary(), ["join", "127.0.0.1:\(authority.p2p)", "--data-dir", joiner, "--name", name, "--timeout", "30"])
        let codeLine = try #require(await join.waitFor("Pairing code:"), "\(join.output)")
        let shown = String(codeLine.split(separator: ":").last!.trimmingCharacters(in: .whitespaces))
        _ = try #require(await pair.waitFor("asks to join"), "\(pair.output)")
        pair.write((code?(shown) ?? shown) + "\n")
        let ps = await pair.wait()
        let js = await join.wait()
        return (ps, pair.output, js, "\(join.output)")
    }

    /// Peer lists for failure messages.
    static func describe(_ dirs: String...) -> String {
        dirs.map { "\($0): \((try? peers($0)) ?? [])" }.joined(separator: "\n")
    }

    static func connectedMembers(_ dir: String) throws -> Set<String> {
        Set(try peers(dir).filter { $0["state"] as? String == "connected" && $0["member"] as? Bool == true }.compactMap { $0["device"] as? String })
    }

    @Test("Two then three nodes pair with the confirmed code, vote, connect and list each other as members")
    func pairTwoAndThree() async throws {
        let tmp = try TempDir("kiana-pair")
        defer { tmp.cleanup() }
        let a = tmp.path + "/a"
        let b = tmp.path + "/b"
        let c = tmp.path + "/c"
        #expect(try await kiana(["init", "--data-dir", a, "--name", "home"]).status == 0)
        let nodeA = try await Self.serve(a)

        // Wrong code: refused on both sides, nothing written anywhere.
        let wrong = try await Self.pair(authority: nodeA, joiner: b, name: "beta") { shown in shown == "000 000" ? "000 001" : "000 000" }
        #expect(wrong.pair == 1 && wrong.pairOut.contains("do not match"), "\(wrong.pairOut)")
        #expect(wrong.join == 1 && wrong.joinOut.contains("refused"), "\(wrong.joinOut)")
        #expect(!FileManager.default.fileExists(atPath: b))
        // No confirmation (the owner just presses Enter): the same.
        let unconfirmed = try await Self.pair(authority: nodeA, joiner: b, name: "beta") { _ in "" }
        #expect(unconfirmed.pair == 1 && unconfirmed.join == 1, "\(unconfirmed.pairOut) \(unconfirmed.joinOut)")
        #expect(unconfirmed.pairOut.contains("no code was typed"), "\(unconfirmed.pairOut)")
        #expect(!FileManager.default.fileExists(atPath: b))
        // A joiner that leaves before the code is typed: its request goes with it, and the code
        // typed afterwards writes nothing (it used to wait for the owner and pass).
        do {
            let pair = try ChildProcess(kianaBinary(), ["pair", "--data-dir", a, "--timeout", "30"])
            defer { pair.signal(SIGKILL) }
            _ = try #require(await pair.waitFor("Pairing window open"), "\(pair.output)")
            let join = try ChildProcess(kianaBinary(), ["join", "127.0.0.1:\(nodeA.p2p)", "--data-dir", tmp.path + "/gone", "--timeout", "30"])
            let codeLine = try #require(await join.waitFor("Pairing code:"), "\(join.output)")
            _ = try #require(await pair.waitFor("asks to join"), "\(pair.output)")
            join.signal(SIGKILL)
            _ = await join.wait()
            try await Task.sleep(for: .seconds(1))
            pair.write(String(codeLine.split(separator: ":").last!.trimmingCharacters(in: .whitespaces)) + "\n")
            #expect(await pair.wait() == 1 && !pair.output.contains("Codes match"), "\(pair.output)")
            #expect(try await kiana(["status", "--data-dir", a]).out.contains("Votes:       none pending"))
        }
        // No window open: the joiner is turned away with a clear message.
        let early = try await kiana(["join", "127.0.0.1:\(nodeA.p2p)", "--data-dir", b, "--timeout", "5"])
        #expect(early.status == 1 && early.err.contains("no pairing window is open"), "\(early.err)")
        #expect(try await kiana(["status", "--data-dir", a]).out.contains("Votes:       none pending"))

        // The right code: B becomes an authority at once (one authority voted).
        let ok = try await Self.pair(authority: nodeA, joiner: b, name: "beta")
        #expect(ok.pair == 0 && ok.pairOut.contains("the vote passed"), "\(ok.pairOut)")
        #expect(ok.join == 0 && ok.joinOut.contains("now an authority"), "\(ok.joinOut)")
        let nodeB = try await Self.serve(b)
        // The ledger the join brought was validated on arrival: the start-up check does not
        // verify it again (decision 116).
        #expect(
            nodeB.process.output.contains("msg=\"ledger checked\" height=") && nodeB.process.output.contains("newlyVerified=0"),
            "\(nodeB.process.output.prefix(2000))")
        let idA = try nodeIdentity(a)
        let idB = try nodeIdentity(b)
        #expect(
            try await eventually { try Self.connectedMembers(a) == [idB.device] && Self.connectedMembers(b) == [idA.device] },
            "\(Self.describe(a, b))")
        #expect(try await eventually { (try Self.peers(a).first?["rttMillis"] as? Double ?? 0) > 0 }, "no RTT: \(Self.describe(a))")
        // A write by the CLI beside the running node is announced at once: the CLI tells the node
        // (it used to wait for the node's next look at the head, up to half a second).
        let written = try await kiana(["remember", "The spare key is under the blue pot.", "--data-dir", a])
        #expect(written.status == 0)
        #expect(await eventually(5) { nodeA.process.output.contains("route=/control/changed") }, "\(nodeA.process.output.suffix(600))")
        #expect(try await eventually { try kiana(["list", "--data-dir", b]).out.contains("blue pot") })
        // The name given to `join` is kept (device.name) and shown to peers.
        #expect(ok.joinOut.contains("kept in") && (try? String(contentsOfFile: b + "/config.json", encoding: .utf8))?.contains("beta") == true, "\(ok.joinOut)")
        #expect(try await eventually { try Self.peers(a).first?["name"] as? String == "beta" }, "\(Self.describe(a))")

        // C: A's vote is one of two needed; B's vote completes it.
        let third = try await Self.pair(authority: nodeA, joiner: c, name: "gamma")
        #expect(third.pair == 0 && third.pairOut.contains("kiana vote add"), "\(third.pairOut)")
        #expect(third.join == 0 && third.joinOut.contains("vote is not complete"), "\(third.joinOut)")
        // Cut off before its ledger arrived (keys only), the same join again is let in without a
        // second vote from A (it used to fail: A "already voted", and the joiner was refused).
        let ledgerA = try await kiana(["ledger", "show", "--data-dir", a]).out
        for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: c + "/kiana.sqlite" + suffix) }
        let rerun = try await Self.pair(authority: nodeA, joiner: c, name: "gamma")
        #expect(rerun.pair == 0 && rerun.join == 0 && rerun.joinOut.contains("vote is not complete"), "\(rerun.pairOut) \(rerun.joinOut)")
        #expect(rerun.pairOut.contains("voted to add") && rerun.pairOut.contains("before: no new vote"), "\(rerun.pairOut)")
        #expect(try await kiana(["ledger", "show", "--data-dir", a]).out == ledgerA, "a second vote was written")
        // A device that is an authority already is not voted for again, by ID or by key.
        for target in [idB.device, idB.key] {
            let again = try await kiana(["vote", "add", target, "--data-dir", a])
            #expect(again.status == 1 && again.err.contains("already an authority"), "\(again.out) \(again.err)")
        }
        #expect(try await kiana(["ledger", "show", "--data-dir", a]).out == ledgerA, "a vote for an authority was written")
        let idC = try nodeIdentity(c)
        // Until its vote is complete C is no authority: it cannot let devices in, and says so
        // before anyone types a code.
        let nodeC = try await Self.serve(c)
        let notYet = try await kiana(["pair", "--data-dir", c, "--timeout", "5"])
        #expect(notYet.status == 1 && notYet.err.contains("not an authority"), "\(notYet.out) \(notYet.err)")
        // B votes by C's device ID, which names the device A proposed once B holds A's vote.
        #expect(try await eventually { try kiana(["status", "--data-dir", b]).out.contains("Vote:        add \(idC.device)") })
        let byID = try await kiana(["vote", "add", idC.device, "--data-dir", b])
        #expect(byID.status == 0 && byID.out.contains("the vote passed"), "\(byID.out) \(byID.err)")
        #expect(try await kiana(["peers", "add", "127.0.0.1:\(nodeB.p2p)", "--data-dir", c]).status == 0)
        #expect(
            try await eventually(30) {
                try Self.connectedMembers(a) == [idB.device, idC.device] && Self.connectedMembers(b) == [idA.device, idC.device]
                    && Self.connectedMembers(c) == [idA.device, idB.device]
            }, "\(Self.describe(a, b, c))\n\(nodeA.process.output)")
        // Linked is not yet synced: C may still be pulling B's vote for it.
        for dir in [a, b, c] {
            var status = ""
            let agreed = try await eventually(15) {
                status = try kiana(["status", "--data-dir", dir]).out
                return [idA, idB, idC].allSatisfy { status.contains($0.device) } && status.contains("Votes:       none pending")
            }
            #expect(agreed, "\(status)")
        }
        // Drops name an authority, by device ID too; one vote of three is not enough.
        let stranger = DeviceID(publicKey: Array(repeating: 7, count: 32)).description
        let notMember = try await kiana(["vote", "drop", stranger, "--data-dir", a])
        #expect(notMember.status == 1 && notMember.err.contains("not an authority"), "\(notMember.err)")
        let drop = try await kiana(["vote", "drop", idC.device, "--data-dir", a])
        #expect(drop.status == 0 && drop.out.contains("waiting for more votes (1 of the 2 needed)"), "\(drop.out) \(drop.err)")
        // Dropping this device itself takes --force: it would lose its own write access.
        let own = try await kiana(["vote", "drop", idA.device, "--data-dir", a])
        #expect(own.status == 1 && own.err.contains("this device itself") && own.err.contains("--force"), "\(own.out) \(own.err)")
        // The same vote again writes nothing; the opposite vote takes it back.
        let ledger = try await kiana(["ledger", "show", "--data-dir", a]).out
        let twice = try await kiana(["vote", "drop", idC.device, "--data-dir", a])
        #expect(twice.status == 1 && twice.err.contains("already voted"), "\(twice.out) \(twice.err)")
        #expect(try await kiana(["ledger", "show", "--data-dir", a]).out == ledger, "a refused vote wrote a block")
        let back = try await kiana(["vote", "add", idC.device, "--data-dir", a])
        #expect(back.status == 0 && back.out.contains("Took back"), "\(back.out) \(back.err)")
        #expect(try await kiana(["status", "--data-dir", a]).out.contains("Votes:       none pending"))

        for n in [nodeA, nodeB, nodeC] { n.process.signal(SIGTERM) }
        for n in [nodeA, nodeB, nodeC] { #expect(await n.process.wait() == 0, "\(n.process.output)") }
    }

    /// The joiner is killed after the owner typed the code (the authority voted for its key):
    /// the key was kept in the data directory, so the same `kiana join` again finishes the join
    /// with it instead of leaving an authority no device holds.
    @Test func aJoinKilledAfterTheCodeFinishesWithTheSameKey() async throws {
        let tmp = try TempDir("kiana-rejoin")
        defer { tmp.cleanup() }
        let a = tmp.path + "/a"
        let w = tmp.path + "/w"
        #expect(try await kiana(["init", "--data-dir", a]).status == 0)
        let nodeA = try await Self.serve(a)
        // An init mark from an init cut off before its keys (as a kill can leave it): the join
        // that follows must not leave it, or `serve` would make the voted key a network of its own.
        try FileManager.default.createDirectory(atPath: w, withIntermediateDirectories: false)
        #expect(FileManager.default.createFile(atPath: w + "/init.pending", contents: nil))
        let pair = try ChildProcess(kianaBinary(), ["pair", "--data-dir", a, "--timeout", "30"])
        _ = try #require(await pair.waitFor("Pairing window open"), "\(pair.output)")
        let join = try ChildProcess(kianaBinary(), ["join", "127.0.0.1:\(nodeA.p2p)", "--data-dir", w, "--timeout", "30"])
        let codeLine = try #require(await join.waitFor("Pairing code:"), "\(join.output)")
        let shown = String(codeLine.split(separator: ":").last!.trimmingCharacters(in: .whitespaces))
        _ = try #require(await pair.waitFor("asks to join"), "\(pair.output)")
        join.signal(SIGSTOP)  // it cannot receive the answer, nor the ledger
        // While it runs, no node starts on its directory.
        let during = try await kiana(["serve", "--data-dir", w, "--port", "0", "--p2p-port", "0", "--discovery", "off"])
        #expect(during.status == 1 && during.err.contains("is setting up"), "\(during.err)")
        let initDuring = try await kiana(["init", "--data-dir", w])
        #expect(initDuring.status == 1 && initDuring.err.contains("is setting up"), "\(initDuring.err)")
        #expect(!FileManager.default.fileExists(atPath: w + "/kiana.sqlite"))
        pair.write(shown + "\n")
        #expect(await pair.wait() == 0, "\(pair.output)")
        join.signal(SIGKILL)
        join.signal(SIGCONT)
        _ = await join.wait()
        #expect(FileManager.default.fileExists(atPath: w + "/identity.key"), "the key was not kept")
        #expect(!FileManager.default.fileExists(atPath: w + "/init.pending"))
        let serveW = try await kiana(["serve", "--data-dir", w, "--port", "0", "--p2p-port", "0", "--discovery", "off"])
        #expect(serveW.status == 1 && serveW.err.contains("kiana join"), "\(serveW.err)")
        func authorities() async throws -> [String] {
            let line = try await kiana(["status", "--data-dir", a]).out.split(separator: "\n").first { $0.hasPrefix("Authorities:") } ?? ""
            return line.dropFirst("Authorities:".count).split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        }
        #expect(try await authorities().count == 2, "the vote for the joiner was not written")
        // The same join again: the authority knows the key already; the ledger arrives.
        let again = try await Self.pair(authority: nodeA, joiner: w, name: "w")
        #expect(again.join == 0 && again.joinOut.contains("now an authority"), "\(again.joinOut)")
        let all = try await authorities()
        let wDevice = try nodeIdentity(w).device
        #expect(all.count == 2 && all.contains(wDevice), "\(all)")
        #expect(try await kiana(["ledger", "verify", "--data-dir", w]).status == 0)
        // The received ledger was renamed into place; nothing of it is left beside. The name
        // given to join is kept for the peers.
        #expect(try FileManager.default.contentsOfDirectory(atPath: w).filter { $0.contains("join") || $0.contains(".tmp") }.isEmpty)
        #expect(again.joinOut.contains("is kept in"), "\(again.joinOut)")
        #expect(FileManager.default.contents(atPath: w + "/config.json").map { String(decoding: $0, as: UTF8.self).contains("\"w\"") } == true)
        // Once more: done already, so it says how to start the device (not "use a new directory").
        let third = try await kiana(["join", "127.0.0.1:\(nodeA.p2p)", "--data-dir", w, "--timeout", "5"])
        #expect(third.status == 1 && third.err.contains("has already joined") && third.err.contains("kiana serve"), "\(third.err)")
        nodeA.process.signal(SIGTERM)
        _ = await nodeA.process.wait()
    }

    @Test("An unpaired device, a device of another network and a forged identity are refused")
    func refusals() async throws {
        let tmp = try TempDir("kiana-refuse")
        defer { tmp.cleanup() }
        let a = tmp.path + "/a"
        let d = tmp.path + "/d"
        let e = tmp.path + "/e"
        #expect(try await kiana(["init", "--data-dir", a]).status == 0)
        // D holds the same ledger (an export) but was never voted in; E has its own network.
        let export = tmp.path + "/a.json"
        #expect(try await kiana(["export", "--data-dir", a, "-o", export]).status == 0)
        #expect(try await kiana(["import", export, "--data-dir", d]).status == 0)
        #expect(try await kiana(["init", "--data-dir", e]).status == 0)
        let nodeA = try await Self.serve(a)
        let nodeD = try await Self.serve(d)
        let nodeE = try await Self.serve(e)
        #expect(try await kiana(["peers", "add", "127.0.0.1:\(nodeA.p2p)", "--data-dir", d]).status == 0)
        #expect(try await kiana(["peers", "add", "127.0.0.1:\(nodeA.p2p)", "--data-dir", e]).status == 0)
        // A device's own listener is refused; an added address can be removed (once).
        let own = try await kiana(["peers", "add", "localhost:\(nodeA.p2p)", "--data-dir", a])
        #expect(own.status != 0 && own.err.contains("own link listener"), "\(own.out)\(own.err)")
        #expect(try await kiana(["peers", "add", "127.0.0.1:1", "--data-dir", a]).status == 0)
        #expect(try await kiana(["peers", "remove", "127.0.0.1:1", "--data-dir", a]).status == 0)
        let again = try await kiana(["peers", "remove", "127.0.0.1:1", "--data-dir", a])
        #expect(again.status != 0 && again.err.contains("not a known peer address"), "\(again.out)\(again.err)")
        let network = try await kiana(["status", "--data-dir", a]).out.split(separator: "\n").first { $0.hasPrefix("Network ID:") }!
            .split(separator: " ").last.map(String.init)!
        let forger = try ChildProcess(
            python3(),
            [
                Shared.packageRoot.appendingPathComponent("Tests/python/link_peer.py").path,
                "connect", "127.0.0.1:\(nodeA.p2p)", "--network", network, "--scenario", "forge",
            ])
        #expect(await forger.wait() == 0, "\(forger.output)")
        #expect(
            await eventually {
                let log = nodeA.process.output
                return log.contains("not an authority of this network") && log.contains("peer belongs to another network")
                    && log.contains("does not cover the peer's static key")
            }, "\(nodeA.process.output)")
        #expect(try Self.connectedMembers(a).isEmpty)
        #expect(try Self.peers(a).allSatisfy { $0["state"] as? String != "connected" })
        // The refused sides see why their added address does not link, in words.
        for dir in [d, e] {
            var why = ""
            let said = try await eventually(20) {
                why = try Self.peers(dir).first { $0["address"] as? String == "127.0.0.1:\(nodeA.p2p)" }?["dialError"] as? String ?? ""
                return !why.isEmpty
            }
            #expect(said && why.contains("does not let this device in") && !why.contains("Error("), "\(dir): \(why) \(Self.describe(dir))")
        }
        let closedPort = try await kiana(["peers", "add", "127.0.0.1:9", "--data-dir", d])
        #expect(closedPort.status == 0)
        var listed = ""
        let refused = try await eventually(20) {
            listed = try kiana(["peers", "--data-dir", d]).out
            return listed.contains("127.0.0.1:9: cannot link: connection refused")
        }
        #expect(refused, "\(listed)")
        for n in [nodeA, nodeD, nodeE] { n.process.signal(SIGINT) }
        for n in [nodeA, nodeD, nodeE] { #expect(await n.process.wait() == 0, "\(n.process.output)") }
    }
}
