import Foundation
import KianaCore
import KianaStore

/// How the vector index is built and searched.
public struct VectorIndexConfig: Sendable, Equatable {
    /// Below this many vectors search is an exact SIMD scan; from here on an HNSW graph is used.
    public var hnswThreshold: Int = 20_000
    public var m: Int = 16
    public var efConstruction: Int = 100
    /// Beam width at query time (raised to k when smaller).
    public var efSearch: Int = 96
    public init() {}
}

/// The in-memory vector index over the store's embeddings: item IDs ↔ dense labels, an exact
/// scan for small stores and a persisted HNSW graph for large ones. The database is the source
/// of truth; the HNSW file is a cache reconciled with it on open (new vectors inserted, removed
/// or re-embedded ones tombstoned, rebuilt when a quarter is tombstones).
public struct ItemVectorIndex: Sendable {
    public let model: String
    public let dimension: Int
    public let config: VectorIndexConfig
    private(set) var ids: [ItemID] = []
    private(set) var versions: [Int64] = []
    private(set) var labelOf: [ItemID: Int] = [:]
    private(set) var flat: VectorMatrix
    private(set) var flatDeleted: Set<Int> = []
    public private(set) var hnsw: HNSW?

    public var count: Int { labelOf.count }
    public var usesHNSW: Bool { hnsw != nil }

    init(model: String, dimension: Int, config: VectorIndexConfig) {
        self.model = model
        self.dimension = dimension
        self.config = config
        flat = VectorMatrix(dimension: dimension)
    }

    /// Loads the index for `model`, using and refreshing the HNSW file at `path` when the store
    /// is large enough. `progress(done, total)` reports graph building.
    public static func open(
        store: SearchStore, model: String, dimension: Int, path: String?, config: VectorIndexConfig = VectorIndexConfig(), persist: Bool = true,
        progress: ((Int, Int) -> Void)? = nil
    ) throws -> ItemVectorIndex {
        var idx = ItemVectorIndex(model: model, dimension: dimension, config: config)
        let current = try store.vectorVersions(model: model)
        if current.count < config.hnswThreshold {
            for (id, version, v) in try store.allVectors(model: model) where v.count == dimension {
                idx.labelOf[id] = idx.ids.count
                idx.ids.append(id)
                idx.versions.append(version)
                idx.flat.append(v)
            }
            if let path { try? FileManager.default.removeItem(atPath: path) }
            return idx
        }
        var changed = false
        if let path, FileManager.default.fileExists(atPath: path), let loaded = try? load(path: path, model: model, dimension: dimension, config: config) {
            idx = loaded
            // tombstone what the store no longer has (or has re-embedded), insert what is new
            var missing = current
            for (label, id) in idx.ids.enumerated() where !(idx.hnsw!.deleted.contains(label)) {
                if let v = current[id], v == idx.versions[label] {
                    missing[id] = nil
                    continue
                }
                idx.hnsw!.markDeleted(label)
                idx.labelOf[id] = nil
                changed = true
            }
            if idx.hnsw!.deleted.count * 4 > idx.hnsw!.count {
                idx = ItemVectorIndex(model: model, dimension: dimension, config: config)
                try idx.build(store: store, progress: progress)
                changed = true
            } else if !missing.isEmpty {
                let fresh = try store.vectors(model: model, ids: Array(missing.keys))
                for (n, (id, version, v)) in fresh.enumerated() {
                    idx.add(id, version, v)
                    progress?(n + 1, fresh.count)
                }
                changed = true
            }
        } else {
            try idx.build(store: store, progress: progress)
            changed = true
        }
        // A data directory opened for reading only uses the file; it does not refresh it.
        if changed, persist, let path { try idx.save(path: path) }
        return idx
    }

    mutating func build(store: SearchStore, progress: ((Int, Int) -> Void)?) throws {
        let all = try store.allVectors(model: model)
        hnsw = HNSW(dimension: dimension, m: config.m, efConstruction: config.efConstruction)
        for (n, (id, version, v)) in all.enumerated() where v.count == dimension {
            add(id, version, v)
            if n % 256 == 255 || n == all.count - 1 { progress?(n + 1, all.count) }
        }
    }

    mutating func add(_ id: ItemID, _ version: Int64, _ v: [Float]) {
        guard v.count == dimension else { return }
        if let old = labelOf[id] { if hnsw != nil { hnsw!.markDeleted(old) } else { flatDeleted.insert(old) } }
        let label: Int
        if hnsw != nil {
            label = hnsw!.insert(v)
        } else {
            label = flat.count
            flat.append(v)
        }
        precondition(label == ids.count)
        ids.append(id)
        versions.append(version)
        labelOf[id] = label
    }

