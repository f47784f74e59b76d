import ArgumentParser
import Foundation
import KianaAI
import KianaBench
import KianaCore
import KianaNet
import KianaNode
import KianaServer
import KianaStore
import Logging
#if canImport(Glibc)
import Glibc
#endif

@main
struct Kiana: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kiana",
        abstract: "KI_ana: a private, local-first AI assistant with a signed, replicated memory.",
        subcommands: [Init.self, Serve.self, Status.self, Token.self, Remember.self, Forget.self, List.self, Show.self,
                      Ingest.self, Search.self, Embed.self, IndexCommand.self, Tokenize.self, Generate.self, Models.self, Ask.self, Chat.self, Conversations.self,
                      Ledger.self, VoteCommand.self, Peers.self, Pair.self, Join.self, Discover.self,
                      Export.self, Import.self, Bench.self])

    /// Files the node creates (database, exports, keys) are private to the user.
    static func main() async {
        umask(0o077)
        await main(nil)
    }
}

struct DataOptions: ParsableArguments {
    @Option(name: .long, help: "Data directory (default: $KIANA_DATA_DIR or ~/.kiana).")
    var dataDir: String?

    var directory: DataDirectory { DataDirectory.resolve(dataDir) }
}

/// Runs a command body; any error becomes one line on stderr and exit code 1.
func perform(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let e as ExitCode {
        throw e
    } catch {
        FileHandle.standardError.write(Data(("kiana: " + errorLine(for: error) + "\n").utf8))
        throw ExitCode(1)
    }
}

func errorLine(for error: any Error) -> String { ErrorLine.text(for: error) }

func date(_ ms: UInt64) -> String {
    let f = ISO8601DateFormatter()
    return f.string(from: Date(timeIntervalSince1970: Double(ms) / 1000))
}

func short(_ bytes: [UInt8]) -> String { String(Hex.encode(bytes).prefix(16)) }

