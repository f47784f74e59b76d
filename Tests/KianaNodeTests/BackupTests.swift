import Foundation
import KianaTestSupport
import Testing

/// `kiana backup` / `kiana restore` as a user runs them: beside a serving node taking writes,
/// checked by an independent opener in Python, and refused for a wrong passphrase, a damaged
/// file and a live target.
@Suite struct BackupTests {
    static func curl(_ args: [String]) async throws -> String {
        String(decoding: try await runProcess("/usr/bin/curl", ["-s", "-m", "10"] + args).out, as: UTF8.self)
    }

    @Test func backupWhileServingRestoresEveryAcknowledgedWrite() async throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let a = dir.path + "/a"
        #expect(try await kiana(["init", "--data-dir", a]).status == 0)
        try Data(#"{"device": {"name": "kitchen"}}"#.utf8).write(to: URL(fileURLWithPath: a + "/config.json"))
        let pass = dir.path + "/pass"
        try Data("correct horse battery\n".utf8).write(to: URL(fileURLWithPath: pass))
        let node = try ServeTests.Running(["serve", "--data-dir", a, "--port", "0", "--p2p-port", "0", "--discovery", "off"])
        defer { if node.process.isRunning { node.process.interrupt() } }
        let port = try #require(await node.waitForPort(), "\(node.text)")
        let url = "http://127.0.0.1:\(port)/api/v1/knowledge"

        // Writes stream in through the API while the backup runs.
        let acknowledged = Locked<[(text: String, at: Date)]>([])
        let stop = Locked(false)
        let writer = Task.detached {
            var i = 0
            while !stop.get {
                let text = "note number \(i)"
                let body = try await Self.curl(["-X", "POST", "-H", "Content-Type: application/json", "-d", #"{"text":"\#(text)"}"#, url])
                if body.contains("\"id\"") { acknowledged.update { $0.append((text, Date())) } }
                i += 1
            }
        }
        // At least three writes acknowledged before the backup starts (however loaded the machine).
        for _ in 0..<300 where acknowledged.get.count < 3 { try await Task.sleep(for: .milliseconds(100)) }
        let started = Date()
        let backup = dir.path + "/a.kbk"
        let r = try await kiana(["backup", backup, "--data-dir", a, "--passphrase-file", pass])
        #expect(r.status == 0, "\(r.err)")
        // And at least one after it started.
        for _ in 0..<300 where !acknowledged.get.contains(where: { $0.at >= started }) { try await Task.sleep(for: .milliseconds(100)) }
        stop.update { $0 = true }
        _ = try? await writer.value
        let before = acknowledged.get.filter { $0.at < started }.map(\.text)
        #expect(before.count >= 3, "too few writes before the backup to prove anything")
        #expect(acknowledged.get.count > before.count, "no write during the backup")
        let mode = (try FileManager.default.attributesOfItem(atPath: backup)[.posixPermissions] as? Int) ?? 0
        #expect(mode == 0o600)

        // An independent opener (Python: hashlib.scrypt, cryptography's ChaCha20-Poly1305, cbor2).
        let py = try await runProcess(python3(), [Shared.packageRoot.path + "/Tests/python/backup_open.py", backup, pass, dir.path + "/py"])
        #expect(py.status == 0, "\(String(decoding: py.err, as: UTF8.self))")
        let opened = try JSONSerialization.jsonObject(with: py.out) as? [String: Any]
        let files = opened?["files"] as? [String: [String: Any]] ?? [:]
        #expect(Set(files.keys) == ["identity.key", "transport.key", "api.token", "config.json", "kiana.sqlite"])
        #expect(FileManager.default.contents(atPath: dir.path + "/py/identity.key") == FileManager.default.contents(atPath: a + "/identity.key"))

        // Restore into a new directory: verified, and every write acknowledged before the backup began is there.
        let b = dir.path + "/b"
        let restored = try await kiana(["restore", backup, "--data-dir", b, "--passphrase-file", pass])
        #expect(restored.status == 0, "\(restored.err)")
        #expect(try await kiana(["ledger", "verify", "--data-dir", b]).status == 0)
        let listed = try await kiana(["list", "--data-dir", b, "--json"])
        for text in before { #expect(listed.out.contains(text), "lost: \(text)") }
        #expect(try nodeIdentity(b).device == (try nodeIdentity(a).device))
        #expect(FileManager.default.contents(atPath: b + "/config.json") == Data(#"{"device": {"name": "kitchen"}}"#.utf8))

        // The live node's directory is never overwritten, even with --force.
        let live = try await kiana(["restore", backup, "--data-dir", a, "--passphrase-file", pass, "--force"])
        #expect(live.status != 0 && live.err.contains("already serving"), "\(live.err)")
        node.process.interrupt()
        #expect(node.waitForExit())
    }

    /// What killed runs left is removed by the next run: the work folder of another night's
    /// backup (it holds a plain copy of the database) and this name's partial file, an export's
    /// partial file; what a running process is writing, and a user's look-alike file, stay.
    @Test func leftoversOfKilledRunsAreSwept() async throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let a = dir.path + "/a"
        #expect(try await kiana(["init", "--data-dir", a]).status == 0)
        let pass = dir.path + "/pass"
        try Data("correct horse battery".utf8).write(to: URL(fileURLWithPath: pass))
        // The ID of a process that has ended.
        let ended = Process()
        ended.executableURL = URL(fileURLWithPath: "/bin/true")
        try ended.run()
        ended.waitUntilExit()
        let dead = ended.processIdentifier
        let live = getpid()
        let fm = FileManager.default
        let out = dir.path + "/out"
        try fm.createDirectory(atPath: out, withIntermediateDirectories: false)
        // Work folders: another night's (swept), one a running backup holds locked (kept, even
        // though its name's process is gone: it may run in another PID namespace), a user's
        // folder that only looks like one, and a link.
        for name in ["2026-12-01.kbk.kiana-work-\(dead)", "2026-11-30.kbk.kiana-work-\(dead)"] {
            try fm.createDirectory(atPath: out + "/" + name, withIntermediateDirectories: false)
            try Data("plain".utf8).write(to: URL(fileURLWithPath: out + "/" + name + "/kiana.sqlite"))
        }
        let held = open(out + "/2026-11-30.kbk.kiana-work-\(dead)", O_RDONLY | O_DIRECTORY)
        #expect(held >= 0 && flock(held, LOCK_EX) == 0)
        defer { close(held) }
        try fm.createDirectory(atPath: out + "/thesis.kiana-work-\(dead)", withIntermediateDirectories: false)
        try Data("chapter one".utf8).write(to: URL(fileURLWithPath: out + "/thesis.kiana-work-\(dead)/chapter1.txt"))
        try fm.createDirectory(atPath: dir.path + "/elsewhere", withIntermediateDirectories: false)
        try fm.createSymbolicLink(atPath: out + "/link.kiana-work-\(dead)", withDestinationPath: dir.path + "/elsewhere")
        // Partial files: this name's from an ended process (swept), one with a sign before the
        // number, one of another name, one of a running process.
        for name in ["2026-12-02.kbk.partial-\(dead)", "2026-12-02.kbk.partial-+\(dead)", "notes.partial-\(dead)", "2026-12-02.kbk.partial-\(live)"] {
            try Data("x".utf8).write(to: URL(fileURLWithPath: out + "/" + name))
        }
        // One a backup in another PID namespace writes: its number means nothing here, its lock does.
        let other = out + "/2026-12-02.kbk.partial-0\(dead)"
        try Data("x".utf8).write(to: URL(fileURLWithPath: other))
        let writing = open(other, O_RDONLY)
        #expect(writing >= 0 && flock(writing, LOCK_EX) == 0)
        defer { close(writing) }
        // An export's partial file, also under a name whose last character joins what follows.
        for name in ["export.json", "x\u{600}"] { try Data("x".utf8).write(to: URL(fileURLWithPath: out + "/" + name + ".part-\(dead)")) }
        try Data("x".utf8).write(to: URL(fileURLWithPath: out + "/x\u{600}.part-\(live)"))
        #expect(try await kiana(["backup", out + "/2026-12-02.kbk", "--data-dir", a, "--passphrase-file", pass]).status == 0)
        #expect(try await kiana(["export", "-o", out + "/export.json", "--data-dir", a]).status == 0)
        #expect(try await kiana(["export", "-o", out + "/x\u{600}", "--data-dir", a]).status == 0)
        let left = Set(try fm.contentsOfDirectory(atPath: out))
        let expected: Set<String> = [
            "2026-12-02.kbk", "export.json", "x\u{600}", "2026-11-30.kbk.kiana-work-\(dead)", "thesis.kiana-work-\(dead)", "link.kiana-work-\(dead)",
            "2026-12-02.kbk.partial-+\(dead)", "notes.partial-\(dead)", "2026-12-02.kbk.partial-\(live)", "x\u{600}.part-\(live)",
            "2026-12-02.kbk.partial-0\(dead)",
        ]
        #expect(left == expected, "\(left.symmetricDifference(expected))")
        #expect(fm.fileExists(atPath: dir.path + "/elsewhere"))
    }

    /// A full disk is said as such (SQLite's text for it there was "not an error") and leaves
    /// nothing behind. Needs root for a small tmpfs; elsewhere it is skipped, visibly.
    @Test func aFullDiskIsSaidAndLeavesNothing() async throws {
        guard getuid() == 0 else {
            print("skipped: a full disk needs root to mount a small tmpfs")
            return
        }
        let dir = try TempDir()
        defer { dir.cleanup() }
        let a = dir.path + "/a"
        #expect(try await kiana(["init", "--data-dir", a]).status == 0)
        // About 300 KB of ledger, more than the 200 KB disk below.
        let filler = String(repeating: "The quick brown fox jumps over the lazy dog. ", count: 1200)
        for i in 0..<6 { #expect(try await kiana(["remember", "note \(i): " + filler, "--data-dir", a]).status == 0) }
        let small = dir.path + "/small"
        try FileManager.default.createDirectory(atPath: small, withIntermediateDirectories: true)
        let mounted = try await runProcess("/bin/mount", ["-t", "tmpfs", "-o", "size=200k", "tmpfs", small])
        try #require(mounted.status == 0, "\(String(decoding: mounted.err, as: UTF8.self))")
        defer { _ = try? runProcess("/bin/umount", [small]) as (status: Int32, out: Data, err: Data) }
        let pass = dir.path + "/pass"
        try Data("correct horse battery".utf8).write(to: URL(fileURLWithPath: pass))
        let b = try await kiana(["backup", small + "/a.kbk", "--data-dir", a, "--passphrase-file", pass])
        #expect(b.status == 1 && b.err.contains("the disk is full") && !b.err.contains("not an error"), "\(b.err)")
        let e = try await kiana(["export", "-o", small + "/a.json", "--data-dir", a])
        #expect(e.status == 1 && e.err.contains("the disk is full"), "\(e.err)")
        let left = try FileManager.default.contentsOfDirectory(atPath: small)
        #expect(left.isEmpty, "left behind: \(left)")
    }

    @Test func wrongPassphraseDamageAndExistingNodesAreRefused() async throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let a = dir.path + "/a"
        #expect(try await kiana(["init", "--data-dir", a]).status == 0)
        #expect(try await kiana(["remember", "the spare key is under the blue pot", "--data-dir", a]).status == 0)
        let pass = dir.path + "/pass"
        try Data("correct horse battery".utf8).write(to: URL(fileURLWithPath: pass))
        let wrong = dir.path + "/wrong"
        try Data("incorrect horse".utf8).write(to: URL(fileURLWithPath: wrong))
        let short = dir.path + "/short"
        try Data("abc".utf8).write(to: URL(fileURLWithPath: short))
        let backup = dir.path + "/a.kbk"
        #expect(try await kiana(["backup", backup, "--data-dir", a, "--passphrase-file", short]).err.contains("at least 8"))
        #expect(try await kiana(["backup", backup, "--data-dir", a, "--passphrase-file", pass]).status == 0)
        // No overwriting a backup; no terminal and no file: a clear error.
        #expect(try await kiana(["backup", backup, "--data-dir", a, "--passphrase-file", pass]).err.contains("exists"))
        #expect(try await kiana(["backup", dir.path + "/x.kbk", "--data-dir", a]).err.contains("--passphrase-file"))

        let target = dir.path + "/b"
        let w = try await kiana(["restore", backup, "--data-dir", target, "--passphrase-file", wrong])
        #expect(w.status != 0 && w.err.contains("wrong passphrase"), "\(w.err)")
        #expect(!FileManager.default.fileExists(atPath: target))

        // A flipped byte anywhere past the header: refused, nothing left behind.
        let original = try Data(contentsOf: URL(fileURLWithPath: backup))
        for offset in [original.count / 3, original.count / 2, original.count - 5] {
            var damaged = original
            damaged[offset] ^= 0x40
            let path = dir.path + "/damaged.kbk"
            try damaged.write(to: URL(fileURLWithPath: path))
            let d = try await kiana(["restore", path, "--data-dir", target, "--passphrase-file", pass])
            #expect(d.status != 0 && d.err.contains("damaged"), "offset \(offset): \(d.err)")
            #expect(!FileManager.default.fileExists(atPath: target))
            #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).allSatisfy { !$0.contains("restoring") })
        }
        // Cut short.
        let cut = dir.path + "/cut.kbk"
        try original.prefix(original.count - 100).write(to: URL(fileURLWithPath: cut))
        #expect(try await kiana(["restore", cut, "--data-dir", target, "--passphrase-file", pass]).err.contains("not a whole KI_ana backup"))
        // Not a backup at all.
        #expect(try await kiana(["restore", pass, "--data-dir", target, "--passphrase-file", pass]).err.contains("not a KI_ana backup"))

        // A CRLF passphrase file holds the same passphrase; blanks only are refused.
        let crlf = dir.path + "/crlf"
        try Data("correct horse battery\r\n".utf8).write(to: URL(fileURLWithPath: crlf))
        let viaCRLF = try await kiana(["restore", backup, "--data-dir", dir.path + "/crlf-node", "--passphrase-file", crlf])
        #expect(viaCRLF.status == 0, "\(viaCRLF.err)")
        try Data("        \n".utf8).write(to: URL(fileURLWithPath: crlf))
        #expect(try await kiana(["backup", dir.path + "/blank.kbk", "--data-dir", a, "--passphrase-file", crlf]).err.contains("only blanks"))

        // Interrupted by SIGINT: nothing unsealed is left; what kill -9 leaves, the next run sweeps.
        for (signal, name) in [(SIGINT, "int.kbk"), (SIGKILL, "kill.kbk")] {
            let p = try ChildProcess(kianaBinary(), ["backup", dir.path + "/" + name, "--data-dir", a, "--passphrase-file", pass])
            try await Task.sleep(for: .milliseconds(150))
            p.signal(signal)
            _ = await p.wait(timeout: 20)
        }
        let left = try FileManager.default.contentsOfDirectory(atPath: dir.path)
        #expect(!left.contains { $0.hasPrefix("int.kbk.") }, "\(left)")
        #expect(try await kiana(["backup", dir.path + "/kill.kbk", "--data-dir", a, "--passphrase-file", pass, "--json"]).status == 0)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).allSatisfy { !$0.hasPrefix("kill.kbk.") })

        // The target named as "./b/" or through a symbolic link is the directory itself.
        let link = dir.path + "/link-to-target"
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: target)

        // An existing node is moved aside only with --force; a directory of other files never.
        #expect(try await kiana(["init", "--data-dir", target]).status == 0)
        let e = try await kiana(["restore", backup, "--data-dir", target, "--passphrase-file", pass])
        #expect(e.status != 0 && e.err.contains("--force"), "\(e.err)")
        let f = try await kiana(["restore", backup, "--data-dir", target, "--passphrase-file", pass, "--force"])
        #expect(f.status == 0, "\(f.err)")
        let aside = try #require(try FileManager.default.contentsOfDirectory(atPath: dir.path).first { $0.hasPrefix("b.before-restore-") })
        // The user is told where the node that was there went.
        #expect(f.out.contains("is kept in \(dir.path)/\(aside)"), "\(f.out)")
        #expect(try await kiana(["list", "--data-dir", target]).out.contains("blue pot"))
        let viaLink = try await kiana(["restore", backup, "--data-dir", link + "/", "--passphrase-file", pass, "--force"])
        #expect(viaLink.status == 0, "\(viaLink.err)")
        var isLink = false
        if let kind = try? FileManager.default.attributesOfItem(atPath: link)[.type] as? FileAttributeType { isLink = kind == .typeSymbolicLink }
        #expect(isLink, "the link itself was replaced")
        #expect(try await kiana(["restore", backup, "--data-dir", pass, "--passphrase-file", pass]).err.contains("not a directory"))
        let other = dir.path + "/other"
        try FileManager.default.createDirectory(atPath: other, withIntermediateDirectories: true)
        try Data("mine".utf8).write(to: URL(fileURLWithPath: other + "/notes.txt"))
        #expect(try await kiana(["restore", backup, "--data-dir", other, "--passphrase-file", pass, "--force"]).err.contains("holds other files"))
        #expect(FileManager.default.contents(atPath: other + "/notes.txt") == Data("mine".utf8))
        #expect(try FileManager.default.contentsOfDirectory(atPath: other) == ["notes.txt"], "the refusal left a file behind")
    }
}
