import ArgumentParser
import Foundation
import Synchronization
#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif
import KianaCore
import KianaNode
#if canImport(Glibc)
    import Glibc
#endif

struct ModelOptions: ParsableArguments {
    @Option(help: "Model directory (default: $KIANA_MODEL_DIR, config.json's models.dir, <data dir>/models, or else ~/.kiana/models, where `make setup` puts them).")
    var modelDir: String?

    func directory(_ data: DataOptions) throws -> String { try LocalModels.directory(modelDir, dataDirectory: try data.directory) }
}

/// A progress bar on stderr: redrawn in place on a terminal, otherwise one line at most every
/// two seconds (and the last one), so logs stay readable.
final class ProgressBar: Sendable {
    struct State {
        var lastLine = Date.distantPast
        var lastPhase = ""
        var open = false
    }
    private let tty = isatty(2) == 1
    private let state = Mutex(State())

    func update(_ phase: String, _ done: Int, _ total: Int, _ unit: Unit) {
        let tty = self.tty
        state.withLock { s in
            let finished = done >= total
            if phase != s.lastPhase {
                if s.open && tty { Output.write(2, "\n") }
                s.open = false
                s.lastPhase = phase
            }
            guard tty || finished || Date().timeIntervalSince(s.lastLine) >= 2 else { return }
            s.lastLine = Date()
            let fraction = total > 0 ? min(1, Double(done) / Double(total)) : 1
            let width = 30
            let filled = Int(fraction * Double(width))
            let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
            let line = String(
                format: "%@ [%@] %3d%% %@", phase.padding(toLength: 9, withPad: " ", startingAt: 0), bar, Int(fraction * 100), unit.render(done, total))
            Output.write(2, tty ? "\r" + line + (finished ? "\n" : "") : line + "\n")
            s.open = tty && !finished
        }
    }

    enum Unit {
        case bytes, items
        func render(_ done: Int, _ total: Int) -> String {
            switch self {
            case .bytes: return String(format: "%.1f/%.1f MB", Double(done) / 1e6, Double(total) / 1e6)
            case .items: return "\(done)/\(total)"
            }
        }
    }

    var handler: ProgressHandler {
        { [self] phase, done, total, detail in
            // A wait is a line of its own, not a bar.
            if phase == "waiting" { return Output.note("kiana: \(detail)") }
            update(phase, done, total, phase == "reading" ? .bytes : .items)
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
            NodeControl.tellLedgerChanged(node.directory)
            say("Remembered \(id) (entry \(short(receipt.entries[0].id)), block \(receipt.block.height))")
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
            NodeControl.tellLedgerChanged(node.directory)
            say("Forgot \(item.id) (entry \(short(receipt.entries[0].id)), block \(receipt.block.height))")
        }
    }
}

struct List: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List knowledge items, newest first.")
    @OptionGroup var data: DataOptions
    @OptionGroup var output: OutputOptions
    @Flag(help: "Include forgotten items.") var all = false

    func run() throws {
        try perform {
            let node = try Node.open(directory: data.directory, forReading: true)
            try output.emit(try node.items(includeDeleted: all)) { items in
                if items.isEmpty { say("No knowledge yet. Add some with: kiana remember \"…\"") }
                for i in items {
                    let first = String(i.text.split(separator: "\n").first ?? "")
                    let label = i.title.flatMap { $0.isEmpty ? nil : $0 } ?? (first.count > 60 ? first.prefix(60) + "…" : first)
                    let tags = i.tags.isEmpty ? "" : "  [" + i.tags.joined(separator: ", ") + "]"
                    // One line per item: newlines and tabs inside fields are shown as escapes.
                    say(Terminal.escape("\(i.id)  \(i.updated.map(date) ?? "-")  \(i.deleted ? "(forgotten) " : "")\(label)\(tags)"))
                }
            }
        }
    }
}

struct Show: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show one knowledge item.")
    @OptionGroup var data: DataOptions
    @OptionGroup var output: OutputOptions
    @Argument(help: "Item ID or a unique prefix of it.") var id: String

    func run() throws {
        try perform {
            let node = try Node.open(directory: data.directory, forReading: true)
            try output.emit(try node.item(idPrefix: id)) { i in
                say("ID:       \(i.id)")
                if let t = i.title, !t.isEmpty { say(Terminal.escape("Title:    \(t)")) }
                if !i.tags.isEmpty { say(Terminal.escape("Tags:     \(i.tags.joined(separator: ", "))")) }
                if let s = i.source { say(Terminal.escape("Source:   \(s)")) }
                if let c = i.created { say("Created:  \(date(c))") }
                if let u = i.updated { say("Updated:  \(date(u))") }
                if i.deleted { say("Status:   forgotten") }
                say("")
                say(i.text)
            }
        }
    }
}

