import Foundation
import KianaAI
import KianaCore
import KianaStore
import Synchronization

/// What an ingestion run did.
public struct IngestReport: Sendable, Equatable {
    public var filesScanned = 0
    public var filesUnchanged = 0
    public var filesNew = 0
    public var filesChanged = 0
    public var filesRemoved = 0
    public var filesFailed: [String] = []
    /// The paths of the files that failed, exactly (the lines above also give the reason).
    public var failedPaths: Set<String> = []
    public var chunksAdded = 0
    public var chunksUpdated = 0
    public var chunksRemoved = 0
    /// Chunks the owner forgot whose text is unchanged: left forgotten; and those whose text
    /// changed: back (decision 112).
    public var chunksLeftForgotten = 0
    public var chunksRevived = 0
    /// Unchanged chunks that got tags the ingest was given and they lacked (counted in
    /// `chunksUpdated` too).
    public var chunksTagged = 0
    public var bytesRead = 0
    public var changed: Bool { chunksAdded + chunksUpdated + chunksRemoved > 0 }
    /// Something failed and no file was taken (new, changed, unchanged or removed).
    public var nothingTaken: Bool { !filesFailed.isEmpty && filesNew + filesChanged + filesUnchanged + filesRemoved == 0 }

    /// Records a file that was skipped, and why.
    mutating func fail(_ file: String, _ reason: String) {
        filesFailed.append("\(file): \(reason)")
        failedPaths.insert(file)
    }
}

/// Progress callbacks of long operations: (phase, done, total, detail).
public typealias ProgressHandler = @Sendable (_ phase: String, _ done: Int, _ total: Int, _ detail: String) -> Void

/// A file's chunks are stored as items whose source is "<absolute path>#<position>".
public enum ChunkSource {
    public static func make(_ path: String, _ position: Int) -> String { "\(path)#\(position)" }

    /// (path, position) of an ingested chunk's source, nil for other sources.
    public static func parse(_ source: String) -> (String, Int)? {
        guard let hash = source.lastIndex(of: "#"), let pos = Int(source[source.index(after: hash)...]), pos >= 0 else { return nil }
        return (String(source[..<hash]), pos)
    }

    /// What the source of a chunk the owner forgot becomes (decision 112): `parse` does not
    /// read it, so ingest leaves the item alone, and `parseForgotten` tells where it was.
    static let forgottenSuffix = "#forgotten"
    /// Nil for a source that is not a chunk's, or too long to take the mark (that chunk is then
    /// forgotten as any item is, and a later ingest of its file brings it back).
    /// Only what ingest writes counts as a chunk's source: an absolute path of a supported file
    /// type and a position ("Issue #42" is not one).
    public static func forgotten(_ source: String) -> String? {
        guard let (path, _) = parse(source), path.hasPrefix("/"), TextExtraction.isSupported(path),
            source.utf8.count + forgottenSuffix.utf8.count <= KnowledgeOp.maxSourceBytes
        else { return nil }
        return source + forgottenSuffix
    }

    /// (path, position) of a chunk the owner forgot, nil for any other source.
    public static func parseForgotten(_ source: String) -> (String, Int)? {
        guard source.hasSuffix(forgottenSuffix) else { return nil }
        return parse(String(source.dropLast(forgottenSuffix.count)))
    }
}

extension Node {
    public var searchStore: SearchStore { SearchStore(database: store.database) }
    public var vectorIndexPath: String { directory.path + "/index/minilm.vidx" }

    /// Ingests files and folders (recursively, supported types only): new files become chunks,
    /// changed files have their chunks replaced, files gone from an ingested folder are forgotten,
    /// unchanged files cost one read. Each batch of chunks is one ledger write, so an interrupted
    /// run leaves whole batches and the next run finishes the job.
    public func ingest(
        paths: [String], tags: [String] = [], chunker: Chunker = Chunker(),
        progress: ProgressHandler? = nil, now: @Sendable () -> UInt64 = currentMillis
    ) throws -> IngestReport {
        try ingest(paths: paths, tags: tags, chunker: chunker, progress: progress, holding: nil, now: now)
    }

