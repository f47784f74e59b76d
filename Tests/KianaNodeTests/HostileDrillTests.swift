import Foundation
import KianaTestSupport
import Testing
#if canImport(Glibc)
    import Glibc
#endif

/// What a hostile tester did to the node, done again: each test does the bad thing for real
/// (flipped bytes in the database file, a second node on the same directory, a 10 MB body from
/// urllib, invalid UTF-8, a read-only mount, an edited export, a stranger dialing the link port).
@Suite struct HostileDrillTests {
    func newNode(_ facts: [String] = ["The spare key is under the blue flower pot.", "The bike lock code is 4711."]) async throws -> TempDir {
        let dir = try TempDir()
        #expect(try await kiana(["init", "--data-dir", dir.path]).status == 0)
        for f in facts { #expect(try await kiana(["remember", f, "--data-dir", dir.path]).status == 0) }
        return dir
    }

    /// Flips bytes in the pages of the block table's primary-key index (found with SQLite's
    /// dbstat) of a copy of the database until `integrity_check` reports that index broken while
    /// the file still opens; returns SQLite's report, or nil if no flip did that.
    func breakAnIndex(_ db: String, index: String = "sqlite_autoindex_block_1") async throws -> String? {
        let script = """
            import sqlite3, shutil, sys
            db = sys.argv[1]
            shutil.copy(db, db + ".orig")
            c = sqlite3.connect(db)
            pages = [p for (p,) in c.execute("SELECT pageno FROM dbstat WHERE name = ?", (sys.argv[2],))]
            size = c.execute("PRAGMA page_size").fetchone()[0]
            c.close()
            for page in pages:
                for back in range(8, 400, 7):
                    shutil.copy(db + ".orig", db)
                    off = page * size - back
                    with open(db, "r+b") as f:
                        f.seek(off); b = f.read(1); f.seek(off); f.write(bytes([b[0] ^ 0xFF]))
                    try:
                        c = sqlite3.connect(db)
                        report = [r[0] for r in c.execute("PRAGMA integrity_check")]
                        c.close()
                    except sqlite3.DatabaseError:
                        continue
                    if report != ["ok"] and any(sys.argv[2] in r for r in report):
                        print(report[0]); sys.exit(0)
            sys.exit(1)
            """
        let r = try await runProcess(python3(), ["-c", script, db, index])
        return r.status == 0 ? String(decoding: r.out, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) : nil
    }

    @Test("A database whose index was broken by flipped bytes is named by verify, never served, never written on")
    func brokenIndexIsCaught() async throws {
        let dir = try await newNode()
        defer { dir.cleanup() }
        let damaged = try TempDir()
        defer { damaged.cleanup() }
        for f in ["identity.key", "transport.key", "kiana.sqlite"] {
            try FileManager.default.copyItem(atPath: dir.path + "/" + f, toPath: damaged.path + "/" + f)
        }
        let report = try #require(try await breakAnIndex(damaged.path + "/kiana.sqlite"), "no byte flip broke the index")
        #expect(report.contains("sqlite_autoindex_block_1"))

        // serve checks before anything listens: it refuses, saying how to recover.
        var r = try await kiana(["serve", "--data-dir", damaged.path, "--port", "0", "--p2p-port", "0", "--discovery", "off"])
        #expect(r.status == 1)
        #expect(r.err.contains("damaged") && r.err.contains("To recover"), "\(r.err)")
        #expect(!FileManager.default.fileExists(atPath: damaged.path + "/node.json"))

        // verify runs SQLite's integrity check and names the damaged index.
        r = try await kiana(["ledger", "verify", "--data-dir", damaged.path])
        #expect(r.status == 1)
        #expect(r.err.contains("sqlite_autoindex_block_1"), "\(r.err)")

        // Nothing is signed on top of it, and status shows why.
        r = try await kiana(["remember", "one more fact", "--data-dir", damaged.path])
        #expect(r.status == 1 && r.err.contains("failed verification"), "\(r.err)")
        r = try await kiana(["status", "--json", "--data-dir", damaged.path])
        let status = try #require(try? JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any], "\(r.out)")
        #expect((status["damage"] as? String)?.contains("sqlite_autoindex_block_1") == true)

        // The undamaged original still verifies and records its verified height.
        #expect(try await kiana(["ledger", "verify", "--data-dir", dir.path]).status == 0)
        r = try await kiana(["status", "--json", "--data-dir", dir.path])
        let ok = try #require(try? JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any])
        #expect(ok["verifiedHeight"] as? Int == 2 && ok["damage"] == nil, "\(ok)")
    }

    @Test("A second node on the same data directory is refused with the running one's PID; the first keeps its node.json")
    func oneNodePerDirectory() async throws {
        let dir = try await newNode([])
        defer { dir.cleanup() }
        let first = try ServeTests.Running.loopback(dir.path)
        defer {
            first.process.interrupt()
            _ = first.waitForExit()
        }
        #expect(await first.waitForPort() != nil, "\(first.text)")
        let runtime = try String(contentsOfFile: dir.path + "/node.json", encoding: .utf8)

        let second = try await kiana(["serve", "--data-dir", dir.path, "--port", "0", "--p2p-port", "0", "--discovery", "off"])
        #expect(second.status == 1)
        #expect(second.err.contains("PID \(first.process.processIdentifier)"), "\(second.err)")
        #expect(second.err.split(separator: "\n").count == 1, "\(second.err)")
        // The refused node touched nothing: the first one's node.json is still there and the same.
        #expect(try String(contentsOfFile: dir.path + "/node.json", encoding: .utf8) == runtime)
        #expect(try await kiana(["peers", "--data-dir", dir.path]).status == 0)

        // The lock goes with the process, however it ends: after kill -9 a new node starts.
        kill(first.process.processIdentifier, SIGKILL)
        _ = first.waitForExit()
        let third = try ServeTests.Running.loopback(dir.path)
        defer {
            third.process.interrupt()
            _ = third.waitForExit()
        }
        #expect(await third.waitForPort() != nil, "\(third.text)")
    }

    @Test("Bodies over the limit get a 413 that urllib sees; bad UTF-8, a too-long source and too-large fields have clear codes")
    func oversizedAndMalformedBodies() async throws {
        let served = try await ServeTests.Served.start()
        defer { served.close() }
        let script = """
            import json, sys, urllib.request, urllib.error
            base = sys.argv[1]
            def post(body):
                req = urllib.request.Request(base + "/api/v1/knowledge", data=body, headers={"Content-Type": "application/json"})
                try:
                    r = urllib.request.urlopen(req, timeout=30)
                    return [r.status, json.loads(r.read())]
                except urllib.error.HTTPError as e:
                    return [e.code, json.loads(e.read())]
                except Exception as e:
                    return [0, {"error": {"code": "client", "message": repr(e)}}]
            out = [
                post(b'{"text":"' + b"a" * (10 * 1024 * 1024) + b'"}'),
                post(b'{"text":"caf\\xc3 \\xff\\xfe"}'),
                post(json.dumps({"text": "x", "source": "s" * 5000}).encode()),
                post(json.dumps({"text": "t" * (600 * 1024)}).encode()),
                post(json.dumps({"text": "fine", "source": "notes.md"}).encode()),
            ]
            print(json.dumps(out))
            """
        let r = try await runProcess(python3(), ["-c", script, served.url])
        let results = try #require(try? JSONSerialization.jsonObject(with: r.out) as? [[Any]], "\(String(decoding: r.err, as: UTF8.self))")
        func code(_ i: Int) -> (Int, String, String) {
            let e = (results[i][1] as? [String: Any])?["error"] as? [String: Any]
            return (results[i][0] as? Int ?? -1, e?["code"] as? String ?? "", e?["message"] as? String ?? "")
        }
        #expect(code(0).0 == 413 && code(0).1 == "too-large", "\(results[0])")
        #expect(code(1).0 == 400 && code(1).2.contains("UTF-8"), "\(results[1])")
        #expect(code(2).0 == 413 && code(2).1 == "too-large" && code(2).2.contains("source"), "\(results[2])")
        #expect(code(3).0 == 413 && code(3).1 == "too-large", "\(results[3])")
        #expect(results[4][0] as? Int == 201, "\(results[4])")
        // Still serving.
        let health = try await runProcess("/usr/bin/curl", ["-s", "-m", "10", served.url + "/health"])
        #expect(String(decoding: health.out, as: UTF8.self).contains("\"ok\""))
    }

    @Test("Invalid UTF-8 arguments are refused; control characters in stored text are escaped when printed")
    func hostileText() async throws {
        let dir = try await newNode([])
        defer { dir.cleanup() }
        let spawn =
            "import subprocess, sys; r = subprocess.run([sys.argv[1], b'remember', b'caf\\xe9 au lait', b'--data-dir', sys.argv[2]], capture_output=True); sys.stderr.buffer.write(r.stderr); sys.exit(r.returncode)"
        let bad = try await runProcess(python3(), ["-c", spawn, kianaBinary(), dir.path])
        #expect(bad.status == 1)
        #expect(String(decoding: bad.err, as: UTF8.self).contains("not valid UTF-8"))
        let none = try await kiana(["list", "--json", "--data-dir", dir.path])
        #expect((try? JSONSerialization.jsonObject(with: Data(none.out.utf8)) as? [Any])?.isEmpty == true, "\(none.out)")

        // A fact with terminal escapes (clear screen, a fake prompt after a carriage return).
        let evil = "Reminder\u{1b}[2J\u{1b}[31m\rkiana: all data deleted\u{07}"
        #expect(try await kiana(["remember", evil, "--data-dir", dir.path]).status == 0)
        #expect(try await kiana(["remember", "x", "--tag", "bad\u{1b}[0mtag", "--data-dir", dir.path]).status == 1)
        for args in [["list"], ["show", try await firstItem(dir.path)], ["search", "Reminder", "--mode", "keyword"]] {
            let r = try await kiana(args + ["--data-dir", dir.path])
            #expect(r.status == 0, "\(args): \(r.err)")
            #expect(!r.out.unicodeScalars.contains { $0.value == 0x1B || $0.value == 0x07 || $0 == "\r" }, "\(args): \(r.out.debugDescription)")
            #expect(r.out.contains("\\u{1b}[2J"), "\(args): \(r.out)")
        }
        // JSON keeps the text exactly (escaped by JSON itself).
        let json = try await kiana(["list", "--json", "--data-dir", dir.path])
        let items = try #require(try? JSONSerialization.jsonObject(with: Data(json.out.utf8)) as? [[String: Any]])
        #expect(items.first?["text"] as? String == evil)

        // An empty --data-dir is a mistake, not ~/.kiana.
        let empty = try await kiana(["status", "--data-dir", ""])
        #expect(empty.status == 1 && empty.err.contains("--data-dir is empty"), "\(empty.err)")
    }

    func firstItem(_ dir: String) async throws -> String {
        let r = try await kiana(["list", "--json", "--data-dir", dir])
        let items = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [[String: Any]]
        return items?.first?["id"] as? String ?? "none"
    }

    @Test("A read-only data directory still serves list, show, status and ledger verify; writes are refused clearly")
    func readOnlyDirectory() async throws {
        let dir = try await newNode()
        defer { dir.cleanup() }
        // Vectors for every item, so hybrid search has what it needs without writing.
        var embedded = false
        if Models.hasMiniLM { embedded = try await kiana(["index", "update", "--data-dir", dir.path]).status == 0 }
        if Shared.isCI { #expect(embedded, "the MiniLM model is missing; setup must fetch it") }
        let mount = try TempDir("kiana-ro")
        defer { mount.cleanup() }
        // A read-only bind mount (the tests run as root, for whom file modes do not forbid writing).
        let bind = try await runProcess("/usr/bin/mount", ["--bind", dir.path, mount.path])
        guard bind.status == 0 else {
            Issue.record("cannot bind-mount (needs root): \(String(decoding: bind.err, as: UTF8.self))")
            return
        }
        defer { _ = try? runProcess("/usr/bin/umount", [mount.path]) }
        #expect(try await runProcess("/usr/bin/mount", ["-o", "remount,ro,bind", mount.path]).status == 0)
        let ro = mount.path
        var r = try await kiana(["list", "--data-dir", ro])
        #expect(r.status == 0 && r.out.contains("spare key"), "\(r.err)")
        r = try await kiana(["show", try await firstItem(ro), "--data-dir", ro])
        #expect(r.status == 0, "\(r.err)")
        r = try await kiana(["status", "--data-dir", ro])
        #expect(r.status == 0 && r.out.contains("(read-only)"), "\(r.out)\(r.err)")
        r = try await kiana(["ledger", "verify", "--data-dir", ro])
        #expect(r.status == 0 && r.out.contains("Ledger OK"), "\(r.err)")
        r = try await kiana(["remember", "cannot be written", "--data-dir", ro])
        #expect(r.status == 1 && r.err.contains("read-only"), "\(r.err)")
        if embedded {
            // Search reads: hybrid (the default) works on the vectors there are.
            r = try await kiana(["search", "where is the spare key", "--data-dir", ro])
            #expect(r.status == 0 && r.out.contains("spare key"), "\(r.out)\(r.err)")
        }
        // Nothing was created in the read-only directory.
        let files = try FileManager.default.contentsOfDirectory(atPath: ro)
        #expect(!files.contains { $0.hasSuffix("-wal") || $0.hasSuffix("-shm") }, "\(files)")
    }

    @Test("An export whose readable fields were edited is refused on import", arguments: ["signer", "time", "kind", "seq", "author", "height"])
    func editedExportIsRefused(_ field: String) async throws {
        let dir = try await newNode()
        defer { dir.cleanup() }
        let file = dir.path + "/export.json"
        #expect(try await kiana(["export", "-o", file, "--data-dir", dir.path]).status == 0)
        let edit = """
            import json, sys
            f, field = sys.argv[1], sys.argv[2]
            e = json.load(open(f))
            b = e["blocks"][1]
            if field == "height":
                e["height"] = 99
            elif field in ("signer", "time"):
                b[field] = b[field] + 1 if isinstance(b[field], int) else "0000-0000-0000-000" + b[field][-1]
            elif field == "seq":
                b["entries"][0]["seq"] += 5
            else:
                b["entries"][0][field] = "knowledge.delete" if field == "kind" else e["blocks"][1]["entries"][0][field][::-1]
            json.dump(e, open(f, "w"))
            """
        #expect(try await runProcess(python3(), ["-c", edit, file, field]).status == 0)
        let target = try TempDir()
        defer { target.cleanup() }
        let r = try await kiana(["import", file, "--data-dir", target.path])
        #expect(r.status == 1)
        #expect(r.err.contains("disagrees with its signed bytes"), "\(r.err)")
    }

    @Test("A stranger dialing the link port is logged at the default level, once per source a minute")
    func refusedHandshakesAreLogged() async throws {
        let dir = try await newNode([])
        defer { dir.cleanup() }
        let node = try ServeTests.Running.loopback(dir.path)
        defer {
            node.process.interrupt()
            _ = node.waitForExit()
        }
        #expect(await node.waitForPort() != nil)
        let p2p = try #require(
            node.text.range(of: #"device links on port (\d+)"#, options: .regularExpression).map {
                Int(node.text[$0].split(separator: " ").last!)!
            })
        // Three connections that are not KI_ana links (a port scanner, a browser, garbage).
        let dial = """
            import socket, sys, time
            for i in range(3):
                s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
                s.sendall(b"GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
                try: s.recv(100)
                except Exception: pass
                s.close()
                time.sleep(0.2)
            """
        #expect(try await runProcess(python3(), ["-c", dial, String(p2p)]).status == 0)
        func refusals() -> [Substring] { node.text.split(separator: "\n").filter { $0.contains("inbound connection refused") } }
        // The first refusal is logged as it happens (a busy machine may take a while to show it);
        // once it is there, a further 500 ms gives a second line, which must not come, time to.
        #expect(await eventually(10) { !refusals().isEmpty }, "\(node.text)")
        try await Task.sleep(for: .milliseconds(500))
        let lines = refusals()
        #expect(lines.count == 1, "\(node.text)")
        #expect(lines.first?.contains("127.0.0.1") == true && lines.first?.contains("reason=") == true, "\(lines)")
    }

    @Test("An index that only quick_check misses (block_on_height) still keeps serve from starting; nothing is written on it")
    func indexQuickCheckMisses() async throws {
        let dir = try await newNode(["one", "two", "three", "four"])
        defer { dir.cleanup() }
        let report = try #require(try await breakAnIndex(dir.path + "/kiana.sqlite", index: "block_on_height"), "no byte flip broke the index")
        let before = try Data(contentsOf: URL(fileURLWithPath: dir.path + "/kiana.sqlite"))
        // Read commands leave the file exactly as it is.
        for args in [["list"], ["status"], ["ledger", "show"]] { _ = try await kiana(args + ["--data-dir", dir.path]) }
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir.path + "/kiana.sqlite")) == before, "a read command changed the file")
        let r = try await kiana(["serve", "--data-dir", dir.path, "--port", "0", "--p2p-port", "0", "--discovery", "off"])
        #expect(r.status == 1 && r.err.contains("block_on_height"), "\(report): \(r.err)")
        #expect(try await kiana(["remember", "more", "--data-dir", dir.path]).status == 1)
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir.path + "/kiana.sqlite")) == before, "something wrote on the damaged file")
    }

    @Test("NUL in text is refused at every way in; a file holding one is skipped and named, the rest ingested")
    func nulIsRefused() async throws {
        let dir = try await newNode([])
        defer { dir.cleanup() }
        // (A command-line argument cannot hold NUL at all; the HTTP routes' refusal is in RouterTests.)
        let folder = dir.path + "/notes"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try Data("hello\u{0}world\n".utf8).write(to: URL(fileURLWithPath: folder + "/binary.txt"))
        try Data("# Garden\n\nThe roses need water.\n".utf8).write(to: URL(fileURLWithPath: folder + "/garden.md"))
        try Data("# Title \u{1b}[31m red\n\nEscapes in a heading.\n".utf8).write(to: URL(fileURLWithPath: folder + "/escape.md"))
        let r = try await kiana(["ingest", folder, "--no-embed", "--data-dir", dir.path])
        #expect(r.status == 0, "\(r.err)")
        #expect(r.err.contains("binary.txt") && r.err.contains("NUL"), "\(r.err)")
        let list = try await kiana(["list", "--json", "--data-dir", dir.path])
        let items = (try? JSONSerialization.jsonObject(with: Data(list.out.utf8)) as? [[String: Any]]) ?? []
        #expect(items.count == 2, "\(list.out)")
        #expect(try await kiana(["ledger", "verify", "--data-dir", dir.path]).status == 0)
    }

    @Test("With an API token set, the CLI's control commands still reach the node")
    func controlWithToken() async throws {
        let dir = try await newNode([])
        defer { dir.cleanup() }
        let node = try ServeTests.Running(["serve", "--data-dir", dir.path, "--port", "0", "--p2p-port", "0", "--discovery", "off", "--token", "s3cret"])
        defer {
            node.process.interrupt()
            _ = node.waitForExit()
        }
        #expect(await node.waitForPort() != nil, "\(node.text)")
        let r = try await kiana(["peers", "list", "--json", "--data-dir", dir.path])
        #expect(r.status == 0, "\(r.err)")
    }

    @Test("A knowledge row changed in the file (SQLite's check passes) is caught before anything is served")
    func damagedItemRowIsNotServed() async throws {
        let dir = try await newNode()
        defer { dir.cleanup() }
        let edit = """
            import sqlite3, sys
            db = sys.argv[1]
            c = sqlite3.connect(db)
            pages = [p for (p,) in c.execute("SELECT pageno FROM dbstat WHERE name = 'item'")]
            size = c.execute("PRAGMA page_size").fetchone()[0]
            c.close()
            data = bytearray(open(db, "rb").read())
            hit = False
            for p in pages:
                start, end = (p - 1) * size, p * size
                i = data.find(b"4711", start, end)
                if i >= 0:
                    data[i:i + 4] = b"0000"; hit = True
            open(db, "wb").write(data)
            c = sqlite3.connect(db)
            print(c.execute("PRAGMA integrity_check").fetchone()[0])
            sys.exit(0 if hit else 1)
            """
        let r = try await runProcess(python3(), ["-c", edit, dir.path + "/kiana.sqlite"])
        #expect(r.status == 0 && String(decoding: r.out, as: UTF8.self).hasPrefix("ok"), "\(String(decoding: r.err, as: UTF8.self))")
        let serve = try await kiana(["serve", "--data-dir", dir.path, "--port", "0", "--p2p-port", "0", "--discovery", "off"])
        #expect(serve.status == 1 && serve.err.contains("differs from the ledger"), "\(serve.err)")
        let status = try await kiana(["status", "--json", "--data-dir", dir.path])
        #expect(status.status == 0 && status.out.contains("differs from the ledger"), "\(status.out)\(status.err)")
    }

    @Test("A read-only mount of a directory whose node is running shows the latest writes (the WAL is read)")
    func readOnlyMountReadsTheLog() async throws {
        let dir = try await newNode()
        defer { dir.cleanup() }
        let node = try ServeTests.Running.loopback(dir.path)
        defer {
            node.process.interrupt()
            _ = node.waitForExit()
        }
        #expect(await node.waitForPort() != nil, "\(node.text)")
        for fact in ["The ferry leaves at 7.", "The zebra crossing is by the school."] {
            #expect(try await kiana(["remember", fact, "--data-dir", dir.path]).status == 0)
        }
        let mount = try TempDir("kiana-ro-wal")
        defer { mount.cleanup() }
        guard try await runProcess("/usr/bin/mount", ["--bind", dir.path, mount.path]).status == 0 else {
            Issue.record("cannot bind-mount (needs root)")
            return
        }
        defer { _ = try? runProcess("/usr/bin/umount", [mount.path]) }
        #expect(try await runProcess("/usr/bin/mount", ["-o", "remount,ro,bind", mount.path]).status == 0)
        let status = try await kiana(["status", "--json", "--data-dir", mount.path])
        let o = (try? JSONSerialization.jsonObject(with: Data(status.out.utf8)) as? [String: Any]) ?? [:]
        #expect((o["head"] as? [String: Any])?["height"] as? Int == 4, "\(status.out)\(status.err)")
        let search = try await kiana(["search", "zebra", "--mode", "keyword", "--data-dir", mount.path])
        #expect(search.out.contains("zebra crossing"), "\(search.out)\(search.err)")
    }
}
