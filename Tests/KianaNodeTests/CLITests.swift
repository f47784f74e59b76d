import Foundation
import KianaCore
import KianaNode
import KianaStore
import KianaTestSupport
import Testing

/// The `kiana` executable, run as a user would.
@Suite struct CLITests {
    @Test func initCreatesPrivateKeysAndStatusReportsThem() async throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let data = dir.path + "/node"
        let r = try await kiana(["init", "--data-dir", data, "--name", "home"])
        #expect(r.status == 0, "\(r.err)")
        for key in ["identity.key", "transport.key"] {
            let attrs = try FileManager.default.attributesOfItem(atPath: data + "/" + key)
            #expect((attrs[.posixPermissions] as? Int) == 0o600, "\(key)")
            #expect((attrs[.size] as? Int) == 32)
        }
        let dirAttrs = try FileManager.default.attributesOfItem(atPath: data)
        #expect((dirAttrs[.posixPermissions] as? Int) == 0o700)
        // A network name is something a person reads: 1 to 100 characters, refused before anything is made.
        for bad in [String(repeating: "a", count: 70_000), "   ", "evil\u{202E}name"] {
            let r = try await kiana(["init", "--data-dir", dir.path + "/named", "--name", bad])
            #expect(r.status == 1 && r.err.contains("1 to 100 characters") && !FileManager.default.fileExists(atPath: dir.path + "/named"), "\(r.err)")
        }
        // An empty folder made beforehand is closed too; one holding other files is left alone.
        for (name, other) in [("made", false), ("shared", true)] {
            let folder = dir.path + "/" + name
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
            if other { try Data("x".utf8).write(to: URL(fileURLWithPath: folder + "/notes.txt")) }
            #expect(try await kiana(["init", "--data-dir", folder]).status == 0)
            let mode = try FileManager.default.attributesOfItem(atPath: folder)[.posixPermissions] as? Int
            #expect(mode == (other ? 0o755 : 0o700), "\(name): \(String(mode ?? 0, radix: 8))")
        }
        let status = try await kiana(["status", "--data-dir", data])
        #expect(status.status == 0)
        let idLine = status.out.split(separator: "\n").first { $0.hasPrefix("Device ID:") }!
        let printed = idLine.split(separator: " ").last.map(String.init)!
        #expect(throws: Never.self) { try DeviceID(parsing: printed) }
        #expect(status.out.contains("Head:        height 0"))
        #expect(status.out.contains("Authorities: \(printed)"))
        #expect(status.out.contains("Votes:       none pending"))
        // A second init refuses and changes nothing.
        let again = try await kiana(["init", "--data-dir", data])
        #expect(again.status == 1)
        #expect(again.err.hasPrefix("kiana: "))
        #expect(again.err.split(separator: "\n").count == 1)
    }

    @Test func dataDirectoryComesFromEnvironmentWhenNoFlag() async throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        var env = ProcessInfo.processInfo.environment
        env["KIANA_DATA_DIR"] = dir.path + "/from-env"
        let r = try await runProcess(kianaBinary(), ["init"], environment: env)
        #expect(r.status == 0)
        #expect(FileManager.default.fileExists(atPath: dir.path + "/from-env/identity.key"))
        #expect(try DataDirectory.resolve("/x", environment: ["KIANA_DATA_DIR": "/y", "HOME": "/h"]).path == "/x")
        #expect(try DataDirectory.resolve(nil, environment: ["KIANA_DATA_DIR": "/y", "HOME": "/h"]).path == "/y")
        #expect(try DataDirectory.resolve(nil, environment: ["HOME": "/h"]).path == "/h/.kiana")
    }

    @Test func keyReadableByOthersIsRefused() async throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        #expect(try await kiana(["init", "--data-dir", dir.path]).status == 0)
        chmod(dir.path + "/identity.key", 0o644)
        let r = try await kiana(["status", "--data-dir", dir.path])
        #expect(r.status == 1)
        #expect(r.err.contains("chmod 600"))
    }

    @Test func rememberListShowForgetRoundTrip() async throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let d = ["--data-dir", dir.path]
        #expect(try await kiana(["init"] + d).status == 0)
        let r = try await kiana(["remember", "Green tea steeps at 80 °C", "--title", "Tea", "--tag", "kitchen", "--tag", "tea"] + d)
        #expect(r.status == 0, "\(r.err)")
        let id = String(r.out.split(separator: " ")[1])
        #expect(id.count == 32)
        let list = try await kiana(["list"] + d)
        #expect(list.out.contains(id) && list.out.contains("Tea") && list.out.contains("[kitchen, tea]"))
        let show = try await kiana(["show", String(id.prefix(6))] + d)
        #expect(show.out.contains("Green tea steeps at 80 °C"))
        #expect(try await kiana(["forget", id] + d).status == 0)
        #expect(!(try await kiana(["list"] + d).out.contains(id)))
        #expect(try await kiana(["list", "--all"] + d).out.contains("(forgotten)"))
        // A blank title is no title: the item lists by its text, not as an empty line.
        let blank = try await kiana(["remember", "The bin goes out on Tuesday", "--title", "  "] + d)
        let blankID = String(blank.out.split(separator: " ")[1])
        #expect(try await kiana(["list"] + d).out.split(separator: "\n").contains { $0.contains(blankID) && $0.contains("The bin goes out") })
        let again = try await kiana(["forget", id] + d)
        #expect(again.status == 1 && again.err.contains("already forgotten"))
        #expect(try await kiana(["ledger", "verify"] + d).status == 0)
    }

    @Test(arguments: [
        (["remember", "   "], "empty"),
        (["show", "zz"], "4 to 32 hex"),
        (["show", "abcdef"], "no knowledge item"),
        (["forget", "abcdef"], "no knowledge item"),
        (["ledger", "show", "--height", "99"], "no block at height 99"),
        (["ledger", "proof", "0123456789"], "no knowledge item or ledger entry"),
        (["import", "/nonexistent/file.json"], "cannot read"),
        // An empty path (an unset variable) is an error, not the current folder or a file named "".
        (["ingest", ""], "an empty path"),
        (["search", "x", "--k", "-1"], "a negative value is written --k=-1"),
        (["export", "-o", ""], "an empty output file name"),
        (["import", ""], "an empty file name"),
        // `serve` refuses what would leave it half-configured, before it listens.
        (["serve", "--host", "nope.invalid", "--port", "0", "--p2p-port", "0", "--discovery", "off"], "cannot listen on \"nope.invalid\""),
        (["serve", "--backend", "ollama", "--port", "0", "--p2p-port", "0", "--discovery", "off"], "needs a model name"),
    ])
    func badInputGivesOneClearLine(_ args: [String], _ fragment: String) async throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        #expect(try await kiana(["init", "--data-dir", dir.path]).status == 0)
        let r = try await kiana(args + ["--data-dir", dir.path])
        #expect(r.status == 1)
        #expect(r.err.contains(fragment), "\(r.err)")
        #expect(r.err.split(separator: "\n").count == 1)
        #expect(try await kiana(["ledger", "verify", "--data-dir", dir.path]).status == 0)
    }

    /// `export -o` writes through a symlink, a pipe or a device instead of replacing it with a
    /// regular file, and a device that cannot take the bytes is an error, not "Exported".
    @Test func exportWritesThroughLinksPipesAndDevices() async throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let d = ["--data-dir", dir.path + "/d"]
        #expect(try await kiana(["init"] + d).status == 0)
        #expect(try await kiana(["remember", "exported fact"] + d).status == 0)
        let real = dir.path + "/real.json"
        let link = dir.path + "/link.json"
        try Data("old".utf8).write(to: URL(fileURLWithPath: real))
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: "real.json")
        #expect(try await kiana(["export", "-o", link] + d).status == 0)
        #expect((try? FileManager.default.destinationOfSymbolicLink(atPath: link)) == "real.json", "the link was replaced")
        #expect(String(decoding: try Data(contentsOf: URL(fileURLWithPath: real)), as: UTF8.self).contains("\"kiana-ledger\""))
        // A relative link in the folder the command runs in, and /dev/stdout when it is a pipe.
        try FileManager.default.createSymbolicLink(atPath: dir.path + "/here.json", withDestinationPath: "real.json")
        try Data("old".utf8).write(to: URL(fileURLWithPath: real))
        let here = try await runProcess("/bin/sh", ["-c", #"cd "$1" && exec "$2" export -o here.json --data-dir d"#, "sh", dir.path, kianaBinary()])
        #expect(here.status == 0, "\(String(decoding: here.err, as: UTF8.self))")
        #expect(String(decoding: try Data(contentsOf: URL(fileURLWithPath: real)), as: UTF8.self).contains("\"kiana-ledger\""))
        let piped = try await kiana(["export", "-o", "/dev/stdout"] + d)
        #expect(piped.status == 0 && piped.out.contains("\"kiana-ledger\""), "\(piped.err)")
        // /dev/stdout appended to a file (`>> log`) appends: the file is not replaced.
        let log = dir.path + "/log.txt"
        try Data("kept line\n".utf8).write(to: URL(fileURLWithPath: log))
        let appended = try await runProcess("/bin/sh", ["-c", #""$1" export -o /dev/stdout --data-dir "$2" >> "$3""#, "sh", kianaBinary(), dir.path + "/d", log])
        let text = String(decoding: try Data(contentsOf: URL(fileURLWithPath: log)), as: UTF8.self)
        #expect(appended.status == 0 && text.hasPrefix("kept line\n") && text.contains("\"kiana-ledger\""), "\(text.prefix(100))")
        // A FIFO: a reader gets the export; the FIFO stays one.
        let fifo = dir.path + "/fifo"
        #expect(mkfifo(fifo, 0o600) == 0)
        let reader = try ChildProcess("/bin/cat", [fifo])
        #expect(try await kiana(["export", "-o", fifo] + d).status == 0)
        _ = await reader.wait()
        // The reader's output is collected beside it: read to its end, not just to its exit.
        let line = await reader.waitFor("\"kiana-ledger\"", timeout: 10)
        #expect(line != nil, "\(reader.output.prefix(200))")
        var st = stat()
        #expect(lstat(fifo, &st) == 0 && st.st_mode & S_IFMT == S_IFIFO)
        // A full device: the error is reported and the device is left alone.
        let full = try await kiana(["export", "-o", "/dev/full"] + d)
        #expect(full.status == 1 && full.err.contains("/dev/full: the disk is full"), "\(full.err)")
        #expect(stat("/dev/full", &st) == 0 && st.st_mode & S_IFMT == S_IFCHR)
    }

    /// `export -o` (and `say -o`) never replace a data directory's own files or an SQLite
    /// database: a slip of the path once wiped a node's ledger and key.
    @Test func exportDoesNotReplaceTheNodesFilesOrADatabase() async throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let d = ["--data-dir", dir.path + "/d"]
        #expect(try await kiana(["init"] + d).status == 0)
        #expect(try await kiana(["remember", "exported fact"] + d).status == 0)
        // Through a symlink too: what it names is checked.
        try FileManager.default.createSymbolicLink(atPath: dir.path + "/db-link", withDestinationPath: dir.path + "/d/kiana.sqlite")
        for name in ["/d/kiana.sqlite", "/d/identity.key", "/d/transport.key", "/db-link"] {
            let path = dir.path + name
            let before = try Data(contentsOf: URL(fileURLWithPath: path))
            let r = try await kiana(["export", "-o", path] + d)
            #expect(r.status == 1 && r.err.contains("is a file of the KI_ana data directory"), "\(name): \(r.err)")
            #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == before, "\(name) changed")
        }
        // Any SQLite database (made by Python's sqlite3, not by kiana).
        let other = dir.path + "/notes.db"
        let made = try await runProcess(python3(), ["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('create table t(x)'); c.commit()", other])
        #expect(made.status == 0)
        let refused = try await kiana(["export", "-o", other] + d)
        #expect(refused.status == 1 && refused.err.contains("is an SQLite database"), "\(refused.err)")
        // Nor one of its files that is not there yet (a `ledger.damaged` made so marks the
        // ledger damaged), nor anything in its folders (`uploads/` is the node's).
        try FileManager.default.createDirectory(atPath: dir.path + "/d/uploads", withIntermediateDirectories: true)
        for name in ["/d/ledger.damaged", "/d/config.json", "/d/kiana.sqlite-journal", "/d/uploads/x.json"] {
            let r = try await kiana(["export", "-o", dir.path + name] + d)
            #expect(r.status == 1 && r.err.contains("KI_ana data directory") && !FileManager.default.fileExists(atPath: dir.path + name), "\(name): \(r.err)")
        }
        // Another file in the data directory, and an earlier export anywhere, are written.
        #expect(try await kiana(["export", "-o", dir.path + "/d/export.json"] + d).status == 0)
        #expect(try await kiana(["export", "-o", dir.path + "/d/export.json"] + d).status == 0)
        #expect(try await kiana(["ledger", "verify"] + d).status == 0)
    }

    /// Inits racing on one new directory: one makes the network, the others say why not in one
    /// line (no SQLite migration errors), and the directory verifies.
    @Test func concurrentInitsMakeOneNetwork() async throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let d = dir.path + "/new"
        let results = try await withThrowingTaskGroup(of: (status: Int32, out: String, err: String).self) { group in
            for _ in 0..<4 { group.addTask { try await kiana(["init", "--data-dir", d]) } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(results.filter { $0.status == 0 }.count == 1, "\(results)")
        for r in results where r.status != 0 {
            #expect(r.err.split(separator: "\n").count == 1 && (r.err.contains("is using") || r.err.contains("already initialized")), "\(r.err)")
        }
        #expect(try await kiana(["ledger", "verify", "--data-dir", d]).status == 0)
    }

    @Test func commandsBeforeInitSaySo() async throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        for cmd in [["status"], ["list"], ["remember", "x"], ["ledger", "verify"]] {
            let r = try await kiana(cmd + ["--data-dir", dir.path + "/none"])
            #expect(r.status == 1)
            #expect(r.err.contains("kiana init"), "\(cmd): \(r.err)")
        }
        // Keys and no ledger (a join cut off after its code): said plainly by every command, and
        // no empty database is left behind by the attempts.
        let keys = dir.path + "/keys"
        #expect(try await kiana(["init", "--data-dir", keys]).status == 0)
        try FileManager.default.removeItem(atPath: keys + "/kiana.sqlite")
        for cmd in [["status"], ["list"], ["remember", "x"], ["search", "x"], ["ledger", "verify"]] {
            let r = try await kiana(cmd + ["--data-dir", keys])
            #expect(r.status == 1 && r.err.contains("no ledger in") && r.err.contains("kiana join") && !r.err.contains("SQLite"), "\(cmd): \(r.err)")
        }
        #expect(!FileManager.default.fileExists(atPath: keys + "/kiana.sqlite"))
        // `serve` does not quietly make it a network of its own (the join may have been voted in).
        let serve = try await kiana(["serve", "--data-dir", keys, "--port", "0", "--p2p-port", "0", "--discovery", "off"])
        #expect(serve.status == 1 && serve.err.contains("kiana join") && !FileManager.default.fileExists(atPath: keys + "/kiana.sqlite"), "\(serve.err)")
        #expect(try await kiana(["init", "--data-dir", keys]).status == 0, "asked for, a new network with this key")

        // A ledger whose identity.key is gone: no command makes new keys beside it (a new key
        // is no authority of that ledger, and init used to replace transport.key too).
        let lost = dir.path + "/lost"
        #expect(try await kiana(["init", "--data-dir", lost]).status == 0)
        try FileManager.default.removeItem(atPath: lost + "/identity.key")
        let transport = try Data(contentsOf: URL(fileURLWithPath: lost + "/transport.key"))
        let exported = dir.path + "/other.json"
        #expect(try await kiana(["init", "--data-dir", dir.path + "/other"]).status == 0)
        #expect(try await kiana(["export", "-o", exported, "--data-dir", dir.path + "/other"]).status == 0)
        for cmd in [["init"], ["status"], ["import", exported], ["serve", "--port", "0", "--p2p-port", "0", "--discovery", "off"]] {
            let r = try await kiana(cmd + ["--data-dir", lost])
            #expect(r.status == 1 && r.err.contains("identity.key is missing") && r.err.contains("kiana restore"), "\(cmd): \(r.err)")
        }
        #expect(!FileManager.default.fileExists(atPath: lost + "/identity.key"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: lost + "/transport.key")) == transport)

        // An emptied database (0 bytes) is a lost ledger: said, and no schema is written into it.
        let emptied = dir.path + "/emptied"
        #expect(try await kiana(["init", "--data-dir", emptied]).status == 0)
        try Data().write(to: URL(fileURLWithPath: emptied + "/kiana.sqlite"))
        for cmd in [["status"], ["ledger", "verify"], ["remember", "x"], ["init"], ["serve", "--port", "0", "--p2p-port", "0", "--discovery", "off"]] {
            let r = try await kiana(cmd + ["--data-dir", emptied])
            #expect(r.status == 1 && r.err.contains("is empty (0 bytes)"), "\(cmd): \(r.err)")
        }
        #expect((try FileManager.default.attributesOfItem(atPath: emptied + "/kiana.sqlite")[.size] as? Int) == 0)
        // Both gone (the key and the database's content): still no new keys or network.
        let bare = dir.path + "/bare"
        #expect(try await kiana(["init", "--data-dir", bare]).status == 0)
        try FileManager.default.removeItem(atPath: bare + "/identity.key")
        try Data().write(to: URL(fileURLWithPath: bare + "/kiana.sqlite"))
        for cmd in [["status"], ["init"], ["serve", "--port", "0", "--p2p-port", "0", "--discovery", "off"]] {
            let r = try await kiana(cmd + ["--data-dir", bare])
            #expect(r.status == 1 && r.err.contains("emptied database and no identity.key"), "\(cmd): \(r.err)")
        }
        #expect(!FileManager.default.fileExists(atPath: bare + "/identity.key"))
        #expect((try FileManager.default.attributesOfItem(atPath: bare + "/kiana.sqlite")[.size] as? Int) == 0)
    }

    /// An `init` (or the first `serve`, which makes one) cut off after writing the keys and
    /// before its first block leaves `init.pending`: the next `init` or `serve` finishes it,
    /// where keys without a ledger otherwise read as a cut-off join that must not become a
    /// network of its own. The states are made as the kill leaves them.
    @Test func anInitCutOffBeforeItsFirstBlockIsFinishedNextTime() async throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        func cutOff(_ name: String, database: String) async throws -> DataDirectory {
            let path = dir.path + "/" + name
            #expect(try await kiana(["init", "--data-dir", path]).status == 0)
            for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + "/kiana.sqlite" + suffix) }
            try? FileManager.default.removeItem(atPath: path + "/api.token")
            #expect(FileManager.default.createFile(atPath: path + "/init.pending", contents: nil))
            let directory = DataDirectory(path: path)
            if database == "schema" { _ = try KianaDatabase(path: directory.databasePath) }
            return directory
        }
        // No database yet: said as an init to finish, and `serve` (its opening) finishes it.
        let none = try await cutOff("none", database: "none")
        let status = try await kiana(["status", "--data-dir", none.path])
        #expect(status.status == 1 && status.err.contains("cut off before its first block") && !status.err.contains("kiana join"), "\(status.err)")
        let (node, created) = try Node.openOrInitialize(directory: none)
        let made1 = try node.store.network()
        #expect(created && made1 != nil)
        #expect(!FileManager.default.fileExists(atPath: none.initPendingPath))
        // A database with its schema and no block yet: the same.
        let schema = try await cutOff("schema", database: "schema")
        #expect(try Node.openOrInitialize(directory: schema).created)
        #expect(!FileManager.default.fileExists(atPath: schema.initPendingPath))
        // `kiana init` run again finishes it too.
        let again = try await cutOff("again", database: "none")
        #expect(try await kiana(["init", "--data-dir", again.path]).status == 0)
        #expect(!FileManager.default.fileExists(atPath: again.initPendingPath))
        #expect(try await kiana(["ledger", "verify", "--data-dir", again.path]).status == 0)
        // Cut off after the first block: the ledger is opened as it is and the mark goes.
        let after = dir.path + "/after"
        #expect(try await kiana(["init", "--data-dir", after]).status == 0)
        let network = try Node.open(directory: DataDirectory(path: after), forReading: true).store.network()
        #expect(FileManager.default.createFile(atPath: after + "/init.pending", contents: nil))
        let (opened, made) = try Node.openOrInitialize(directory: DataDirectory(path: after))
        let kept = try opened.store.network()
        #expect(!made && kept == network)
        #expect(!FileManager.default.fileExists(atPath: after + "/init.pending"))
        // A stale mark is removed by any command that opens the ledger, so the ledger lost later
        // is refused as lost, not made a new network.
        #expect(FileManager.default.createFile(atPath: after + "/init.pending", contents: nil))
        #expect(try await kiana(["status", "--data-dir", after]).status == 0)
        #expect(!FileManager.default.fileExists(atPath: after + "/init.pending"))
        // A database with its schema and no block and no mark: a cut-off join or import.
        let schemaOnly = dir.path + "/schemaOnly"
        #expect(try await kiana(["init", "--data-dir", schemaOnly]).status == 0)
        for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: schemaOnly + "/kiana.sqlite" + suffix) }
        _ = try KianaDatabase(path: schemaOnly + "/kiana.sqlite")
        let said = try await kiana(["status", "--data-dir", schemaOnly])
        #expect(said.status == 1 && said.err.contains("kiana import` was cut off"), "\(said.err)")
    }

    /// `join` into a directory whose kiana.sqlite links to a folder that is not there (a disk
    /// not mounted), or is a folder: refused before any authority is contacted.
    @Test func joinChecksWhereTheLedgerGoesFirst() async throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let linked = dir.path + "/linked"
        try FileManager.default.createDirectory(atPath: linked, withIntermediateDirectories: false)
        try FileManager.default.createSymbolicLink(atPath: linked + "/kiana.sqlite", withDestinationPath: dir.path + "/unmounted/kiana.sqlite")
        let r = try await kiana(["join", "127.0.0.1:9", "--data-dir", linked, "--timeout", "5"])
        #expect(r.status == 1 && r.err.contains("whose folder is not there"), "\(r.err)")
        let folder = dir.path + "/folder"
        try FileManager.default.createDirectory(atPath: folder + "/kiana.sqlite", withIntermediateDirectories: true)
        let f = try await kiana(["join", "127.0.0.1:9", "--data-dir", folder, "--timeout", "5"])
        #expect(f.status == 1 && f.err.contains("is a folder"), "\(f.err)")
    }

    /// A node that holds its data directory but has not written node.json yet (it checks the
    /// ledger first) is "starting", not "not running" (which sent users to start a second one).
    /// The starting node is stood in for by a process with a `kiana serve` command line whose
    /// PID is in node.lock: the check's duration cannot be held open for a test otherwise.
    @Test func aStartingNodeIsNotCalledStopped() async throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        #expect(try await kiana(["init", "--data-dir", dir.path]).status == 0)
        // It holds node.lock open, as a serving node does (the PID is written into that same file).
        #expect(FileManager.default.createFile(atPath: dir.path + "/node.lock", contents: nil))
        let standIn = try ChildProcess(
            "/bin/bash", ["-c", #"exec -a /usr/local/bin/kiana perl -e 'open(my $f, "<", $ARGV[0]) or die; sleep 30' "$0" serve"#, dir.path + "/node.lock"])
        defer { standIn.signal(SIGKILL) }
        #expect(try await eventually(5) { (FileManager.default.contents(atPath: "/proc/\(standIn.process.pid)/cmdline") ?? Data()).starts(with: Data("/usr/local/bin/kiana".utf8)) })
        try "\(standIn.process.pid)\n".write(toFile: dir.path + "/node.lock", atomically: false, encoding: .utf8)
        let r = try await kiana(["peers", "--data-dir", dir.path])
        #expect(r.status == 1 && r.err.contains("is starting (PID \(standIn.process.pid))"), "\(r.err)")
        standIn.signal(SIGKILL)
        _ = await standIn.wait()
        // A copied directory's node.lock names a node that serves another directory: not this one.
        let other = try ChildProcess("/bin/bash", ["-c", "exec -a /usr/local/bin/kiana perl -e 'sleep 30' serve"])
        defer { other.signal(SIGKILL) }
        #expect(try await eventually(5) { (FileManager.default.contents(atPath: "/proc/\(other.process.pid)/cmdline") ?? Data()).starts(with: Data("/usr/local/bin/kiana".utf8)) })
        try "\(other.process.pid)\n".write(toFile: dir.path + "/node.lock", atomically: true, encoding: .utf8)
        let copied = try await kiana(["peers", "--data-dir", dir.path])
        #expect(copied.status == 1 && copied.err.contains("is not running"), "\(copied.err)")
        let gone = try await kiana(["peers", "--data-dir", dir.path])
        #expect(gone.status == 1 && gone.err.contains("is not running"), "\(gone.err)")
    }

    @Test func proofIsPrintedAndVerified() async throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let d = ["--data-dir", dir.path]
        #expect(try await kiana(["init"] + d).status == 0)
        for i in 0..<5 { #expect(try await kiana(["remember", "fact \(i)"] + d).status == 0) }
        let block = try await kiana(["ledger", "show", "--height", "3"] + d).out
        let entryID = block.split(separator: "\n").last!.trimmingCharacters(in: .whitespaces).split(separator: " ")[0]
        let p = try await kiana(["ledger", "proof", String(entryID.prefix(12))] + d)
        #expect(p.status == 0, "\(p.err)")
        #expect(p.out.contains("leaf 3 of history tree size 6"))
        #expect(p.out.contains("Proof verified"))
        // An item ID, as `kiana list` shows it, proves the item's latest entry (as REST does).
        let items = try #require(try JSONSerialization.jsonObject(with: Data(try await kiana(["list", "--json"] + d).out.utf8)) as? [[String: Any]])
        let fact2 = try #require(items.first { $0["text"] as? String == "fact 2" }?["id"] as? String, "\(items)")
        let byItem = try await kiana(["ledger", "proof", String(fact2.prefix(8))] + d)
        #expect(byItem.status == 0 && byItem.out.contains("Item \(fact2)") && byItem.out.contains("Entry \(entryID)"), "\(byItem.out) \(byItem.err)")
        #expect(byItem.out.contains("Proof verified"))
        // A prefix of several items is said to be ambiguous (as `show` and `forget` say), not
        // "not found": two items whose IDs share their first four hex digits.
        let node = try Node.open(directory: DataDirectory(path: dir.path))
        let twins = try [0x01, 0x02].map { last in try ItemID(bytes: [0xab, 0xcd] + [UInt8](repeating: 0, count: 13) + [UInt8(last)]) }
        _ = try node.store.write(twins.map { .put($0, KnowledgeFields(text: "twin \($0)")) }, identity: node.identity, now: currentMillis())
        let ambiguous = try await kiana(["ledger", "proof", "abcd"] + d)
        #expect(ambiguous.status == 1 && ambiguous.err.contains("ambiguous"), "\(ambiguous.err)")
        // A prefix that starts one item and another entry is not guessed either.
        let lookalike = try ItemID(bytes: try #require(Hex.decode(String(entryID.prefix(32)))))
        _ = try node.store.write([.put(lookalike, KnowledgeFields(text: "an item whose ID starts like an entry's"))], identity: node.identity, now: currentMillis())
        let both = try await kiana(["ledger", "proof", String(entryID.prefix(10))] + d)
        #expect(both.status == 1 && both.err.contains("starts both item"), "\(both.err)")
        let forks = try await kiana(["ledger", "forks"] + d)
        #expect(forks.status == 0)
        #expect(forks.out.contains("Head: height 7") && forks.out.contains("No side branches.") && forks.out.contains("Orphans held: 0"))
    }

    /// Two devices of one network write apart; importing one's export into the other keeps a
    /// side branch or switches chains, and `ledger forks` shows it.
    @Test func divergentImportShowsForks() async throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let a = ["--data-dir", dir.path + "/a"]
        let b = ["--data-dir", dir.path + "/b"]
        #expect(try await kiana(["init"] + a).status == 0)
        #expect(try await kiana(["remember", "shared"] + a).status == 0)
        // The only authority cannot be dropped, not even with --force: nobody could write, vote
        // or pair again.
        let own = try await kiana(["status"] + a).out.split(separator: "\n").first { $0.hasPrefix("Identity:") }!.split(separator: " ").last!
        let before = try await kiana(["ledger", "show"] + a).out
        for extra in [[], ["--force"]] {
            let last = try await kiana(["vote", "drop", String(own)] + extra + a)
            #expect(last.status == 1 && last.err.contains("only authority"), "\(last.out) \(last.err)")
        }
        #expect(try await kiana(["ledger", "show"] + a).out == before, "a refused drop wrote a block")
        // b joins: it takes a's chain, a votes b's identity key in, b takes the vote.
        #expect(try await kiana(["export", "-o", dir.path + "/a1.json"] + a).status == 0)
        #expect(try await kiana(["import", dir.path + "/a1.json"] + b).status == 0)
        let key = try await kiana(["status"] + b).out.split(separator: "\n").first { $0.hasPrefix("Identity:") }!.split(separator: " ").last!
        // This vote alone would make the key an authority and no pairing proposed it: it needs
        // --force (a mistyped key would be an authority that never votes and cannot be dropped).
        let blocks = try await kiana(["ledger", "show"] + a).out
        let unconfirmed = try await kiana(["vote", "add", String(key)] + a)
        #expect(unconfirmed.status == 1 && unconfirmed.err.contains("--force") && unconfirmed.err.contains("kiana pair"), "\(unconfirmed.err)")
        #expect(try await kiana(["ledger", "show"] + a).out == blocks, "a refused vote wrote a block")
        let vote = try await kiana(["vote", "add", String(key), "--force"] + a)
        #expect(vote.out.contains("the vote passed"), "\(vote.out) \(vote.err)")
        #expect(try await kiana(["export", "-o", dir.path + "/a2.json"] + a).status == 0)
        #expect(try await kiana(["import", dir.path + "/a2.json"] + b).status == 0)
        #expect(try await kiana(["vote", "add", "zz"] + a).status == 1)
        #expect(try await kiana(["remember", "only on a"] + a).status == 0)
        #expect(try await kiana(["remember", "only on b, first"] + b).status == 0)
        #expect(try await kiana(["remember", "only on b, second"] + b).status == 0)
        #expect(try await kiana(["export", "-o", dir.path + "/b.json"] + b).status == 0)
        let imp = try await kiana(["import", dir.path + "/b.json"] + a)
        #expect(imp.status == 0, "\(imp.err)")
        #expect(imp.out.contains("switched to the imported chain"), "\(imp.out)")
        #expect(imp.out.contains("1 entry from abandoned blocks or side branches is pending"), "\(imp.out)")
        let forks = try await kiana(["ledger", "forks"] + a)
        #expect(forks.out.contains("Side branch: tip 3"), "\(forks.out)")
        #expect(try await kiana(["ledger", "verify"] + a).status == 0)
        // The next write re-includes the abandoned entry: nothing was lost.
        #expect(try await kiana(["remember", "after the merge"] + a).status == 0)
        let list = try await kiana(["list"] + a).out
        for text in ["shared", "only on a", "only on b, first", "only on b, second", "after the merge"] {
            #expect(list.contains(text), "\(text) missing")
        }
        #expect(try await kiana(["ledger", "verify"] + a).status == 0)
        // The other way: b's export lands on a side branch of a's longer chain; its writes are
        // taken into a's pending pool and sealed by a's next write, once (importing it again adds nothing).
        #expect(try await kiana(["remember", "only on b, after"] + b).status == 0)
        // a's chain is the longer one (equal lengths would go by block hash).
        #expect(try await kiana(["remember", "on a, to be longer"] + a).status == 0)
        #expect(try await kiana(["export", "-o", dir.path + "/b2.json"] + b).status == 0)
        let side = try await kiana(["import", dir.path + "/b2.json"] + a)
        #expect(side.status == 0 && side.out.contains("on side branches") && side.out.contains("from abandoned blocks or side branches"), "\(side.out) \(side.err)")
        #expect(try await kiana(["import", dir.path + "/b2.json"] + a).status == 0)
        #expect(try await kiana(["remember", "after the second merge"] + a).status == 0)
        let merged = try await kiana(["list", "--json"] + a).out
        for text in ["only on b, after", "after the second merge", "only on b, first"] {
            #expect(merged.components(separatedBy: "\"\(text)\"").count == 2, "\(text) not there once: \(merged)")
        }
        let status = try await kiana(["status", "--json"] + a).out
        #expect(((try? JSONSerialization.jsonObject(with: Data(status.utf8))) as? [String: Any])?["pending"] as? Int == 0, "\(status)")
        #expect(try await kiana(["ledger", "verify"] + a).status == 0)
    }

    @Test func exportImportRoundTripAndTamperedExportIsRejected() async throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let a = ["--data-dir", dir.path + "/a"]
        let b = ["--data-dir", dir.path + "/b"]
        #expect(try await kiana(["init"] + a).status == 0)
        for i in 0..<3 { #expect(try await kiana(["remember", "fact \(i)", "--tag", "t"] + a).status == 0) }
        let file = dir.path + "/export.json"
        #expect(try await kiana(["export", "-o", file] + a).status == 0)
        let imp = try await kiana(["import", file] + b)
        #expect(imp.status == 0, "\(imp.err)")
        #expect(imp.out.contains("Imported 3 blocks"), "\(imp.out)")
        #expect(try await kiana(["list"] + b).out == (try await kiana(["list"] + a).out))
        #expect(try await kiana(["ledger", "verify"] + b).status == 0)
        // Change one character of one block's canonical bytes.
        var json = try String(contentsOfFile: file, encoding: .utf8)
        let marker = "\"cbor\" : \""
        let cbor = json.range(of: marker, range: json.index(json.startIndex, offsetBy: json.count / 2)..<json.endIndex)!
        let at = json.index(cbor.upperBound, offsetBy: 40)
        json.replaceSubrange(at...at, with: json[at] == "A" ? "B" : "A")
        let bad = dir.path + "/bad.json"
        try json.write(toFile: bad, atomically: true, encoding: .utf8)
        let r = try await kiana(["import", bad, "--data-dir", dir.path + "/c"])
        #expect(r.status == 1)
        #expect(r.err.contains("does not verify") && r.err.contains("block"), "\(r.err)")
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/c/kiana.sqlite"))
    }
}