struct Init: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create this device's keys and a new network with it as the only authority.")
    @OptionGroup var data: DataOptions
    @Option(help: "A name for the network.") var name: String?

    func run() throws {
        try perform {
            let node = try Node.initialize(directory: data.directory, name: name)
            let net = try node.store.network() ?? []
            print("Initialized a new KI_ana network in \(node.directory.path)")
            print("Device ID:  \(node.identity.deviceID)")
            print("Network ID: \(Hex.encode(net))")
        }
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the node (web UI on http://127.0.0.1:8000) until Ctrl-C.")
    @OptionGroup var data: DataOptions
    @Option(help: "Address to listen on (default $KIANA_HOST or 127.0.0.1).") var host: String?
    @Option(help: "Port to listen on, 0 for any free port (default $KIANA_PORT or 8000).") var port: Int?
    @Option(help: "Bearer token required of clients (default $KIANA_TOKEN); needed off loopback.") var token: String?
    @Option(name: .customLong("p2p-host"), help: "Address the device link listener binds (default $KIANA_P2P_HOST or 0.0.0.0).") var p2pHost: String?
    @Option(name: .customLong("p2p-port"), help: "Port for device links, 0 for any free port (default $KIANA_P2P_PORT or 8470).") var p2pPort: Int?
    @Option(help: "Multicast DNS discovery: on or off (default $KIANA_DISCOVERY or on).") var discovery: String?
    @Option(name: .customLong("discovery-interface"), help: "Limit discovery to this network interface.") var discoveryInterface: String?
    @Option(help: "A name for this device, shown to peers.") var name: String?
    @OptionGroup var model: ModelOptions

    func run() async throws {
        let env = ProcessInfo.processInfo.environment
        var http = HTTPConfig(host: host ?? env["KIANA_HOST"] ?? "127.0.0.1",
                              port: port ?? env["KIANA_PORT"].flatMap(Int.init) ?? 8000,
                              token: token ?? env["KIANA_TOKEN"].flatMap { $0.isEmpty ? nil : $0 })
        if !http.isLoopback && http.token == nil {
            // Off loopback the node's own API token (made by init, shown by `kiana token`) is required.
            do { http.token = try data.directory.apiToken() } catch {
                FileHandle.standardError.write(Data(("kiana: " + errorLine(for: error) + "\n").utf8))
                throw ExitCode(1)
            }
            FileHandle.standardError.write(Data("kiana: listening on \(http.host): clients need `Authorization: Bearer <token>`; `kiana token` prints it\n".utf8))
        }
        var net = NetworkConfig()
        net.host = p2pHost ?? env["KIANA_P2P_HOST"] ?? "0.0.0.0"
        net.port = p2pPort ?? env["KIANA_P2P_PORT"].flatMap(Int.init) ?? 8470
        net.discoveryInterface = discoveryInterface ?? env["KIANA_DISCOVERY_INTERFACE"]
        net.name = name
        let discoveryText = (discovery ?? env["KIANA_DISCOVERY"] ?? "on").lowercased()
        guard (0...65535).contains(http.port), (0...65535).contains(net.port) else {
            FileHandle.standardError.write(Data("kiana: ports must be between 0 and 65535\n".utf8))
            throw ExitCode(1)
        }
        guard ["on", "off"].contains(discoveryText) else {
            FileHandle.standardError.write(Data("kiana: --discovery must be on or off\n".utf8))
            throw ExitCode(1)
        }
        net.discovery = discoveryText == "on"
        var logger = Logger(label: "kiana")
        logger.logLevel = env["KIANA_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .notice
        do {
            let host = http.host
            try await NodeServer.run(directory: data.directory, http: http, network: net, modelDirectory: model.directory(data), logger: logger) { node, port, p2p in
                FileHandle.standardOutput.write(Data("KI_ana node \(node.identity.deviceID) serving http://\(host):\(port), device links on port \(p2p) (Ctrl-C stops)\n".utf8))
            }
        } catch {
            FileHandle.standardError.write(Data(("kiana: " + errorLine(for: error) + "\n").utf8))
            throw ExitCode(1)
        }
    }
}

struct Token: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the API token that clients off loopback send as `Authorization: Bearer <token>`.")
    @OptionGroup var data: DataOptions

    func run() throws {
        try perform {
            guard data.directory.hasIdentity else { throw KianaNodeError(.notInitialized, "\(data.directory.path) is not initialized; run `kiana init`") }
            say(try data.directory.apiToken())
        }
    }
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show device ID, network ID, ledger head and counts.")
    @OptionGroup var data: DataOptions

    func run() throws {
        try perform {
            let node = try Node.open(directory: data.directory)
            let head = try node.store.head()
            let c = try node.store.counts()
            print("Device ID:   \(node.identity.deviceID)")
            print("Identity:    \(Hex.encode(node.identity.publicKey))")
            print("Network ID:  \(Hex.encode(try node.store.network() ?? []))")
            if let head { print("Head:        height \(head.height), hash \(Hex.encode(head.hash))") }
            print("Blocks:      \(c.blocks)")
            print("Entries:     \(c.entries)")
            print("Knowledge:   \(c.items) items (\(c.deletedItems) forgotten)")
            print("Pending:     \(c.pending)")
            let m = try node.store.membership()
            print("Authorities: \(m.authorities.map { DeviceID(publicKey: $0).description }.sorted().joined(separator: ", "))")
            if m.votes.isEmpty {
                print("Votes:       none pending")
            } else {
                for v in m.votes {
                    print("Vote:        \(v.vote.authorize ? "add" : "drop") \(DeviceID(publicKey: v.vote.target)) (by \(DeviceID(publicKey: v.signer)))")
                }
            }
            print("Data dir:    \(node.directory.path)")
        }
    }
}

struct Remember: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Add a knowledge item (signed and sealed into a block).")
    @OptionGroup var data: DataOptions
    @Argument(help: "The text to remember.") var text: String
    @Option(help: "A title.") var title: String?
    @Option(name: .customLong("tag"), help: "A tag (repeatable).") var tags: [String] = []
    @Option(help: "Where it came from.") var source: String?

    func run() throws {
        try perform {
            let node = try Node.open(directory: data.directory)
            let (id, receipt) = try node.remember(text: text, title: title, tags: tags, source: source)
            print("Remembered \(id) (entry \(short(receipt.entries[0].id)), block \(receipt.block.height))")
        }
    }
}