    /// Top-k items by cosine similarity; `allowed` restricts to a set of items. `exact` forces a
    /// full scan even when an HNSW graph exists.
    public func search(_ query: [Float], k: Int, allowed: Set<ItemID>? = nil, exact: Bool = false, ef: Int? = nil) -> [(ItemID, Float)] {
        let ok: ((Int) -> Bool)? = allowed.map { set in { set.contains(ids[$0]) } }
        let hits: [(label: Int, score: Float)]
        if let hnsw {
            if exact {
                let live: (Int) -> Bool = { !hnsw.deleted.contains($0) && (ok?($0) ?? true) }
                hits = hnsw.vectors.exactSearch(query, k: k, allowed: live)
            } else {
                hits = hnsw.search(query, k: k, ef: max(ef ?? config.efSearch, k), allowed: ok)
            }
        } else {
            let live: ((Int) -> Bool)? = flatDeleted.isEmpty && ok == nil ? nil : { !flatDeleted.contains($0) && (ok?($0) ?? true) }
            hits = flat.exactSearch(query, k: k, allowed: live)
        }
        return hits.map { (ids[$0.label], $0.score) }
    }

    // MARK: file

    static let magic: [UInt8] = Array("KIANA-VIDX-1".utf8)

    public func save(path: String) throws {
        guard let hnsw else { return }
        var w = ByteWriter()
        w.bytes(Self.magic)
        let name = Array(model.utf8)
        w.i64(Int64(name.count))
        w.bytes(name)
        w.i64(Int64(ids.count))
        for (i, id) in ids.enumerated() {
            w.bytes(id.bytes)
            w.i64(versions[i])
        }
        var data = w.data
        data.append(hnsw.serialized())
        let dir = (path as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let tmp = path + ".tmp"
        try data.write(to: URL(fileURLWithPath: tmp))
        // rename is atomic: a crash leaves the old file or the new one, never half of one
        guard rename(tmp, path) == 0 else { throw KianaAIError(.index, "cannot replace \(path): errno \(errno)") }
    }

    static func load(path: String, model: String, dimension: Int, config: VectorIndexConfig) throws(KianaAIError) -> ItemVectorIndex {
        guard let d = try? Data(contentsOf: URL(fileURLWithPath: path)) else { throw KianaAIError(.index, "cannot read \(path)") }
        var r = ByteReader(d)
        func bad(_ why: String) -> KianaAIError { KianaAIError(.index, "\(path) is damaged (\(why)); run `kiana index rebuild`") }
        guard r.bytes(magic.count) == magic, let nl = r.int(), nl >= 0, nl < 256, let name = r.bytes(nl),
            String(decoding: name, as: UTF8.self) == model, let n = r.int(), n >= 0, n <= 100_000_000
        else { throw bad("header") }
        var idx = ItemVectorIndex(model: model, dimension: dimension, config: config)
        for label in 0..<n {
            guard let b = r.bytes(16), let id = try? ItemID(bytes: b), let v = r.fixed(Int64.self) else { throw bad("item IDs") }
            idx.ids.append(id)
            idx.versions.append(v)
            idx.labelOf[id] = label
        }
        let g = try HNSW(serialized: d.subdata(in: r.offset..<d.endIndex))
        guard g.count == n, g.vectors.dimension == dimension else { throw bad("graph size") }
        for l in g.deleted { idx.labelOf[idx.ids[l]] = idx.labelOf[idx.ids[l]] == l ? nil : idx.labelOf[idx.ids[l]] }
        idx.hnsw = g
        return idx
    }
}

/// The seam between retrieval and where item vectors live (issue 19 part 8): the in-process
/// index, or an external vector database. Vectors are unit-length; scores are cosines.
public protocol VectorSearching: Sendable {
    /// Vectors held.
    var count: Int { get }
    /// Whether search is approximate (a graph index) rather than an exact scan.
    var usesHNSW: Bool { get }
    /// The `k` nearest items to `query`, best first; only items in `allowed` when given.
    func search(_ query: [Float], k: Int, allowed: Set<ItemID>?) throws -> [(ItemID, Float)]
}

extension ItemVectorIndex: VectorSearching {
    public func search(_ query: [Float], k: Int, allowed: Set<ItemID>?) throws -> [(ItemID, Float)] {
        search(query, k: k, allowed: allowed, exact: false, ef: nil)
    }
}