    /// `ingest(paths:…)` under a lock the caller already holds (`holding`), or one it takes,
    /// waiting for another ingest to finish.
    func ingest(
        paths: [String], tags: [String] = [], chunker: Chunker = Chunker(),
        progress: ProgressHandler? = nil, holding: IngestLock?, now: @Sendable () -> UInt64 = currentMillis
    ) throws -> IngestReport {
        guard !paths.isEmpty else { throw KianaNodeError(.invalidInput, "nothing to ingest: give files or folders") }
        var report = IngestReport()
        let fm = FileManager.default
        var plan: [(root: String, files: [String], isFolder: Bool, unreadable: [String])] = []
        for raw in paths {
            // "" would resolve to the current directory: an unset variable (`ingest "$NOTES"`)
            // must not take in whatever folder the command runs in.
            guard !raw.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
                throw KianaNodeError(.invalidInput, "an empty path: give a file or folder (\".\" for the current folder)")
            }
            let path = URL(fileURLWithPath: (raw as NSString).expandingTildeInPath).standardizedFileURL.path
            var isDir: ObjCBool = false
            if fm.fileExists(atPath: path, isDirectory: &isDir) {
                if isDir.boolValue {
                    let found = try Self.supportedFiles(under: path)
                    plan.append((path, found.files, true, found.unreadable))
                } else {
                    guard TextExtraction.isSupported(path) else {
                        throw KianaNodeError(
                            .invalidInput, "\(raw): unsupported file type (supported: \(TextExtraction.supportedExtensions.sorted().joined(separator: ", ")))")
                    }
                    plan.append((path, [path], false, []))
                }
            } else if try !searchStore.items(sourcePrefix: path + "#").isEmpty {
                plan.append((path, [], false, []))  // a file ingested before and deleted since
            } else {
                throw KianaNodeError(.invalidInput, "\(raw): no such file or folder")
            }
        }
        // One ingest at a time per data directory (CLI runs, `--watch`, the node's uploads): two
        // that read the same state would both add a file's new chunks.
        let taken =
            holding == nil
            ? try IngestLock(directory: directory, wait: true) {
                progress?("waiting", 0, 0, "waiting for another ingest on this data directory to finish")
            } : nil
        defer { taken?.release() }
        let totalBytes = plan.flatMap(\.files).reduce(0) { $0 + ((try? fm.attributesOfItem(atPath: $1)[.size] as? Int) ?? 0) }
        progress?("reading", 0, totalBytes, "")
        // A file named twice (`ingest docs docs/a.md`) is read and counted once.
        var processed = Set<String>()
        for entry in plan {
            // everything ingested under this root, grouped by file; a second item for the same
            // chunk (left by concurrent ingests before they took turns) is removed below
            let prefix = entry.isFolder ? entry.root + "/" : entry.root + "#"
            var existing: [String: [Int: StoredItem]] = [:]
            var duplicates: [String: [StoredItem]] = [:]
            // Chunks the owner forgot (not those ingest removed: their source is unmarked) stay
            // forgotten while their text is unchanged (decision 112); the newest per position.
            var forgotten: [String: [Int: StoredItem]] = [:]
            // A live item with the mark (a forget on one device merged with a change on another,
            // the change the later): a chunk again, its source put back first.
            var unmark: [KnowledgeOp] = []
            for item in try searchStore.items(sourcePrefix: prefix, includingForgotten: true) {
                if item.deleted {
                    guard let s = item.source, let (path, pos) = ChunkSource.parseForgotten(s) else { continue }
                    if let other = forgotten[path]?[pos], (other.updated ?? .zero, other.id.description) > (item.updated ?? .zero, item.id.description) { continue }
                    forgotten[path, default: [:]][pos] = item
                    continue
                }
                if let s = item.source, let (path, pos) = ChunkSource.parseForgotten(s) {
                    unmark.append(.put(item.id, KnowledgeFields(source: ChunkSource.make(path, pos))))
                }
                guard let s = item.source, let (path, pos) = ChunkSource.parse(s) ?? ChunkSource.parseForgotten(s) else { continue }
                if let other = existing[path]?[pos] {
                    // keep the one written last (its text is the newest), by ID on a tie
                    let itemFirst = item.updated.map { u in other.updated.map { u > $0 } ?? true } ?? false
                    let keep = itemFirst || (item.updated == other.updated && item.id < other.id) ? item : other
                    duplicates[path, default: []].append(keep.id == item.id ? other : item)
                    existing[path]![pos] = keep
                } else {
                    existing[path, default: [:]][pos] = item
                }
            }
            if !unmark.isEmpty {
                try write(unmark, now: now)
                report.chunksUpdated += unmark.count
            }
            let present = Set(entry.files)
            for file in entry.files {
                guard processed.insert(file).inserted else { continue }
                report.filesScanned += 1
                let old = existing[file] ?? [:]
                let extra = duplicates[file] ?? []
                let chunks: [Chunk]
                do {
                    let attrs = try fm.attributesOfItem(atPath: file)
                    // A FIFO would block the read, a device never end: named as what they are.
                    var st = stat()
                    if stat(file, &st) == 0, (st.st_mode & S_IFMT) != S_IFREG {
                        throw KianaAIError(.ingest, "not a regular file (a FIFO, device or socket, or a link to one)")
                    }
                    let size = attrs[.size] as? Int ?? 0
                    guard size <= TextExtraction.maxFileBytes else {
                        throw KianaAIError(.ingest, "\(file) is larger than \(TextExtraction.maxFileBytes / 1_048_576) MiB")
                    }
                    let data = try Data(contentsOf: URL(fileURLWithPath: file))
                    report.bytesRead += data.count
                    chunks = chunker.chunks(try TextExtraction.text(of: file, data: data))
                } catch {
                    report.fail(file, Self.describe(error))
                    progress?("reading", report.bytesRead, totalBytes, file)
                    continue
                }
                // Nothing to keep from a new file (empty, or headings only): said, not counted as unchanged.
                if chunks.isEmpty && old.isEmpty && extra.isEmpty {
                    report.fail(file, "no text to keep (the file is empty or has headings only)")
                    progress?("reading", report.bytesRead, totalBytes, file)
                    continue
                }
                let name = (file as NSString).lastPathComponent
                var ops: [KnowledgeOp] = []
                var added = 0
                var updated = 0
                var revived = false
                for (pos, chunk) in chunks.enumerated() {
                    let title = Self.title(chunk.heading.isEmpty ? name : name + " › " + chunk.heading)
                    let text = String(chunk.text.utf8.prefix(KnowledgeOp.maxTextBytes)) ?? chunk.text
                    if let item = old[pos] {
                        // Tags given to this ingest are added to the file's chunks that lack
                        // them, changed or not (a re-upload with a new tag tags the file); none
                        // are taken away.
                        let missing = tags.filter { !item.tags.contains($0) }
                        let newTags = missing.isEmpty ? nil : item.tags + missing
                        if item.title == title && item.text == text {
                            if let newTags {
                                ops.append(.put(item.id, KnowledgeFields(tags: newTags)))
                                updated += 1
                                report.chunksTagged += 1
                            }
                            continue
                        }
                        // The source too: merged with a forget made elsewhere meanwhile, the
                        // later of the two decides it (decision 112).
                        ops.append(.put(item.id, KnowledgeFields(title: title, text: text, tags: newTags, source: ChunkSource.make(file, pos))))
                        updated += 1
                    } else if let item = forgotten[file]?[pos] {
                        // Forgotten by the owner: left so while the chunk reads the same; a
                        // changed chunk is new text and comes back (on the same item, its
                        // source a chunk's again).
                        if item.title == title && item.text == text {
                            report.chunksLeftForgotten += 1
                            continue
                        }
                        ops.append(.put(item.id, KnowledgeFields(title: title, text: text, source: ChunkSource.make(file, pos))))
                        updated += 1
                        revived = true
                        report.chunksRevived += 1
                    } else {
                        ops.append(
                            .put(
                                ItemID.random(),
                                KnowledgeFields(
                                    title: title, text: text, tags: tags.isEmpty ? nil : tags,
                                    source: ChunkSource.make(file, pos))))
                        added += 1
                    }
                }
                // A file whose chunks the ledger would refuse (a NUL byte: not a text file) is
                // skipped and reported, and the others go on.
                if let problem = Self.firstProblem(ops) {
                    report.fail(file, problem)
                    progress?("reading", report.bytesRead, totalBytes, file)
                    continue
                }
                let removed = old.keys.filter { $0 >= chunks.count }.sorted()
                ops += removed.map { .delete(old[$0]!.id) }
                ops += extra.map { .delete($0.id) }
                try write(ops, now: now)
                report.chunksAdded += added
                report.chunksUpdated += updated
                report.chunksRemoved += removed.count + extra.count
                if ops.isEmpty { report.filesUnchanged += 1 } else if old.isEmpty && !revived { report.filesNew += 1 } else { report.filesChanged += 1 }
                progress?("reading", report.bytesRead, totalBytes, file)
            }
            // Folders that could not be read: what was ingested from them is kept, and said.
            func isUnder(_ path: String, _ folder: String) -> Bool { path == folder || path.hasPrefix(folder == "/" ? "/" : folder + "/") }
            for folder in entry.unreadable {
                let kept = existing.keys.filter { isUnder($0, folder) }.count
                report.filesFailed.append(
                    "\(folder): cannot be read (permissions?)"
                        + (kept == 0 ? "" : kept == 1 ? "; the file ingested from it before was kept" : "; the \(kept) files ingested from it before were kept"))
            }
            func underUnreadable(_ path: String) -> Bool { entry.unreadable.contains { isUnder(path, $0) } }
            // files that were ingested under this root and are gone now
            for (path, items) in existing where !present.contains(path) && (entry.isFolder || path == entry.root) {
                if fm.fileExists(atPath: path) && entry.isFolder && TextExtraction.isSupported(path) { continue }
                if underUnreadable(path) { continue }
                let gone = items.values.sorted { $0.id < $1.id } + (duplicates[path] ?? [])
                try write(gone.map { .delete($0.id) }, now: now)
                report.chunksRemoved += gone.count
                report.filesRemoved += 1
            }
        }
        return report
    }

    /// A chunk title derived from a file name and a heading: control characters become spaces
    /// and it is cut to the ledger's title limit (it is made here, not typed by anyone).
    static func title(_ raw: String) -> String {
        let clean = String(String.UnicodeScalarView(raw.unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7F ? " " : $0 }))
        guard clean.utf8.count > KnowledgeOp.maxTitleBytes else { return clean }
        var cut = ""
        for ch in clean {
            if cut.utf8.count + String(ch).utf8.count > KnowledgeOp.maxTitleBytes - 3 { break }
            cut.append(ch)
        }
        return cut + "…"
    }

    /// Why the ledger would refuse one of these writes, if it would.
    static func firstProblem(_ ops: [KnowledgeOp]) -> String? {
        for op in ops {
            guard case .put(_, let f) = op else { continue }
            do throws(KianaCoreError) { try f.validateInput() } catch { return error.message }
        }
        return nil
    }

    /// Writes ops in ledger batches of at most 256 entries / ~1 MiB of text.
    func write(_ ops: [KnowledgeOp], now: @Sendable () -> UInt64) throws {
        var batch: [KnowledgeOp] = []
        var bytes = 0
        for op in ops {
            var size = 64
            if case .put(_, let f) = op { size += (f.text?.utf8.count ?? 0) + (f.title?.utf8.count ?? 0) }
            if !batch.isEmpty && (batch.count >= 256 || bytes + size > 1 << 20) {
                _ = try store.write(batch, identity: identity, now: now())
                batch = []
                bytes = 0
            }
            batch.append(op)
            bytes += size
        }
        if !batch.isEmpty { _ = try store.write(batch, identity: identity, now: now()) }
    }

    /// The supported regular files under `root`, and the folders under it (or `root` itself)
    /// that could not be read: what was ingested from those is not taken as deleted.
    static func supportedFiles(under root: String) throws -> (files: [String], unreadable: [String]) {
        // A folder given as a symbolic link is listed where it points (the enumerator does not
        // enter a link), and what is found is named under the path given, as ingested before.
        var st = stat()
        if lstat(root, &st) == 0, st.st_mode & S_IFMT == S_IFLNK {
            let target = URL(fileURLWithPath: root).resolvingSymlinksInPath().standardizedFileURL.path
            guard target != root else { return ([], [root]) }
            let found = try supportedFiles(under: target)
            let rename = { (p: String) in p.hasPrefix(target) ? root + p.dropFirst(target.count) : p }
            return (found.files.map(rename), found.unreadable.map(rename))
        }
        let unreadable = Mutex<[String]>([])
        // A folder read means its entries are listed; one that cannot be (permissions, I/O) is
        // reported by the enumerator and skipped, and must not look empty.
        if opendir(root).map({ closedir($0) }) == nil {
            return ([], [root])
        }
        guard
            let e = FileManager.default.enumerator(
                at: URL(fileURLWithPath: root), includingPropertiesForKeys: [.isRegularFileKey, .isDirectoryKey],
                options: [.skipsHiddenFiles],
                errorHandler: { url, _ in
                    unreadable.withLock { $0.append(url.standardizedFileURL.path) }
                    return true
                })
        else {
            throw KianaNodeError(.invalidInput, "cannot read folder \(root)")
        }
        var files: [String] = []
        for case let url as URL in e {
            let values = try? url.resourceValues(forKeys: [.isRegularFileKey, .isDirectoryKey])
            let p = url.standardizedFileURL.path
            if values?.isDirectory == true {
                // The enumerator does not always report a folder it cannot list: looked at here.
                if opendir(p).map({ closedir($0) }) == nil { unreadable.withLock { $0.append(p) } }
                continue
            }
            guard values?.isRegularFile == true else { continue }
            if TextExtraction.isSupported(p) { files.append(p) }
        }
        return (files.sorted(), unreadable.withLock { Array(Set($0)).sorted() })
    }

    static func describe(_ error: any Error) -> String {
        switch error {
        case let e as KianaAIError: return e.message
        case let e as KianaNodeError: return e.message
        default: return error.localizedDescription
        }
    }

    // MARK: embedding and search

    /// Damage in the full-text index (nil if sound, or if this directory cannot be written:
    /// the check needs a writable connection, and writes nothing).
    public func fullTextProblem() throws -> String? {
        guard directory.isWritable, directory.damage == nil else { return nil }
        let db = readOnly ? try KianaDatabase(path: directory.databasePath) : store.database
        return try SearchStore(database: db).fullTextProblem()
    }

    /// Loads the embedder from the model directory (verified; one-line error when missing).
    public static func loadEmbedder(modelDirectory: String, threads: Int? = nil) throws -> Embedder {
        try Embedder.load(modelDirectory: modelDirectory, threads: threads)
    }

    /// Embeds every item that has no vector yet; returns how many.
    @discardableResult
    public func embedPending(_ embedder: Embedder, batch: Int = 64, shouldStop: () -> Bool = { false }, progress: ProgressHandler? = nil) throws -> Int {
        try Indexing.embedPending(store: searchStore, embedder: embedder, batch: batch, shouldStop: shouldStop) { progress?("embedding", $0, $1, "") }
    }

    /// A retriever over the current state: pending items are embedded first (when at most
    /// `embeddingAtMost` wait, if given), then the vector index is opened (and its HNSW file refreshed when the store is large).
    /// `afterEmbedding` runs between the two (a cache reads the store's fingerprint there, so a
    /// write that lands while the index opens makes the next fingerprint differ).
    public func retriever(
        _ embedder: Embedder, config: VectorIndexConfig = VectorIndexConfig(), progress: ProgressHandler? = nil,
        embeddingAtMost limit: Int? = nil, afterEmbedding: () throws -> Void = {}
    ) throws -> Retriever {
        // Opened for reading only (a read-only mount): what has vectors is searched as it is.
        // With `limit`, more items than that waiting are left unembedded (the caller's indexing
        // embeds them); the index holds the vectors there are.
        if !readOnly {
            if let limit {
                // At most `limit` items, the latest written first: a fact just taught is found
                // by meaning at once even behind an upload's backlog, and a search never takes
                // on more than that (what lands meanwhile is the indexing service's).
                var batch = try searchStore.itemsNeedingVectors(model: Embedder.modelName, limit: limit + 1)
                if batch.count > limit { batch = try searchStore.itemsNeedingVectors(model: Embedder.modelName, limit: limit, newestFirst: true) }
                if !batch.isEmpty { _ = try searchStore.saveVectors(Array(zip(batch, embedder.embed(batch.map(\.text)))), model: Embedder.modelName) }
            } else {
                try embedPending(embedder, progress: progress)
            }
        }
        try afterEmbedding()
        // vector.backend (decision 100): the in-process index, or a Chroma server brought in step
        // with the store's vectors (derived state, rebuilt from them when switched).
        let settings = try KianaConfig.resolve(directory: directory)
        if settings.text("vector.backend") == "chroma" {
            guard let url = settings.text("vector.url").flatMap(URL.init(string:)) else {
                throw KianaNodeError(.invalidInput, "vector.url is not a URL")
            }
            let network = Hex.encode(try store.network() ?? []).prefix(16)
            let index = try ChromaVectorIndex.open(
                store: searchStore, model: Embedder.modelName, dimension: embedder.dimension, url: url,
                owner: "\(network)-\(identity.deviceID.compact.prefix(12))")
            return Retriever(embedder: embedder, store: searchStore, index: index)
        }
        let index = try ItemVectorIndex.open(
            store: searchStore, model: Embedder.modelName, dimension: embedder.dimension,
            path: vectorIndexPath, config: config, persist: !readOnly
        ) { progress?("indexing", $0, $1, "") }
        return Retriever(embedder: embedder, store: searchStore, index: index)
    }

    /// Drops all vectors and the HNSW file, rebuilds full-text search, re-embeds everything and
    /// rebuilds the vector index.
    public func rebuildIndexes(_ embedder: Embedder, config: VectorIndexConfig = VectorIndexConfig(), progress: ProgressHandler? = nil) throws -> Retriever {
        try searchStore.resetIndexes()
        try? FileManager.default.removeItem(atPath: vectorIndexPath)
        return try retriever(embedder, config: config, progress: progress)
    }
}