struct Ingest: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Add files and folders (.md, .txt, .html, .pdf) to the knowledge base, kept in sync.",
        discussion: """
            Each file is split into chunks (sections and paragraphs, with overlap); each chunk is a
            knowledge item whose source is "<path>#<position>". Running it again changes only what
            changed: edited files have their chunks replaced, deleted files are forgotten. Chunks are
            embedded right away unless --no-embed (then the running node or the next search does it).
            """)
    @OptionGroup var data: DataOptions
    @OptionGroup var model: ModelOptions
    @Argument(help: "Files or folders.") var paths: [String]
    @Option(name: .customLong("tag"), help: "A tag for every new chunk (repeatable).") var tags: [String] = []
    @Flag(help: "Keep watching the paths and sync every change until interrupted.") var watch = false
    @Option(help: "Seconds between checks with --watch.") var interval: Double = 2
    @Flag(help: "Store the chunks without embedding them now.") var noEmbed = false

    func run() throws {
        try perform {
            guard interval >= 0.1, interval <= 3600 else { throw KianaNodeError(.invalidInput, "--interval must be 0.1…3600 seconds") }
            let node = try Node.open(directory: data.directory)
            let embedder = noEmbed ? nil : try Node.loadEmbedder(modelDirectory: model.directory(data))
            let bar = ProgressBar()
            func once() throws -> IngestReport {
                let r = try node.ingest(paths: paths, tags: tags, progress: bar.handler)
                if r.changed { NodeControl.tellLedgerChanged(node.directory) }
                let files =
                    "\(r.filesScanned) \(r.filesScanned == 1 ? "file" : "files"): \(r.filesNew) new, \(r.filesChanged) changed, \(r.filesUnchanged) unchanged, \(r.filesRemoved) removed"
                    + (r.chunksLeftForgotten > 0 ? "; \(r.chunksLeftForgotten) forgotten \(r.chunksLeftForgotten == 1 ? "chunk" : "chunks") left out" : "")
                    + (r.chunksRevived > 0 ? "; \(r.chunksRevived) forgotten \(r.chunksRevived == 1 ? "chunk" : "chunks") back (changed)" : "")
                    + (r.chunksTagged > 0 ? "; tags added to \(r.chunksTagged) unchanged \(r.chunksTagged == 1 ? "chunk" : "chunks")" : "")
                if r.changed {
                    say("Ingested \(files); chunks +\(r.chunksAdded) ~\(r.chunksUpdated) -\(r.chunksRemoved)")
                } else if !r.nothingTaken {
                    say("Nothing changed (\(files))")
                }
                for f in r.filesFailed { Output.note("kiana: skipped " + Terminal.escape(f)) }
                if let embedder {
                    let n = try node.embedPending(embedder, progress: bar.handler)
                    if n > 0 { say("Embedded \(n) chunks") }
                }
                return r
            }
            let first = try once()
            // Every file named failed: the command did not do what was asked (scripts see exit 1).
            if !watch, first.nothingTaken {
                throw KianaNodeError(.ingest, "nothing could be ingested (\(first.filesFailed.count) skipped, above)")
            }
            guard watch else { return }
            say("Watching \(paths.joined(separator: ", ")) every \(interval) s (Ctrl-C to stop)")
            var last = IngestSnapshot.take(paths: paths)
            var failing: String?
            while true {
                Thread.sleep(forTimeInterval: interval)
                let now = IngestSnapshot.take(paths: paths)
                if now != last {
                    // A path gone for a while (a folder renamed, a mount dropped) or a busy
                    // database is said once and watched on: what was ingested stays, and the
                    // next change is taken as it comes.
                    do {
                        _ = try once()
                        if failing != nil { say("Watching again") }
                        failing = nil
                    } catch {
                        let line = ErrorLine.text(for: error)
                        if line != failing { Output.note("kiana: \(line); still watching") }
                        failing = line
                    }
                    last = IngestSnapshot.take(paths: paths)
                }
            }
        }
    }
}

