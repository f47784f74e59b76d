import ArgumentParser
import Foundation
import KianaCore
import KianaNode

func short(_ hex: String) -> String { String(hex.prefix(16)) }
func short(_ bytes: [UInt8]) -> String { String(Hex.encode(bytes).prefix(16)) }

struct Ledger: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Inspect and verify the ledger.",
        subcommands: [LedgerShow.self, LedgerVerify.self, LedgerProof.self, LedgerForks.self])
}

struct LedgerShow: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "List blocks, or show one block with its entries.")
    @OptionGroup var data: DataOptions
    @OptionGroup var output: OutputOptions
    @Option(help: "Show this block in full.") var height: UInt64?
    @Option(help: "How many recent blocks to list.") var limit: Int = 50

    func run() throws {
        try perform {
            guard (1...100_000).contains(limit) else { throw KianaNodeError(.invalidInput, "--limit must be 1…100000") }
            let node = try Node.open(directory: data.directory, forReading: true)
            if let height {
                try output.emit(try node.block(height: height)) { b in
                    say("Block \(b.height)")
                    say("  hash:    \(b.hash)")
                    say("  parent:  \(b.parent)")
                    say("  time:    \(date(b.time))")
                    say("  signer:  \(b.signerDevice)")
                    say("  root:    \(b.entryRoot)")
                    if let a = b.authorities {
                        say("  authorities: \(a.map { DeviceID(publicKey: Hex.decode($0) ?? []).description }.joined(separator: ", "))")
                    }
                    if let n = b.name { say("  name:    \(n)") }
                    say("  entries: \(b.entryCount)")
                    for e in b.entries ?? [] {
                        say("    \(e.id)  \(e.kind)  author \(e.authorDevice) seq \(e.sequence)  hlc \(e.hlc)")
                    }
                }
            } else {
                try output.emit(try node.recentBlocks(limit: limit)) { blocks in
                    for b in blocks {
                        say("\(b.height)  \(short(b.hash))  \(date(b.time))  \(b.signerDevice)  \(b.entryCount) \(b.entryCount == 1 ? "entry" : "entries")")
                    }
                }
            }
        }
    }
}

struct LedgerForks: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "forks", abstract: "Show side branches, held orphans and equivocations.")
    @OptionGroup var data: DataOptions
    @OptionGroup var output: OutputOptions

    func run() throws {
        try perform {
            let node = try Node.open(directory: data.directory, forReading: true)
            try output.emit(try node.forks()) { f in
                say("Head: height \(f.head?.height ?? 0) \(f.head.map { short($0.hash) } ?? "-")")
                if f.sideBranches.isEmpty { say("No side branches.") }
                for b in f.sideBranches {
                    say("Side branch: tip \(b.tipHeight) \(short(b.tipHash)), forked after block \(b.forkHeight) (\(b.tipHeight - b.forkHeight) blocks)")
                }
                say("Orphans held: \(f.orphans) (max \(f.maxOrphans))")
                for g in f.gaps {
                    say("Gap: \(g.device) sequence numbers \(g.missing.map(String.init).joined(separator: ", ")) are not on this chain yet")
                }
                for e in f.equivocations {
                    say(
                        "Equivocation: \(e.device) used sequence \(e.sequence) for \(e.entries.count) different entries: \(e.entries.map { short($0) }.joined(separator: ", "))"
                    )
                }
            }
        }
    }
}

struct LedgerVerify: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check the database file, then re-validate every block, entry, signature and the knowledge state.")
    @OptionGroup var data: DataOptions
    @OptionGroup var output: OutputOptions

    func run() throws {
        try perform {
            let node = try Node.open(directory: data.directory, forReading: true)
            let s = try node.verify()
            try output.emit(VerifyView(s)) { v in
                say("Ledger OK: \(v.blocks) blocks, \(v.entries) entries, head \(v.height) \(v.head)")
                say("History root: \(v.historyRoot)")
            }
            // The search index is derived from the items: damage there is not the ledger's, but
            // search would silently miss items, so it fails the check and says how to repair it.
            // The check takes the write lock: not while a node serves this directory.
            let directory = try data.directory
            if (try? NodeControl.connect(directory)) != nil || directory.startingNodePID != nil {
                Output.note("The full-text index was not checked: it is checked when no node serves this directory.")
            } else if let problem = try node.fullTextProblem() {
                throw KianaNodeError(
                    .corrupt, "the full-text search index is damaged (\(problem)): `kiana index rebuild` rebuilds it from the knowledge items")
            }
        }
    }
}

