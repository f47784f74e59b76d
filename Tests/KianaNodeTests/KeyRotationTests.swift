import Foundation
import KianaNode
import KianaTestSupport
import Testing

/// `kiana device rotate` on real nodes: the seat moves to a new key (decision 99), alone and
/// while linked to another authority, which learns it without voting and links to the new key.
@Suite(.serialized) struct KeyRotationTests {
    static func status(_ dir: String) async throws -> [String: Any] {
        let r = try await kiana(["status", "--json", "--data-dir", dir])
        return (try? JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any]) ?? [:]
    }

    @Test func aLoneDeviceRotatesAndKeepsWriting() async throws {
        let tmp = try TempDir("kiana-rotate")
        defer { tmp.cleanup() }
        let a = tmp.path + "/a"
        #expect(try await kiana(["init", "--data-dir", a]).status == 0)
        #expect(try await kiana(["remember", "Before the rotation", "--data-dir", a]).status == 0)
        let old = try #require(try await Self.status(a)["device"] as? String)
        let oldKey = try Data(contentsOf: URL(fileURLWithPath: a + "/identity.key"))
        let r = try await kiana(["device", "rotate", "--data-dir", a])
        #expect(r.status == 0, "\(r.err)")
        let s = try await Self.status(a)
        let new = try #require(s["device"] as? String)
        #expect(new != old && r.out.contains("now \(new)"), "\(r.out)")
        #expect(s["authorities"] as? [String] == [new])
        #expect(try Data(contentsOf: URL(fileURLWithPath: a + "/identity.key")) != oldKey)
        #expect(!FileManager.default.fileExists(atPath: a + "/rotation.next.key"))
        let mode = try FileManager.default.attributesOfItem(atPath: a + "/identity.key")[.posixPermissions] as? Int
        #expect(mode == 0o600)
        // Two at once: one waits its turn or is refused, the device ends with a key that signs.
        let r1 = try ChildProcess(kianaBinary(), ["device", "rotate", "--data-dir", a])
        let r2 = try ChildProcess(kianaBinary(), ["device", "rotate", "--data-dir", a])
        let (s1, s2) = (await r1.wait(), await r2.wait())
        #expect(s1 == 0 || s2 == 0, "\(r1.output)\n\(r2.output)")
        #expect([r1, r2].allSatisfy { $0.output.contains("now ") || $0.output.contains("another `kiana device rotate` is running") }, "\(r1.output)\n\(r2.output)")
        let after = try await Self.status(a)
        #expect(after["authorities"] as? [String] == [after["device"] as? String ?? "-"], "\(after)")
        #expect(!FileManager.default.fileExists(atPath: a + "/rotation.next.key"))
        // The new key writes; the whole ledger verifies with the rotation in it.
        #expect(try await kiana(["remember", "After the rotation", "--data-dir", a]).status == 0)
        let v = try await kiana(["ledger", "verify", "--data-dir", a])
        #expect(v.status == 0 && v.out.contains("Ledger OK"), "\(v.out)\(v.err)")
        // Killed after the switch and before the clean-up (the next keys are the current ones,
        // no confirmation left): the next look finishes it instead of waiting for a device.
        let both = try Data(contentsOf: URL(fileURLWithPath: a + "/identity.key")) + Data(contentsOf: URL(fileURLWithPath: a + "/transport.key"))
        #expect(FileManager.default.createFile(atPath: a + "/rotation.next.key", contents: both, attributes: [.posixPermissions: 0o600]))
        #expect(try KeyRotation.promoteIfRotated(directory: DataDirectory(path: a)))
        #expect(!FileManager.default.fileExists(atPath: a + "/rotation.next.key"))
    }

    @Test func rotationWhileLinkedIsLearnedByTheOtherAuthority() async throws {
        let tmp = try TempDir("kiana-rotate2")
        defer { tmp.cleanup() }
        let a = tmp.path + "/a"
        let b = tmp.path + "/b"
        #expect(try await kiana(["init", "--data-dir", a, "--name", "home"]).status == 0)
        var nodeA = try await PairingTests.serve(a)
        let ok = try await PairingTests.pair(authority: nodeA, joiner: b, name: "beta")
        #expect(ok.pair == 0 && ok.join == 0, "\(ok.pairOut) \(ok.joinOut)")
        var nodeB = try await PairingTests.serve(b)
        let old = try #require(try await Self.status(a)["device"] as? String)
        let bDevice = try #require(try await Self.status(b)["device"] as? String)
        #expect(try await eventually(30) { try PairingTests.connectedMembers(a).contains(bDevice) }, "\(PairingTests.describe(a, b))")

        // B away: the rotation is written but not confirmed; A keeps its key, also across a restart.
        nodeB.process.signal(SIGTERM)
        #expect(await nodeB.process.wait() == 0)
        let early = try await kiana(["device", "rotate", "--data-dir", a, "--wait", "3"])
        #expect(early.status == 1 && early.err.contains("no other authority holds the rotation yet"), "\(early.out)\(early.err)")
        nodeA.process.signal(SIGTERM)
        #expect(await nodeA.process.wait() == 0)
        nodeA = try await PairingTests.serve(a)
        #expect(nodeA.process.output.contains("waits for another device"), "\(nodeA.process.output)")
        #expect(try await Self.status(a)["device"] as? String == old)
        #expect(FileManager.default.fileExists(atPath: a + "/rotation.next.key"))
        nodeB = try await PairingTests.serve(b)
        #expect(try await kiana(["peers", "add", "127.0.0.1:\(nodeA.p2p)", "--data-dir", b]).status == 0)
        // Linked again, A (still on its old key) hands B the rotation.
        #expect(try await eventually(30) { try PairingTests.connectedMembers(a).contains(bDevice) }, "\(PairingTests.describe(a, b))")

        // Online again: B holds the rotation, the new key takes over on disk.
        let r = try await kiana(["device", "rotate", "--data-dir", a, "--wait", "60"])
        #expect(r.status == 0, "\(r.out)\(r.err)")
        let new = try #require(try await Self.status(a)["device"] as? String)
        #expect(new != old && r.out.contains("Restart the node"), "\(r.out)")
        #expect(
            try await eventually(30) {
                let s = try JSONSerialization.jsonObject(with: Data(try kiana(["status", "--json", "--data-dir", b]).out.utf8)) as? [String: Any]
                return Set(s?["authorities"] as? [String] ?? []) == [new, bDevice]
            }, "B never learned the rotation")

        // Restarted with the new key: B links to it, and it writes what B then holds.
        nodeA.process.signal(SIGTERM)
        #expect(await nodeA.process.wait() == 0, "\(nodeA.process.output.suffix(2000))")
        nodeA = try await PairingTests.serve(a)
        // The test's nodes take any free port: tell B where A listens now.
        #expect(try await kiana(["peers", "add", "127.0.0.1:\(nodeA.p2p)", "--data-dir", b]).status == 0)
        #expect(
            try await eventually(30) { try PairingTests.connectedMembers(b).contains(new) }, "\(PairingTests.describe(a, b))")
        #expect(try !PairingTests.connectedMembers(b).contains(old))
        let marker = "written by the rotated key \(UInt32.random(in: 1000...9999))"
        let wrote = try await kiana(["remember", marker, "--data-dir", a])
        #expect(wrote.status == 0, "\(wrote.err)")
        #expect(try await eventually(30) { try kiana(["list", "--data-dir", b]).out.contains(marker) }, "B never got the new key's write")

        for n in [nodeA, nodeB] { n.process.signal(SIGTERM) }
        for n in [nodeA, nodeB] {
            let status = await n.process.wait()
            #expect(status == 0, "exit \(status): \(n.process.output.suffix(2000))")
        }
        for d in [a, b] {
            let v = try await kiana(["ledger", "verify", "--data-dir", d])
            #expect(v.status == 0 && v.out.contains("Ledger OK"), "\(d): \(v.out)\(v.err)")
        }
        // Stopped, with another authority: refused, nothing written (the other could not learn it).
        let offline = try await kiana(["device", "rotate", "--data-dir", b])
        #expect(offline.status == 1 && offline.err.contains("must learn the new key"), "\(offline.err)")
        #expect(!FileManager.default.fileExists(atPath: b + "/rotation.next.key"))
        #expect(try await Self.status(b)["device"] as? String == bDevice)
    }
}