struct Search: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Search the knowledge base (BM25 + vectors, fused with reciprocal rank fusion).")
    @OptionGroup var data: DataOptions
    @OptionGroup var model: ModelOptions
    @OptionGroup var output: OutputOptions
    @Argument(help: "What to look for.") var query: String
    @Option(help: "Number of results.") var k: Int = 10
    @Option(help: "hybrid, vector or keyword.") var mode: String = "hybrid"
    @Option(help: "Only items with this tag.") var tag: String?
    @Option(help: "Only items whose source starts with this (a file or folder path).") var source: String?

    func run() throws {
        try perform {
            // Keyword search only reads; the other modes embed waiting items first where the data
            // directory can be written, and search the vectors there are where it cannot.
            let directory = try data.directory
            let node = try Node.open(directory: directory, forReading: mode == "keyword" || !directory.isWritable)
            let view = try node.search(
                query, k: k, mode: mode, tag: tag, source: source, modelDirectory: model.directory(data),
                progress: ProgressBar().handler)
            if let note = view.note { Output.note("kiana: \(note)") }
            try output.emit(view) { v in
                if v.results.isEmpty {
                    say("No results.")
                    return
                }
                for (n, h) in v.results.enumerated() {
                    var parts: [String] = []
                    if let s = h.bm25, let r = h.keywordRank { parts.append(String(format: "bm25 %.2f (#%d)", s, r)) }
                    if let s = h.cosine, let r = h.vectorRank { parts.append(String(format: "cos %.3f (#%d)", s, r)) }
                    let score = v.mode == "hybrid" ? String(format: "rrf %.4f", h.score) : String(format: "%.4f", h.score)
                    say("\(n + 1). \(score)  \(parts.joined(separator: ", "))  \(h.id)")
                    if let title = h.title, !title.isEmpty { say(Terminal.escape("   \(title)")) }
                    // A snippet is one line: a chunk's line breaks and indentation become spaces.
                    let text = (h.text ?? "").split(whereSeparator: \.isWhitespace).joined(separator: " ")
                    say(Terminal.escape("   " + String(text.prefix(160)) + (text.count > 160 ? "…" : "")))
                    if let src = h.source { say(Terminal.escape("   source: \(src)")) }
                }
            }
        }
    }
}

struct Embed: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the embedding of a text (all-MiniLM-L6-v2, 384 floats).")
    @OptionGroup var data: DataOptions
    @OptionGroup var model: ModelOptions
    @Argument(help: "The text.") var text: String
    @Flag(help: "Print a JSON array.") var json = false
    @Flag(help: "Print the WordPiece token IDs instead.") var tokens = false

    func run() throws {
        try perform {
            let directory = try model.directory(data)
            if tokens {
                say("[" + (try LocalModels.embeddingTokens(text, modelDirectory: directory)).map(String.init).joined(separator: ", ") + "]")
                return
            }
            let e = try LocalModels.embedding(text, modelDirectory: directory)
            let v = e.vector
            if json {
                say("[" + v.map { "\($0)" }.joined(separator: ", ") + "]")
            } else {
                say("\(v.count) dimensions, \(e.tokens) tokens")
                for row in stride(from: 0, to: v.count, by: 8) {
                    say(v[row..<min(row + 8, v.count)].map { String(format: "% .6f", $0) }.joined(separator: " "))
                }
            }
        }
    }
}

struct IndexCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "index", abstract: "Full-text and vector index: status, update, rebuild.",
        subcommands: [IndexStatus.self, IndexUpdate.self, IndexRebuild.self], defaultSubcommand: IndexStatus.self)
}

struct IndexOptions: ParsableArguments {
    @Option(help: "Use an HNSW graph from this many vectors on (below it: exact scan).") var hnswThreshold: Int = IndexSettings.defaultHNSWThreshold
    @Option(help: "HNSW links per node.") var m: Int = 16
    @Option(help: "HNSW beam width while building.") var efConstruction: Int = 100

    var settings: IndexSettings { IndexSettings(hnswThreshold: hnswThreshold, m: m, efConstruction: efConstruction) }
}

struct IndexStatus: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "How many items are embedded and how search runs.")
    @OptionGroup var data: DataOptions
    @OptionGroup var output: OutputOptions
    func run() throws {
        try perform {
            let node = try Node.open(directory: data.directory, forReading: true)
            try output.emit(try node.indexStatus()) { s in
                say("Items: \(s.items), embedded: \(s.embedded), waiting: \(s.waiting)")
                say("Vector search: \(s.indexFile.map { "HNSW graph (\($0))" } ?? "exact scan")")
            }
        }
    }
}

struct IndexUpdate: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "update", abstract: "Embed items that have no vector yet and refresh the vector index.")
    @OptionGroup var data: DataOptions
    @OptionGroup var model: ModelOptions
    @OptionGroup var options: IndexOptions
    func run() throws {
        try perform {
            let node = try Node.open(directory: data.directory)
            let r = try node.updateIndex(modelDirectory: model.directory(data), settings: options.settings, progress: ProgressBar().handler)
            say("Index up to date: \(r.vectors) vectors, \(r.hnsw ? "HNSW" : "exact scan")")
        }
    }
}

struct IndexRebuild: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rebuild", abstract: "Rebuild full-text search, re-embed every item and rebuild the vector index.")
    @OptionGroup var data: DataOptions
    @OptionGroup var model: ModelOptions
    @OptionGroup var options: IndexOptions
    func run() throws {
        try perform {
            let node = try Node.open(directory: data.directory)
            let start = Date()
            let r = try node.rebuildIndex(modelDirectory: model.directory(data), settings: options.settings, progress: ProgressBar().handler)
            say(String(format: "Rebuilt: %d vectors, %@, in %.1f s", r.vectors, r.hnsw ? "HNSW" : "exact scan", Date().timeIntervalSince(start)))
        }
    }
}
