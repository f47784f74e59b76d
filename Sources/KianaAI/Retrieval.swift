import Foundation
import KianaCore
import KianaStore

/// Which candidate lists a search uses.
public enum SearchMode: String, Sendable, CaseIterable {
    case hybrid, vector, keyword
}

/// One ranked result. Ranks are 1-based positions in each candidate list (nil: not in it).
public struct SearchHit: Sendable, Equatable {
    public var id: ItemID
    public var score: Double
    public var keywordRank: Int?
    public var keywordScore: Double?
    public var vectorRank: Int?
    public var vectorScore: Double?

    public init(id: ItemID, score: Double, keywordRank: Int? = nil, keywordScore: Double? = nil, vectorRank: Int? = nil, vectorScore: Double? = nil) {
        self.id = id
        self.score = score
        self.keywordRank = keywordRank
        self.keywordScore = keywordScore
        self.vectorRank = vectorRank
        self.vectorScore = vectorScore
    }
}

/// Reciprocal rank fusion (Cormack et al., 2009): score(d) = Σ 1 / (k + rank(d)) over the lists
/// that contain d. Ties are broken by item ID so the order is deterministic.
public enum RankFusion {
    public static let k = 60.0

    public static func fuse(keyword: [(ItemID, Double)], vector: [(ItemID, Double)], k: Double = RankFusion.k) -> [SearchHit] {
        var hits: [ItemID: SearchHit] = [:]
        for (i, (id, s)) in keyword.enumerated() {
            hits[id, default: SearchHit(id: id, score: 0)].score += 1 / (k + Double(i + 1))
            hits[id]!.keywordRank = i + 1
            hits[id]!.keywordScore = s
        }
        for (i, (id, s)) in vector.enumerated() {
            hits[id, default: SearchHit(id: id, score: 0)].score += 1 / (k + Double(i + 1))
            hits[id]!.vectorRank = i + 1
            hits[id]!.vectorScore = s
        }
        return hits.values.sorted { $0.score > $1.score || ($0.score == $1.score && $0.id < $1.id) }
    }
}

/// Hybrid search over the knowledge base: BM25 from SQLite FTS5 and cosine similarity from the
/// vector index, fused with RRF.
public struct Retriever: Sendable {
    public let embedder: Embedder
    public let store: SearchStore
    /// Where vectors are searched: the in-process index, or an external vector database.
    public var index: any VectorSearching
    /// How many candidates each list contributes before fusion.
    public var candidateDepth = 50

    public init(embedder: Embedder, store: SearchStore, index: any VectorSearching) {
        self.embedder = embedder
        self.store = store
        self.index = index
    }

    public func search(_ query: String, k: Int = 10, mode: SearchMode = .hybrid, filter: SearchFilter = SearchFilter()) throws -> [SearchHit] {
        let q = query.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !q.isEmpty else { throw KianaAIError(.invalidInput, "the search query is empty") }
        guard k > 0, k <= 1000 else { throw KianaAIError(.invalidInput, "k must be between 1 and 1000") }
        let depth = max(candidateDepth, k)
        var keyword: [(ItemID, Double)] = []
        var vector: [(ItemID, Double)] = []
        if mode != .vector { keyword = try store.keywordSearch(q, limit: mode == .keyword ? k : depth, filter: filter) }
        if mode != .keyword {
            let allowed = filter.isEmpty ? nil : try store.itemIDs(matching: filter)
            vector = try index.search(embedder.embed(q), k: mode == .vector ? k : depth, allowed: allowed).map { ($0.0, Double($0.1)) }
        }
        switch mode {
        case .keyword:
            return keyword.enumerated().map { SearchHit(id: $1.0, score: $1.1, keywordRank: $0 + 1, keywordScore: $1.1) }
        case .vector:
            return vector.enumerated().map { SearchHit(id: $1.0, score: $1.1, vectorRank: $0 + 1, vectorScore: $1.1) }
        case .hybrid:
            return Array(RankFusion.fuse(keyword: keyword, vector: vector).prefix(k))
        }
    }
}

/// Embeds every live item that lacks a vector, in batches, and stores the vectors.
public enum Indexing {
    /// Held while a batch is embedded for the index (`embedPending`, a node's indexing
    /// service): such batches run one at a time in a process, so background embedding takes
    /// at most the cores of one embedder and the others stay free for serving.
    static let gate = NSLock()

    /// Embeds `texts` for the index, one caller at a time (`gate`).
    public static func embedExclusively(_ embedder: Embedder, _ texts: [String]) -> [[Float]] {
        gate.lock()
        defer { gate.unlock() }
        return embedder.embed(texts)
    }

    /// Returns how many items were embedded. `progress(done, total)` after every batch.
    @discardableResult
    /// `shouldStop` is asked before each batch: true ends the work there (what is left waits
    /// for the next run or the indexing service).
    public static func embedPending(
        store: SearchStore, embedder: Embedder, batch: Int = 64, shouldStop: () -> Bool = { false },
        progress: ((Int, Int) -> Void)? = nil
    ) throws -> Int {
        let total = try store.countNeedingVectors(model: Embedder.modelName)
        guard total > 0 else { return 0 }
        var done = 0
        progress?(0, total)
        while true {
            if shouldStop() { break }
            let todo = try store.itemsNeedingVectors(model: Embedder.modelName, limit: batch)
            if todo.isEmpty { break }
            let vectors = embedExclusively(embedder, todo.map(\.text))
            let saved = try store.saveVectors(Array(zip(todo, vectors)), model: Embedder.modelName)
            done += todo.count
            progress?(min(done, total), total)
            // an item changed while it was embedded is picked up again; stop if nothing sticks
            if saved == 0 { break }
        }
        return done
    }
}