struct Forget: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Forget a knowledge item (a signed tombstone).")
    @OptionGroup var data: DataOptions
    @Argument(help: "Item ID or a unique prefix of it (4+ hex characters).") var id: String

    func run() throws {
        try perform {
            let node = try Node.open(directory: data.directory)
            let (item, receipt) = try node.forget(idPrefix: id)
            print("Forgot \(item.id) (entry \(short(receipt.entries[0].id)), block \(receipt.block.height))")
        }
    }
}

struct List: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List knowledge items, newest first.")
    @OptionGroup var data: DataOptions
    @Flag(help: "Include forgotten items.") var all = false

    func run() throws {
        try perform {
            let node = try Node.open(directory: data.directory)
            let items = try node.store.items(includeDeleted: all)
            if items.isEmpty { print("No knowledge yet. Add some with: kiana remember \"…\"") }
            for i in items {
                let label = i.title ?? String((i.text ?? "").split(separator: "\n").first ?? "").prefix(60) + ((i.text ?? "").count > 60 ? "…" : "")
                let tags = i.tags.isEmpty ? "" : "  [" + i.tags.joined(separator: ", ") + "]"
                print("\(i.id)  \(i.updated.map { date($0.wall) } ?? "-")  \(i.deleted ? "(forgotten) " : "")\(label)\(tags)")
            }
        }
    }
}

struct Show: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show one knowledge item.")
    @OptionGroup var data: DataOptions
    @Argument(help: "Item ID or a unique prefix of it.") var id: String

    func run() throws {
        try perform {
            let node = try Node.open(directory: data.directory)
            let i = try node.store.item(idPrefix: id)
            print("ID:       \(i.id)")
            if let t = i.title { print("Title:    \(t)") }
            if !i.tags.isEmpty { print("Tags:     \(i.tags.joined(separator: ", "))") }
            if let s = i.source { print("Source:   \(s)") }
            if let c = i.created { print("Created:  \(date(c.wall))") }
            if let u = i.updated { print("Updated:  \(date(u.wall))") }
            if i.deleted { print("Status:   forgotten") }
            print("")
            print(i.text ?? "")
        }
    }
}

struct Ledger: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Inspect and verify the ledger.",
                                                    subcommands: [LedgerShow.self, LedgerVerify.self, LedgerProof.self, LedgerForks.self])
}

struct LedgerShow: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "List blocks, or show one block with its entries.")
    @OptionGroup var data: DataOptions
    @Option(help: "Show this block in full.") var height: UInt64?
    @Option(help: "How many recent blocks to list.") var limit: Int = 50

    func run() throws {
        try perform {
            let node = try Node.open(directory: data.directory)
            if let height {
                guard let b = try node.store.blocks(from: height, through: height).first else {
                    throw KianaNodeError(.invalidInput, "no block at height \(height) (head is \(try node.store.head()?.height ?? 0))")
                }
                print("Block \(b.height)")
                print("  hash:    \(b.hashHex)")
                print("  parent:  \(Hex.encode(b.header.parent))")
                print("  time:    \(date(b.header.time))")
                print("  signer:  \(DeviceID(publicKey: b.header.signer))")
                print("  root:    \(Hex.encode(b.header.entryRoot))")
                if let a = b.header.authorities { print("  authorities: \(a.map { DeviceID(publicKey: $0).description }.joined(separator: ", "))") }
                if let n = b.header.name { print("  name:    \(n)") }
                print("  entries: \(b.entries.count)")
                for e in b.entries {
                    print("    \(e.idHex)  \(e.kind)  author \(e.authorID) seq \(e.sequence)  hlc \(e.hlc)")
                }
            } else {
                guard let head = try node.store.head() else { return }
                let from = head.height >= UInt64(max(limit, 1)) ? head.height - UInt64(max(limit, 1)) + 1 : 0
                for b in try node.store.blocks(from: from, through: head.height) {
                    print("\(b.height)  \(short(b.hash))  \(date(b.header.time))  \(DeviceID(publicKey: b.header.signer))  \(b.entries.count) \(b.entries.count == 1 ? "entry" : "entries")")
                }
            }
        }
    }
}

