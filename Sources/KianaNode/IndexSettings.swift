import Foundation
import KianaAI

// The vector index as `kiana index update|rebuild` drives it, and the change check of
// `kiana ingest --watch`.

/// How the vector index is built: exact scan below `hnswThreshold` vectors, an HNSW graph with
/// `m` links per node and build beam `efConstruction` from there on.
public struct IndexSettings: Sendable, Equatable {
    /// The default threshold (the one `kiana serve` uses).
    public static let defaultHNSWThreshold = VectorIndexConfig().hnswThreshold
    public var hnswThreshold: Int
    public var m: Int
    public var efConstruction: Int

    public init(hnswThreshold: Int = IndexSettings.defaultHNSWThreshold, m: Int = 16, efConstruction: Int = 100) {
        self.hnswThreshold = hnswThreshold
        self.m = m
        self.efConstruction = efConstruction
    }

    /// The index configuration; `.invalidInput` names the ranges when a value is outside them.
    func config() throws -> VectorIndexConfig {
        guard hnswThreshold >= 0, (2...256).contains(m), (2...4096).contains(efConstruction) else {
            throw KianaNodeError(.invalidInput, "--hnsw-threshold ≥ 0, --m 2…256, --ef-construction 2…4096")
        }
        var c = VectorIndexConfig()
        c.hnswThreshold = hnswThreshold
        c.m = m
        c.efConstruction = efConstruction
        return c
    }
}

/// The vector index after `kiana index update|rebuild`.
public struct IndexBuildView: Codable, Sendable {
    public var vectors: Int
    /// True for an HNSW graph, false for an exact scan.
    public var hnsw: Bool
}

extension Node {
    /// Embeds items that have no vector yet and refreshes the vector index.
    public func updateIndex(modelDirectory: String, settings: IndexSettings, progress: ProgressHandler? = nil) throws -> IndexBuildView {
        let r = try retriever(Node.loadEmbedder(modelDirectory: modelDirectory), config: settings.config(), progress: progress)
        return IndexBuildView(vectors: r.index.count, hnsw: r.index.usesHNSW)
    }

    /// Rebuilds full-text search, re-embeds every item and rebuilds the vector index.
    public func rebuildIndex(modelDirectory: String, settings: IndexSettings, progress: ProgressHandler? = nil) throws -> IndexBuildView {
        let r = try rebuildIndexes(Node.loadEmbedder(modelDirectory: modelDirectory), config: settings.config(), progress: progress)
        return IndexBuildView(vectors: r.index.count, hnsw: r.index.usesHNSW)
    }
}

/// Size and modification time of every supported file under some paths: a cheap check for
/// `kiana ingest --watch` of whether anything changed since the last run.
public struct IngestSnapshot: Equatable, Sendable {
    var files: [String: [Double]]

    public static func take(paths: [String]) -> IngestSnapshot {
        var out: [String: [Double]] = [:]
        let fm = FileManager.default
        for raw in paths {
            let root = URL(fileURLWithPath: (raw as NSString).expandingTildeInPath).standardizedFileURL.path
            var files: [String] = [root]
            // A folder given as a link is walked where it points (as ingest does), named under the link.
            let walked = URL(fileURLWithPath: root).resolvingSymlinksInPath().path
            if let e = fm.enumerator(atPath: walked) { files = e.compactMap { $0 as? String }.map { root + "/" + $0 } }
            for f in files where TextExtraction.isSupported(f) {
                if let a = try? fm.attributesOfItem(atPath: f) {
                    out[f] = [Double(a[.size] as? Int ?? 0), (a[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0]
                }
            }
        }
        return IngestSnapshot(files: out)
    }
}
