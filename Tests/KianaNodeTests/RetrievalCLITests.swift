import Foundation
import KianaTestSupport
import Testing

/// `kiana ingest`, `search`, `embed`, `index` and `bench retrieval` as a user runs them.
@Suite(.needsMiniLM) struct RetrievalCLITests {
    func haveModel() -> Bool {
        if Models.hasMiniLM { return true }
        if Shared.isCI { Issue.record("the MiniLM model is missing from \(Models.directory); setup must fetch it") }
        return false
    }

    func write(_ text: String, _ path: String) async throws {
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try text.write(toFile: path, atomically: true, encoding: .utf8)
    }

    func searchJSON(_ args: [String]) async throws -> [[String: Any]] {
        let r = try await kiana(["search"] + args + ["--json"])
        #expect(r.status == 0, "\(r.err)")
        let obj = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any]
        return obj?["results"] as? [[String: Any]] ?? []
    }

    static let pdf = """
        %PDF-1.4
        1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj
        2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj
        3 0 obj << /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >> endobj
        4 0 obj << /Length 63 >> stream
        BT /F1 12 Tf 72 720 Td (The boiler error code E42 means low pressure.) Tj ET
        endstream endobj
        5 0 obj << /Type /Font /Subtype /Type1 /BaseFont /Helvetica >> endobj
        trailer << /Root 1 0 R >>
        %%EOF

        """

    @Test func ingestKeepsAFolderInSyncAndSearchFindsIt() async throws {
        guard haveModel() else { return }
        let tmp = try TempDir("kiana-ingest")
        defer { tmp.cleanup() }
        let d = tmp.path + "/node"
        let docs = tmp.path + "/docs"
        #expect(try await kiana(["init", "--data-dir", d]).status == 0)
        try await write("# Router\n\nThe guest wifi password is Sunflower42.\n\n## Reset\n\nHold the reset button for ten seconds.\n", docs + "/router.md")
        try await write("Our cat Minka only eats tuna from the blue tin.", docs + "/pets/cat.txt")
        try await write("<html><body><h1>Pasta</h1><p>Cook spaghetti for nine minutes in salted water.</p></body></html>", docs + "/pasta.html")
        try await write(Self.pdf, docs + "/boiler.pdf")
        try await write("ignored", docs + "/image.png")

        var r = try await kiana(["ingest", docs, "--data-dir", d, "--tag", "notes"])
        #expect(r.status == 0, "\(r.err)")
        #expect(r.out.contains("4 files: 4 new"), "\(r.out)")
        #expect(r.err.contains("[##############################] 100%"), "progress bar: \(r.err)")
        #expect(r.out.contains("Embedded 5 chunks"), "\(r.out)")

        // semantic: no shared keyword with the passage
        var hits = try await searchJSON(["what is the password for visitors' internet", "--data-dir", d, "--k", "3"])
        #expect((hits.first?["text"] as? String)?.contains("Sunflower42") == true, "\(hits)")
        #expect((hits.first?["source"] as? String) == docs + "/router.md#0")
        hits = try await searchJSON(["E42", "--data-dir", d, "--mode", "keyword"])
        #expect((hits.first?["source"] as? String) == docs + "/boiler.pdf#0", "\(hits)")
        hits = try await searchJSON(["pet food", "--data-dir", d, "--mode", "vector", "--k", "1"])
        #expect((hits.first?["source"] as? String) == docs + "/pets/cat.txt#0")
        // filters: by source prefix and by tag
        hits = try await searchJSON(["password", "--data-dir", d, "--source", docs + "/pets"])
        #expect(hits.allSatisfy { ($0["source"] as? String)?.hasPrefix(docs + "/pets/") == true } && !hits.isEmpty)
        // A relative folder name, as typed beside it in a shell, is that folder.
        let relative = try await runProcess(
            "/bin/sh", ["-c", #"cd "$1" && exec "$2" search password --data-dir "$3" --source docs/pets --json"#, "sh", tmp.path, kianaBinary(), d])
        let relativeHits = (try? JSONSerialization.jsonObject(with: relative.out) as? [String: Any])?["results"] as? [[String: Any]] ?? []
        #expect(!relativeHits.isEmpty && relativeHits.allSatisfy { ($0["source"] as? String)?.hasPrefix(docs + "/pets/") == true }, "\(relativeHits)")
        #expect(try await searchJSON(["password", "--data-dir", d, "--tag", "other"]).isEmpty)

        // unchanged: nothing written
        let blocks = try await kiana(["status", "--data-dir", d]).out
        r = try await kiana(["ingest", docs, "--data-dir", d])
        #expect(r.out.contains("Nothing changed"), "\(r.out)")
        #expect(try await kiana(["status", "--data-dir", d]).out == blocks)

        // changed file: its chunk is replaced; deleted file: its chunks are forgotten
        try await write("# Router\n\nThe guest wifi password is Tulip7 since May.\n\n## Reset\n\nHold the reset button for ten seconds.\n", docs + "/router.md")
        try FileManager.default.removeItem(atPath: docs + "/pasta.html")
        r = try await kiana(["ingest", docs, "--data-dir", d])
        #expect(r.out.contains("1 changed") && r.out.contains("1 removed") && r.out.contains("~1") && r.out.contains("-1"), "\(r.out)")
        #expect(try await searchJSON(["Sunflower42", "--data-dir", d, "--mode", "keyword"]).isEmpty)
        #expect(try await searchJSON(["spaghetti", "--data-dir", d, "--mode", "keyword"]).isEmpty)
        hits = try await searchJSON(["visitor wifi password", "--data-dir", d, "--k", "1"])
        #expect((hits.first?["text"] as? String)?.contains("Tulip7") == true)

        // a new file with nothing to keep (headings only, or empty) is named as skipped, not
        // counted as unchanged
        try await write("# Shopping list\n", docs + "/heading.md")
        try await write("", docs + "/empty.txt")
        r = try await kiana(["ingest", docs, "--data-dir", d])
        #expect(r.status == 0 && r.out.contains("Nothing changed") && r.out.contains("3 unchanged"), "\(r.out)")
        #expect(r.err.contains("skipped \(docs)/heading.md: no text to keep") && r.err.contains("skipped \(docs)/empty.txt: no text to keep"), "\(r.err)")

        // A file named again inside a folder also named is read and counted once.
        r = try await kiana(["ingest", docs, docs, docs + "/router.md", "--data-dir", d])
        #expect(r.status == 0 && r.out.contains("Nothing changed (5 files"), "\(r.out)")

        // bad input: clear one-line errors, exit 1
        #expect(mkfifo(tmp.path + "/pipe.txt", 0o600) == 0)
        r = try await kiana(["ingest", tmp.path + "/pipe.txt", "--data-dir", d])
        #expect(r.status == 1 && r.err.contains("not a regular file") && r.err.contains("nothing could be ingested"), "\(r.err)")
        r = try await kiana(["ingest", tmp.path + "/missing", "--data-dir", d])
        #expect(r.status == 1 && r.err.contains("no such file or folder"))
        r = try await kiana(["ingest", docs + "/image.png", "--data-dir", d])
        #expect(r.status == 1 && r.err.contains("unsupported file type"))
        r = try await kiana(["search", "  ", "--data-dir", d])
        #expect(r.status == 1 && r.err.contains("empty"))
        r = try await kiana(["search", "x", "--mode", "fuzzy", "--data-dir", d])
        #expect(r.status == 1 && r.err.contains("--mode"))
    }

    /// A subfolder that cannot be read (its permissions changed) is not a folder whose files were
    /// deleted: what was ingested from it is kept and the folder named. Run as `nobody` (root
    /// reads any folder), on a data directory of its own.
    @Test func anUnreadableFolderKeepsWhatWasIngestedFromIt() async throws {
        let tmp = try TempDir("kiana-unreadable")
        defer { tmp.cleanup() }
        let docs = tmp.path + "/docs"
        try await write("# Shed\n\nThe lawn mower key hangs on the left hook.\n", docs + "/shed.md")
        try await write("# Attic\n\nThe winter tyres are in the attic.\n", docs + "/private/attic.md")
        let asRoot = getuid() == 0
        // A copy nobody can run: the checkout's build folder may not be open to other users.
        let binary = tmp.path + "/kiana"
        if asRoot {
            try FileManager.default.copyItem(atPath: kianaBinary(), toPath: binary)
            #expect(chmod(binary, 0o755) == 0)
        }
        func run(_ args: [String]) async throws -> (status: Int32, out: String, err: String) {
            guard asRoot else { return try await kiana(args) }
            let r = try await runProcess("/usr/sbin/runuser", ["-u", "nobody", "--", binary] + args)
            return (r.status, String(decoding: r.out, as: UTF8.self), String(decoding: r.err, as: UTF8.self))
        }
        if asRoot {
            _ = try await runProcess("/bin/chown", ["-R", "nobody", tmp.path])
            _ = try await runProcess("/bin/chmod", ["755", tmp.path])
        }
        let d = ["--data-dir", tmp.path + "/node", "--no-embed"]
        #expect(try await run(["init", "--data-dir", tmp.path + "/node"]).status == 0)
        var r = try await run(["ingest", docs] + d)
        #expect(r.status == 0 && r.out.contains("2 new"), "\(r.out) \(r.err)")
        #expect(chmod(docs + "/private", 0) == 0)
        defer { chmod(docs + "/private", 0o755) }
        r = try await run(["ingest", docs] + d)
        #expect(r.status == 0 && !r.out.contains("1 removed"), "\(r.out) \(r.err)")
        #expect(r.err.contains("\(docs)/private: cannot be read") && r.err.contains("was kept"), "\(r.err)")
        let listed = try await run(["list", "--data-dir", tmp.path + "/node"]).out
        #expect(listed.contains("attic.md"), "\(listed)")
        // Readable again and then emptied, the folder's file is forgotten as before.
        chmod(docs + "/private", 0o755)
        try FileManager.default.removeItem(atPath: docs + "/private/attic.md")
        r = try await run(["ingest", docs] + d)
        #expect(r.status == 0 && r.out.contains("1 removed"), "\(r.out) \(r.err)")
    }

    /// A folder given as a symbolic link is ingested where it points, its files named under
    /// the link (before: nothing was found and the ingest said nothing); re-runs follow changes.
    @Test func aFolderGivenAsALinkIsIngested() async throws {
        let tmp = try TempDir("kiana-linked-folder")
        defer { tmp.cleanup() }
        try await write("# Shed\n\nThe lawn mower key hangs on the left hook.\n", tmp.path + "/real/shed.md")
        try await write("# Attic\n\nThe winter tyres are in the attic.\n", tmp.path + "/real/sub/attic.md")
        try FileManager.default.createSymbolicLink(atPath: tmp.path + "/notes", withDestinationPath: "real")
        let d = ["--data-dir", tmp.path + "/node", "--no-embed"]
        #expect(try await kiana(["init", "--data-dir", tmp.path + "/node"]).status == 0)
        var r = try await kiana(["ingest", tmp.path + "/notes"] + d)
        #expect(r.status == 0 && r.out.contains("2 new"), "\(r.out) \(r.err)")
        let listed = try await kiana(["list", "--json", "--data-dir", tmp.path + "/node"])
        let sources = ((try? JSONSerialization.jsonObject(with: Data(listed.out.utf8))) as? [[String: Any]] ?? []).compactMap { $0["source"] as? String }
        #expect(sources.count == 2 && sources.allSatisfy { $0.hasPrefix(tmp.path + "/notes/") }, "\(sources)")
        // Unchanged through the link, or with a trailing slash: nothing to do; a file removed: removed.
        r = try await kiana(["ingest", tmp.path + "/notes/"] + d)
        #expect(r.status == 0 && r.out.contains("Nothing changed"), "\(r.out) \(r.err)")
        try FileManager.default.removeItem(atPath: tmp.path + "/real/sub/attic.md")
        r = try await kiana(["ingest", tmp.path + "/notes"] + d)
        #expect(r.status == 0 && r.out.contains("1 removed"), "\(r.out) \(r.err)")
    }

    /// `ingest --watch` follows new, changed and deleted files, and keeps watching through a
    /// folder that is gone for a while (renamed, an unmounted drive): what was ingested from it
    /// stays, and it is followed again when it is back.
    @Test func watchFollowsChangesAndOutlastsAMissingFolder() async throws {
        let tmp = try TempDir("kiana-watch")
        defer { tmp.cleanup() }
        let docs = tmp.path + "/docs"
        let node = tmp.path + "/node"
        try await write("# Shed\n\nThe lawn mower key hangs on the left hook.\n", docs + "/shed.md")
        #expect(try await kiana(["init", "--data-dir", node]).status == 0)
        // Watched through a link to the folder (followed as ingest follows it).
        try FileManager.default.createSymbolicLink(atPath: tmp.path + "/link", withDestinationPath: docs)
        let watch = try ChildProcess(kianaBinary(), ["ingest", tmp.path + "/link", "--watch", "--interval", "0.2", "--no-embed", "--data-dir", node])
        defer { watch.signal(SIGKILL) }
        #expect(await watch.waitFor("Watching", timeout: 60) != nil, "\(watch.output)")
        func listed() async throws -> String { try await kiana(["list", "--json", "--data-dir", node]).out }
        try await write("# Attic\n\nThe winter tyres are in the attic.\n", docs + "/attic.md")
        #expect(try await eventually(30) { try await listed().contains("winter tyres") }, "\(watch.output)")
        try await write("# Shed\n\nThe lawn mower key hangs on the right hook.\n", docs + "/shed.md")
        #expect(try await eventually(30) { try await listed().contains("right hook") }, "\(watch.output)")
        // Gone for a while: said, nothing removed, still watching.
        #expect(rename(docs, tmp.path + "/away") == 0)
        #expect(await watch.waitFor("still watching", timeout: 30) != nil, "\(watch.output)")
        #expect(watch.process.isRunning)
        var now = try await listed()
        #expect(now.contains("winter tyres") && now.contains("right hook"), "\(now)")
        // Back, with a change made meanwhile: followed again.
        try await write("# Cellar\n\nThe wine rack is in the cellar.\n", tmp.path + "/away/cellar.md")
        #expect(rename(tmp.path + "/away", docs) == 0)
        #expect(try await eventually(30) { try await listed().contains("wine rack") }, "\(watch.output)")
        try FileManager.default.removeItem(atPath: docs + "/attic.md")
        #expect(try await eventually(30) { !(try await listed().contains("winter tyres")) }, "\(watch.output)")
        now = try await listed()
        #expect(now.contains("right hook") && now.contains("wine rack"), "\(now)")
        #expect(watch.process.isRunning, "\(watch.output)")
        watch.signal(SIGINT)
        _ = await watch.wait(timeout: 20)
    }

    /// Tags given to a re-ingest of an unchanged file are added to its chunks (before: "Nothing
    /// changed" and the tags were dropped); tags are never taken away.
    @Test func aReIngestWithNewTagsTagsTheFile() async throws {
        let tmp = try TempDir("kiana-retag")
        defer { tmp.cleanup() }
        try await write("# Shed\n\nThe lawn mower key hangs on the left hook.\n\n## Bench\n\nThe saw is under the bench.\n", tmp.path + "/docs/shed.md")
        let d = ["--data-dir", tmp.path + "/node", "--no-embed"]
        #expect(try await kiana(["init", "--data-dir", tmp.path + "/node"]).status == 0)
        var r = try await kiana(["ingest", tmp.path + "/docs", "--tag", "home"] + d)
        #expect(r.status == 0 && r.out.contains("1 new"), "\(r.out) \(r.err)")
        r = try await kiana(["ingest", tmp.path + "/docs", "--tag", "garden"] + d)
        #expect(r.status == 0 && r.out.contains("tags added to 2 unchanged chunks"), "\(r.out) \(r.err)")
        r = try await kiana(["ingest", tmp.path + "/docs", "--tag", "garden"] + d)
        #expect(r.status == 0 && r.out.contains("Nothing changed"), "\(r.out) \(r.err)")
        r = try await kiana(["ingest", tmp.path + "/docs"] + d)
        #expect(r.status == 0 && r.out.contains("Nothing changed"), "\(r.out) \(r.err)")
        let items = (try JSONSerialization.jsonObject(with: Data(try await kiana(["list", "--json", "--data-dir", tmp.path + "/node"]).out.utf8)) as? [[String: Any]]) ?? []
        #expect(items.count == 2 && items.allSatisfy { ($0["tags"] as? [String]) == ["home", "garden"] }, "\(items)")
        let found = try await kiana(["search", "saw bench", "--mode", "keyword", "--tag", "garden", "--data-dir", tmp.path + "/node"])
        #expect(found.out.contains("under the bench"), "\(found.out)")
    }

    /// Ingests of one data directory take turns (concurrent ones each added a file's new chunks,
    /// and the second copy then kept serving old text); a chunk already stored twice is made one.
    /// Decision 112: a chunk the owner forgot is not brought back by the next ingest of its
    /// unchanged file (a `--watch` would otherwise undo every forget at once); a chunk whose text
    /// changed comes back on the same item; the file's other chunks follow as before.
    @Test func aForgottenChunkStaysForgottenWhileItsTextIsUnchanged() async throws {
        let tmp = try TempDir("kiana-ingest-forget")
        defer { tmp.cleanup() }
        let d = tmp.path + "/node"
        let file = tmp.path + "/docs/house.md"
        #expect(try await kiana(["init", "--data-dir", d]).status == 0)
        let doc = "# Boiler\n\nThe boiler code E42 means low pressure.\n\n# Garden\n\nThe hose hangs behind the shed.\n"
        try await write(doc, file)
        func items(_ all: Bool = false) async throws -> [[String: Any]] {
            let out = try await kiana(["list", "--json", "--data-dir", d] + (all ? ["--all"] : [])).out
            return (try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [[String: Any]]) ?? []
        }
        func texts() async throws -> [String] { try await items().compactMap { $0["text"] as? String }.sorted() }
        var r = try await kiana(["ingest", file, "--no-embed", "--data-dir", d])
        #expect(r.status == 0, "\(r.err)")
        let garden = try #require(try await items().first { ($0["text"] as? String)?.contains("hose") == true })
        let gardenID = try #require(garden["id"] as? String)
        #expect(try await kiana(["forget", gardenID, "--data-dir", d]).status == 0)
        #expect(try await texts() == ["The boiler code E42 means low pressure."])

        // Unchanged file: nothing written, the chunk stays forgotten, and the report says so.
        r = try await kiana(["ingest", file, "--no-embed", "--data-dir", d])
        #expect(r.status == 0 && r.out.contains("Nothing changed") && r.out.contains("1 forgotten chunk left out"), "\(r.out)")
        #expect(try await texts() == ["The boiler code E42 means low pressure."])
        #expect(try await items(true).count == 2)
        // Another chunk of the file changes: it is updated, the forgotten one left alone.
        try await write(doc.replacingOccurrences(of: "E42", with: "E43"), file)
        r = try await kiana(["ingest", file, "--no-embed", "--data-dir", d])
        #expect(r.status == 0 && r.out.contains("1 changed"), "\(r.out)")
        #expect(try await texts() == ["The boiler code E43 means low pressure."])
        // The forgotten chunk's own text changes: new text, back on the same item.
        try await write(doc.replacingOccurrences(of: "E42", with: "E43").replacingOccurrences(of: "behind the shed", with: "in the garage"), file)
        r = try await kiana(["ingest", file, "--no-embed", "--data-dir", d])
        #expect(r.status == 0, "\(r.err)")
        #expect(try await texts() == ["The boiler code E43 means low pressure.", "The hose hangs in the garage."])
        #expect(try await items().contains { $0["id"] as? String == gardenID })
        #expect(try await items(true).count == 2)

        // What ingest itself removed is not what the owner forgot: a file emptied, shortened,
        // renamed away or deleted comes back whole when it is put back.
        let full = try String(contentsOfFile: file, encoding: .utf8)
        let both = ["The boiler code E43 means low pressure.", "The hose hangs in the garage."]
        let folder = tmp.path + "/docs"
        r = try await kiana(["ingest", folder, "--no-embed", "--data-dir", d])
        #expect(r.status == 0, "\(r.err)")
        for (what, away, back) in [
            ("emptied", { try Data().write(to: URL(fileURLWithPath: file)) }, { try Data(full.utf8).write(to: URL(fileURLWithPath: file)) }),
            ("shortened", { try Data("# Boiler\n\nThe boiler code E43 means low pressure.\n".utf8).write(to: URL(fileURLWithPath: file)) },
             { try Data(full.utf8).write(to: URL(fileURLWithPath: file)) }),
            ("renamed away", { try FileManager.default.moveItem(atPath: file, toPath: tmp.path + "/elsewhere.md") },
             { try FileManager.default.moveItem(atPath: tmp.path + "/elsewhere.md", toPath: file) }),
            ("deleted", { try FileManager.default.removeItem(atPath: file) }, { try Data(full.utf8).write(to: URL(fileURLWithPath: file)) }),
        ] as [(String, () throws -> Void, () throws -> Void)] {
            try away()
            r = try await kiana(["ingest", folder, "--no-embed", "--data-dir", d])
            #expect(r.status == 0, "\(what): \(r.err)")
            #expect(try await texts() != both, "\(what): nothing was removed")
            try back()
            r = try await kiana(["ingest", folder, "--no-embed", "--data-dir", d])
            #expect(r.status == 0 && !r.out.contains("forgotten chunks left out"), "\(what): \(r.out)")
            #expect(try await texts() == both, "\(what): not back after it was put back")
        }

        // A forget on one device merged with a change made on another (the change later) leaves
        // a live item with the mark: ingest takes it as the chunk, puts its source back, and
        // adds no second copy.
        let other = tmp.path + "/docs/other.md"
        try await write("# Fruit\n\nThe mandarins are in the cellar.\n", other)
        #expect(try await kiana(["remember", "The mandarins are in the cellar.", "--title", "other.md › Fruit", "--source", other + "#0#forgotten", "--data-dir", d]).status == 0)
        r = try await kiana(["ingest", folder, "--no-embed", "--data-dir", d])
        #expect(r.status == 0, "\(r.err)")
        let mandarins = try await items().filter { ($0["text"] as? String)?.contains("mandarins") == true }
        #expect(mandarins.count == 1 && mandarins.first?["source"] as? String == other + "#0", "\(mandarins)")
        // Only an ingested chunk's source is marked by a forget.
        #expect(try await kiana(["remember", "Bug triage notes", "--source", "Issue #42", "--data-dir", d]).status == 0)
        let triage = try #require(try await items().first { $0["text"] as? String == "Bug triage notes" }?["id"] as? String)
        #expect(try await kiana(["forget", triage, "--data-dir", d]).status == 0)
        #expect(try await items(true).first { $0["id"] as? String == triage }?["source"] as? String == "Issue #42")
    }

    @Test func ingestsTakeTurnsAndAChunkStoredTwiceIsMadeOne() async throws {
        guard haveModel() else { return }
        let tmp = try TempDir("kiana-ingest-turns")
        defer { tmp.cleanup() }
        let d = tmp.path + "/node"
        let docs = tmp.path + "/docs"
        #expect(try await kiana(["init", "--data-dir", d]).status == 0)
        for i in 1...30 { try await write("# Note \(i)\nFact \(i) is \(i * 7).\n", docs + "/n\(i).md") }
        func items() async throws -> [[String: Any]] {
            (try JSONSerialization.jsonObject(with: Data(try await kiana(["list", "--json", "--data-dir", d]).out.utf8)) as? [[String: Any]]) ?? []
        }
        // Another ingest holds the lock (here: a Python process with flock, as a running ingest does).
        let holder = try ChildProcess(
            python3(), ["-c", "import fcntl, sys; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); sys.stdin.readline()", d + "/ingest.lock"])
        #expect(await holder.nextLine() == "locked")
        let ingest = try ChildProcess(kianaBinary(), ["ingest", docs, "--data-dir", d])
        #expect(await ingest.waitFor("waiting for another ingest") != nil, "\(ingest.output)")
        try await Task.sleep(for: .milliseconds(500))
        #expect(try await items().isEmpty, "the ingest wrote while another held the lock")
        holder.write("\n")
        #expect(await ingest.wait(timeout: 120) == 0, "\(ingest.output)")
        #expect(try await items().count == 30)
        // A second item for one chunk, as two ingests without the lock left it.
        #expect(try await kiana(["remember", "Fact 3 is 21.", "--source", docs + "/n3.md#0", "--data-dir", d]).status == 0)
        #expect(try await items().count == 31)
        let healed = try await kiana(["ingest", docs, "--data-dir", d])
        #expect(healed.status == 0 && healed.out.contains("-1"), "\(healed.out) \(healed.err)")
        let left = try await items()
        #expect(left.count == 30 && left.filter { ($0["source"] as? String) == docs + "/n3.md#0" }.count == 1, "\(left)")
    }

    @Test func embedCommandMatchesTheReference() async throws {
        guard haveModel() else { return }
        let rel = "vectors/minilm/reference.json"
        guard Shared.exists(rel) else {
            if Shared.isCI { Issue.record("missing \(rel)") }
            return
        }
        let ref = try JSONSerialization.jsonObject(with: Data(contentsOf: Shared.root.appendingPathComponent(rel))) as! [String: Any]
        let s = (ref["sentences"] as! [String: Any])["Why is the sky blue?"] as! [String: Any]
        let tmp = try TempDir()
        defer { tmp.cleanup() }
        var r = try await kiana(["embed", "Why is the sky blue?", "--tokens", "--data-dir", tmp.path])
        #expect(r.out.trimmingCharacters(in: .whitespacesAndNewlines) == "[" + (s["ids"] as! [Int]).map(String.init).joined(separator: ", ") + "]")
        r = try await kiana(["embed", "Why is the sky blue?", "--json", "--data-dir", tmp.path])
        let ours = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [Double]
        let theirs = s["embedding"] as! [Double]
        let dot = zip(ours, theirs).reduce(0) { $0 + $1.0 * $1.1 }
        #expect(ours.count == 384 && dot > 0.9999, "cosine \(dot)")
    }

    @Test func missingModelIsAOneLineErrorSayingHowToFixIt() async throws {
        let tmp = try TempDir()
        defer { tmp.cleanup() }
        let r = try await kiana(["embed", "hello", "--model-dir", tmp.path + "/nowhere"])
        #expect(r.status == 1)
        #expect(r.err.split(separator: "\n").count == 1 && r.err.contains("scripts/models.sh"), "\(r.err)")
        // a corrupt model file is caught by its checksum
        let dir = tmp.path + "/models/all-minilm-l6-v2"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try Data(repeating: 7, count: 1000).write(to: URL(fileURLWithPath: dir + "/model.safetensors"))
        try Data("[PAD]\n".utf8).write(to: URL(fileURLWithPath: dir + "/vocab.txt"))
        let c = try await kiana(["embed", "hello", "--model-dir", tmp.path + "/models"])
        #expect(c.status == 1 && c.err.contains("corrupt"), "\(c.err)")
        // Hybrid search without the model is keyword search, said on stderr; vector search is an error.
        let d = ["--data-dir", tmp.path + "/node", "--model-dir", tmp.path + "/nowhere"]
        #expect(try await kiana(["init", "--data-dir", tmp.path + "/node"]).status == 0)
        #expect(try await kiana(["remember", "The saw is under the workbench.", "--data-dir", tmp.path + "/node"]).status == 0)
        let hybrid = try await kiana(["search", "workbench saw"] + d)
        #expect(hybrid.status == 0 && hybrid.out.contains("under the workbench") && hybrid.err.contains("searched by keyword only"), "\(hybrid.out) \(hybrid.err)")
        let vector = try await kiana(["search", "workbench saw", "--mode", "vector"] + d)
        #expect(vector.status == 1 && vector.err.contains("scripts/models.sh"), "\(vector.err)")
    }

    @Test func hybridBeatsKeywordAndVectorOnTheEvaluationSet() async throws {
        guard haveModel() else { return }
        let r = try await kiana(["bench", "retrieval", "--json"])
        #expect(r.status == 0, "\(r.err)")
        let rows = (try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [[String: Any]]) ?? []
        func ndcg(_ mode: String) -> Double { rows.first { $0["mode"] as? String == mode && $0["kind"] as? String == "all" }?["ndcg10"] as? Double ?? 0 }
        #expect(ndcg("hybrid") > ndcg("keyword") && ndcg("hybrid") > ndcg("vector"), "\(rows)")
        #expect((rows.first { $0["kind"] as? String == "all" }?["queries"] as? Int ?? 0) >= 100)
    }

    @Test func runningNodeEmbedsKnowledgeThatArrivesWhileItRuns() async throws {
        guard haveModel() else { return }
        let tmp = try TempDir()
        defer { tmp.cleanup() }
        let d = tmp.path
        #expect(try await kiana(["init", "--data-dir", d]).status == 0)
        let node = try ServeTests.Running.loopback(d)
        defer {
            node.process.interrupt()
            _ = node.waitForExit()
        }
        #expect(await node.waitForPort() != nil, "\(node.text)")
        #expect(try await kiana(["remember", "The spare key is under the third flower pot.", "--data-dir", d]).status == 0)
        var status = ""
        let end = Date().addingTimeInterval(30)
        while Date() < end {
            status = try await kiana(["index", "status", "--data-dir", d]).out
            if status.contains("Items: 1, embedded: 1, waiting: 0") { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(status.contains("Items: 1, embedded: 1, waiting: 0"), "\(status)")
    }
}