struct LedgerForks: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "forks", abstract: "Show side branches, held orphans and equivocations.")
    @OptionGroup var data: DataOptions

    func run() throws {
        try perform {
            let node = try Node.open(directory: data.directory)
            let head = try node.store.head()
            print("Head: height \(head?.height ?? 0) \(head.map { short($0.hash) } ?? "-")")
            let branches = try node.store.sideBranches()
            if branches.isEmpty { print("No side branches.") }
            for b in branches {
                print("Side branch: tip \(b.tipHeight) \(short(b.tipHash)), forked after block \(b.forkHeight) (\(b.tipHeight - b.forkHeight) blocks)")
            }
            print("Orphans held: \(try node.store.orphanCount()) (max \(LedgerStore.maxOrphans))")
            for g in try node.store.sequenceGaps() {
                print("Gap: \(DeviceID(publicKey: g.author)) sequence numbers \(g.missing.map(String.init).joined(separator: ", ")) are not on this chain yet")
            }
            for e in try node.store.equivocations() {
                print("Equivocation: \(DeviceID(publicKey: e.author)) used sequence \(e.sequence) for \(e.entryIDs.count) different entries: \(e.entryIDs.map(short).joined(separator: ", "))")
            }
        }
    }
}

struct LedgerVerify: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "verify", abstract: "Re-validate every block, entry, signature and the knowledge state.")
    @OptionGroup var data: DataOptions

    func run() throws {
        try perform {
            let node = try Node.open(directory: data.directory)
            let s = try node.verify()
            print("Ledger OK: \(s.blockHashes.count) blocks, \(s.entryCount) entries, head \(s.height) \(Hex.encode(s.tipHash))")
            print("History root: \(Hex.encode(s.historyRoot))")
        }
    }
}

struct LedgerProof: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "proof", abstract: "Print and verify an inclusion proof for an entry.")
    @OptionGroup var data: DataOptions
    @Argument(help: "Entry ID or a unique prefix of it.") var entryID: String

    func run() throws {
        try perform {
            let node = try Node.open(directory: data.directory)
            let p = try node.proof(entryIDPrefix: entryID)
            print("Entry \(p.entry.idHex)")
            print("  in block \(p.height) at position \(p.position) of \(p.blockEntryCount)")
            print("  entry root: \(Hex.encode(p.entryRoot))")
            print("  audit path (\(p.entryPath.count)):")
            for h in p.entryPath { print("    \(Hex.encode(h))") }
            print("Block \(Hex.encode(p.blockHash))")
            print("  leaf \(p.height) of history tree size \(p.treeSize), root \(Hex.encode(p.historyRoot))")
            print("  audit path (\(p.historyPath.count)):")
            for h in p.historyPath { print("    \(Hex.encode(h))") }
            try p.verify()
            print("Proof verified (RFC 6962).")
        }
    }
}

struct VoteCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vote",
        abstract: "Vote to add or drop an authority (more than half of the authorities must agree).",
        discussion: "KEY is the device's identity key in hex, as `kiana status` prints it on that device.")
    enum Action: String, ExpressibleByArgument { case add, drop }
    @OptionGroup var data: DataOptions
    @Argument(help: "add or drop") var action: Action
    @Argument(help: "The device's identity key (64 hex characters).") var key: String

    func run() throws {
        try perform {
            guard let target = Hex.decode(key), target.count == 32 else {
                throw KianaNodeError(.invalidInput, "the key must be 64 hex characters (see `kiana status` on that device)")
            }
            let node = try Node.open(directory: data.directory)
            let r = try node.store.write(vote: Vote(target: target, authorize: action == .add), identity: node.identity, now: currentMillis())
            let m = try node.store.membership()
            let passed = m.authorities.contains(target) == (action == .add)
            print("Voted to \(action.rawValue) \(DeviceID(publicKey: target)) (block \(r.block.height)); \(passed ? "the vote passed" : "waiting for more votes")")
        }
    }
}

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Export the ledger as JSON (verifiable on import).")
    @OptionGroup var data: DataOptions
    @Option(name: .shortAndLong, help: "Write to this file instead of standard output.") var output: String?

    func run() throws {
        try perform {
            let node = try Node.open(directory: data.directory)
            let json = try node.exportLedger()
            if let output {
                do { try json.write(to: URL(fileURLWithPath: output), options: .atomic) } catch {
                    throw KianaNodeError(.io, "cannot write \(output): \(error.localizedDescription)")
                }
                FileHandle.standardError.write(Data("Exported \(try node.store.counts().blocks) blocks to \(output)\n".utf8))
            } else {
                FileHandle.standardOutput.write(json)
                print("")
            }
        }
    }
}