struct LedgerProof: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "proof", abstract: "Print and verify an inclusion proof for a knowledge item's latest entry or a ledger entry.")
    @OptionGroup var data: DataOptions
    @Argument(help: "Item ID (as `kiana list` shows it) or entry ID, or a unique prefix of either.") var id: String

    func run() throws {
        try perform {
            let node = try Node.open(directory: data.directory, forReading: true)
            let (p, item) = try node.proof(itemOrEntry: id)
            if let item { say("Item \(item): its latest entry") }
            say("Entry \(p.entry.idHex)")
            say("  in block \(p.height) at position \(p.position) of \(p.blockEntryCount)")
            say("  entry root: \(Hex.encode(p.entryRoot))")
            say("  audit path (\(p.entryPath.count)):")
            for h in p.entryPath { say("    \(Hex.encode(h))") }
            say("Block \(Hex.encode(p.blockHash))")
            say("  leaf \(p.height) of history tree size \(p.treeSize), root \(Hex.encode(p.historyRoot))")
            say("  audit path (\(p.historyPath.count)):")
            for h in p.historyPath { say("    \(Hex.encode(h))") }
            try p.verify()
            say("Proof verified (RFC 6962).")
        }
    }
}

struct VoteCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vote",
        abstract: "Vote to add or drop an authority (more than half of the authorities must agree).",
        discussion: """
            DEVICE is the device's identity key in hex, as `kiana status` prints it on that device, or its
            device ID: for a drop, of an authority (`kiana status` lists them); for an add, of a device
            another authority proposed by pairing. Devices normally join by pairing (`kiana pair`), which
            casts the pairing authority's vote; with several authorities the others add theirs here.
            With two authorities a drop needs both: a lost device of two cannot be dropped (docs/operations.md).
            """)
    enum Action: String, ExpressibleByArgument { case add, drop }
    @OptionGroup var data: DataOptions
    @Argument(help: "add or drop") var action: Action
    @Argument(help: "The device's identity key (64 hex characters) or device ID.") var device: String
    @Flag(help: "Add a key no pairing proposed, although this vote alone makes it an authority; or drop this device itself.") var force = false

    func run() throws {
        try perform {
            let node = try Node.open(directory: data.directory)
            let r = try node.vote(add: action == .add, target: device, force: force)
            NodeControl.tellLedgerChanged(node.directory)
            if r.withdrew {
                say("Took back this device's vote on \(r.device) (block \(r.block)); \(r.votes) other vote(s) stay pending.")
                return
            }
            let state = r.passed ? "the vote passed" : "waiting for more votes (\(r.votes) of the \(r.needed) needed)"
            say("Voted to \(action.rawValue) \(r.device) (block \(r.block)); \(state)")
        }
    }
}

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Export the ledger as JSON (verifiable on import).")
    @OptionGroup var data: DataOptions
    @Option(name: .shortAndLong, help: "Write to this file instead of standard output.") var output: String?

    func run() throws {
        try perform {
            let node = try Node.open(directory: data.directory, forReading: true)
            let json = try node.exportLedger()
            if let output {
                // Written through a symlink, a pipe or a device; a regular file is replaced whole.
                try OutputFile(output).finish(bytes: json)
                Output.note("Exported \(try node.counts().blocks) blocks to \(output)")
            } else {
                Output.emit(1, json)
                say("")
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
                guard !file.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else { throw KianaNodeError(.invalidInput, "an empty file name: give the export file (- for standard input)") }
                guard let d = FileManager.default.contents(atPath: file) else {
                    throw KianaNodeError(.io, "cannot read \(file)")
                }
                json = d
            }
            let (node, outcomes) = try Node.importLedger(json, into: data.directory)
            let added = outcomes.filter { $0 != .duplicate }.count
            let side = outcomes.filter { $0 == .sideBranch }.count
            let reorg = outcomes.contains(.newHead(reorganized: true))
            say(
                "Imported \(added) \(added == 1 ? "block" : "blocks")\(side > 0 ? " (\(side) on side branches)" : "")\(reorg ? ", switched to the imported chain" : ""); head is now \(try node.head()?.height ?? 0)"
            )
            let pending = try node.counts().pending
            let stuck = try node.store.stuckReport(identity: node.identity.publicKey).stuck.reduce(0) { $0 + $1.writes + $1.votes }
            if pending > stuck {
                say("\(pending - stuck) \(pending - stuck == 1 ? "entry" : "entries") from abandoned blocks or side branches \(pending - stuck == 1 ? "is" : "are") pending and will be sealed with the next write (or by `kiana serve`).")
            }
            if stuck > 0 { say("\(stuck) entries reuse sequence numbers of their authors and cannot be sealed as they are (`kiana status` says which).") }
            if !(try node.isAuthority) {
                say("Note: this device (\(node.identity.deviceID)) is not an authority of the imported network; it can read but not write.")
            }
        }
    }
}