/// An exclusive lock on `<data dir>/ingest.lock` (flock: released when the process dies, so a
/// killed ingest never leaves it held). Where there is no lock to take (a data directory this
/// process cannot write, whose ingest fails at its first write; a file system without flock,
/// such as NFS without its lock daemon) the ingest runs as it did before there was one.
struct IngestLock {
    private let fd: Int32

    /// Takes the lock; with `wait` false, another ingest holding it is a 409 conflict at once.
    init(directory: DataDirectory, wait: Bool, waiting: () -> Void = {}) throws {
        // Opened for writing where it can be (NFS emulates flock with a write lock), else for
        // reading (a lock file `sudo kiana ingest` made still opens for the service's user);
        // made readable by all whatever the umask (kiana's is 077).
        let path = directory.path + "/ingest.lock"
        var opened = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        if opened < 0 { opened = open(path, O_RDONLY | O_CLOEXEC) }
        fd = opened
        guard fd >= 0 else { return }
        var st = stat()
        if fstat(fd, &st) == 0, st.st_uid == geteuid(), st.st_mode & 0o777 != 0o644 { fchmod(fd, 0o644) }
        if flock(fd, LOCK_EX | LOCK_NB) == 0 { return }
        guard errno == EWOULDBLOCK else { return }  // no locking here: as before
        guard wait else {
            close(fd)
            throw KianaNodeError(.conflict, "another ingestion is running on this data directory (kiana ingest); try again when it has finished")
        }
        waiting()
        while flock(fd, LOCK_EX) != 0 {
            guard errno == EINTR else {
                let why = String(cString: strerror(errno))
                close(fd)
                throw KianaNodeError(.io, "cannot lock \(path): \(why)")
            }
        }
    }

    func release() {
        if fd >= 0 { close(fd) }
    }
}