struct Import: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Verify a JSON export and add its blocks to this node.")
    @OptionGroup var data: DataOptions
    @Argument(help: "The export file (- for standard input).") var file: String

    func run() throws {
        try perform {
            let json: Data
            if file == "-" {
                json = FileHandle.standardInput.readDataToEndOfFile()
            } else {
                guard let d = FileManager.default.contents(atPath: file) else {
                    throw KianaNodeError(.io, "cannot read \(file)")
                }
                json = d
            }
            let (node, outcomes) = try Node.importLedger(json, into: data.directory)
            let added = outcomes.filter { $0 != .duplicate }.count
            let side = outcomes.filter { $0 == .sideBranch }.count
            let reorg = outcomes.contains(.newHead(reorganized: true))
            print("Imported \(added) blocks\(side > 0 ? " (\(side) on side branches)" : "")\(reorg ? ", switched to the imported chain" : ""); head is now \(try node.store.head()?.height ?? 0)")
            let pending = try node.store.counts().pending
            if pending > 0 { print("\(pending) entries from abandoned blocks are pending and will be sealed with the next write.") }
            if !(try node.store.authorities().contains(node.identity.publicKey)) {
                print("Note: this device (\(node.identity.deviceID)) is not an authority of the imported network; it can read but not write.")
            }
        }
    }
}

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Benchmarks, each beside its reference primitive.", subcommands: [BenchLedger.self, BenchNet.self, BenchEmbed.self, BenchVector.self, BenchRetrieval.self, BenchLLM.self, BenchHTTP.self])
}

struct BenchNet: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "net", abstract: "Link handshakes per second and encrypted throughput over loopback.")
    @Option(help: "Handshakes per measurement.") var handshakes: Int = 300
    @Option(help: "Megabytes streamed through one link per measurement.") var megabytes: Int = 256
    @Option(help: "Bytes per link message (at most 4 MiB).") var messageSize: Int = 65536
    @Option(help: "Repeats (the best is reported).") var repeats: Int = 3

    func run() async throws {
        try await performAsync {
            guard handshakes > 0, megabytes > 0, repeats > 0, (1...(4 << 20) - 64).contains(messageSize) else {
                throw KianaNodeError(.invalidInput, "handshakes, megabytes and repeats must be positive; message size 1…\((4 << 20) - 64)")
            }
            say("kiana bench net: loopback TCP, \(ProcessInfo.processInfo.activeProcessorCount) cores, best of \(repeats)")
            let bench = NetBench(handshakes: handshakes, megabytes: megabytes, messageSize: messageSize, repeats: repeats)
            let rows = try await bench.run { FileHandle.standardError.write(Data("  … \($0)\n".utf8)) }
            say(NetBench.render(rows))
        }
    }
}

struct BenchLedger: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ledger", abstract: "Merkle roots, block creation and full-chain validation.")
    @Option(help: "Entries in the validated chain.") var entries: Int = 100_000
    @Option(help: "Entries per block.") var perBlock: Int = 100
    @Option(help: "Leaves for the Merkle root measurement.") var leaves: Int = 100_000
    @Option(help: "Repeats (best time is reported).") var repeats: Int = 3
    @Flag(help: "Skip the SQLite verification measurement.") var noStore = false

    func run() throws {
        try perform {
            guard entries > 0, perBlock > 0, perBlock <= LedgerLimits.maxEntriesPerBlock, leaves > 1, repeats > 0 else {
                throw KianaNodeError(.invalidInput, "entries, leaves and repeats must be positive; per-block 1…\(LedgerLimits.maxEntriesPerBlock)")
            }
            let bench = LedgerBench(entries: entries, entriesPerBlock: perBlock, leaves: leaves, repeats: repeats, withStore: !noStore)
            print("kiana bench ledger: \(entries) entries in blocks of \(perBlock), \(ProcessInfo.processInfo.activeProcessorCount) cores, best of \(repeats)")
            let rows = try bench.run { FileHandle.standardError.write(Data("  … \($0)\n".utf8)) }
            print(LedgerBench.render(rows))
        }
    }
}
