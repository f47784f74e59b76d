import Foundation
import KianaAI
import KianaCore
import KianaStore

/// The committed retrieval evaluation set (Resources/retrieval-set.json): passages, queries and
/// graded relevance judgements (2 = answers it, 1 = partly relevant).
public struct RetrievalSet: Decodable, Sendable {
    public struct Passage: Decodable, Sendable {
        public var id: String
        public var title: String
        public var text: String
        public var tags: [String]?
    }
    public struct Query: Decodable, Sendable {
        public var id: String
        public var query: String
        public var kind: String
        public var relevant: [String: Int]
    }
    public var passages: [Passage]
    public var queries: [Query]

    public static func load(path: String? = nil) throws -> RetrievalSet {
        try BundledSet.load(path: path, resource: "retrieval-set", what: "retrieval set")
    }
}

/// Loading a committed evaluation set: from `path`, or the copy bundled with the binary.
enum BundledSet {
    static func load<T: Decodable>(path: String?, resource: String, what: String) throws -> T {
        let url: URL
        if let path {
            url = URL(fileURLWithPath: path)
        } else {
            guard let u = Bundle.module.url(forResource: resource, withExtension: "json") else {
                throw KianaAIError(.invalidInput, "the \(what) is not bundled with this binary")
            }
            url = u
        }
        do { return try JSONDecoder().decode(T.self, from: Data(contentsOf: url)) } catch {
            throw KianaAIError(.invalidInput, "cannot read \(what) \(url.path)", cause: error)
        }
    }
}

/// Information-retrieval metrics over one ranked list.
public enum RankingMetrics {
    /// nDCG@k with gains 2^rel − 1 and log2(rank + 1) discounts.
    public static func ndcg(_ ranked: [String], _ relevant: [String: Int], k: Int) -> Double {
        func dcg(_ rels: [Int]) -> Double { rels.prefix(k).enumerated().reduce(0) { $0 + (pow(2, Double($1.element)) - 1) / log2(Double($1.offset) + 2) } }
        let ideal = dcg(relevant.values.sorted(by: >))
        return ideal > 0 ? dcg(ranked.map { relevant[$0] ?? 0 }) / ideal : 0
    }

    /// Fraction of the relevant passages (any grade) found in the top k.
    public static func recall(_ ranked: [String], _ relevant: [String: Int], k: Int) -> Double {
        let rel = Set(relevant.filter { $0.value > 0 }.keys)
        return rel.isEmpty ? 0 : Double(Set(ranked.prefix(k)).intersection(rel).count) / Double(rel.count)
    }
}

/// `kiana bench retrieval`: nDCG@10 and recall@10 of keyword, vector and hybrid search on the
/// evaluation set, through the same store, FTS5 index, embedder and fusion the node uses.
public struct RetrievalBench: Sendable {
    public var modelDirectory: String
    public var setPath: String?
    public var k = 10

    public init(modelDirectory: String, setPath: String? = nil) {
        self.modelDirectory = modelDirectory
        self.setPath = setPath
    }

    public struct Score: Sendable {
        public var mode: SearchMode
        public var kind: String
        public var queries: Int
        public var ndcg: Double
        public var recall: Double
    }

    public func run(progress: (String) -> Void) throws -> [Score] {
        let set = try RetrievalSet.load(path: setPath)
        let embedder = try Embedder.load(modelDirectory: modelDirectory)
        let db = try KianaDatabase()
        let ledger = LedgerStore(database: db)
        let identity = DeviceIdentity.generate()
        let now: UInt64 = 1_800_000_000_000
        try ledger.initialize(genesis: Block.genesis(identity: identity, time: now, name: "bench"), now: now)
        var itemOf: [String: ItemID] = [:]
        var passageOf: [ItemID: String] = [:]
        var ops: [KnowledgeOp] = []
        for p in set.passages {
            let id = ItemID.random()
            itemOf[p.id] = id
            passageOf[id] = p.id
            ops.append(.put(id, KnowledgeFields(title: p.title, text: p.text, tags: p.tags, source: "retrieval-set#\(p.id)")))
        }
        for start in stride(from: 0, to: ops.count, by: 200) {
            _ = try ledger.write(Array(ops[start..<min(start + 200, ops.count)]), identity: identity, now: now)
        }
        progress("embedding \(set.passages.count) passages")
        let store = SearchStore(database: db)
        try Indexing.embedPending(store: store, embedder: embedder)
        let index = try ItemVectorIndex.open(store: store, model: Embedder.modelName, dimension: embedder.dimension, path: nil)
        let retriever = Retriever(embedder: embedder, store: store, index: index)
        progress("\(set.queries.count) queries × 3 modes")
        var scores: [Score] = []
        let kinds = ["all"] + Array(Set(set.queries.map(\.kind))).sorted()
        for mode in [SearchMode.keyword, .vector, .hybrid] {
            var perQuery: [(kind: String, ndcg: Double, recall: Double)] = []
            for q in set.queries {
                let ranked = try retriever.search(q.query, k: k, mode: mode).compactMap { passageOf[$0.id] }
                perQuery.append((q.kind, RankingMetrics.ndcg(ranked, q.relevant, k: k), RankingMetrics.recall(ranked, q.relevant, k: k)))
            }
            for kind in kinds {
                let sel = perQuery.filter { kind == "all" || $0.kind == kind }
                guard !sel.isEmpty else { continue }
                scores.append(
                    Score(
                        mode: mode, kind: kind, queries: sel.count,
                        ndcg: sel.map(\.ndcg).reduce(0, +) / Double(sel.count), recall: sel.map(\.recall).reduce(0, +) / Double(sel.count)))
            }
        }
        return scores
    }

    public static func render(_ scores: [Score], passages: Int) -> String {
        var out = "kiana bench retrieval: \(passages) passages, nDCG@10 / recall@10 (hybrid = RRF k=60 over BM25 and MiniLM cosine)\n"
        out += "  queries              n   keyword           vector            hybrid\n"
        for kind in scores.filter({ $0.mode == .keyword }).map(\.kind) {
            let row = [SearchMode.keyword, .vector, .hybrid].compactMap { m in scores.first { $0.mode == m && $0.kind == kind } }
            guard row.count == 3 else { continue }
            out += "  " + kind.padding(toLength: 16, withPad: " ", startingAt: 0) + String(format: " %5d", row[0].queries)
            for s in row { out += String(format: "   %.3f / %.3f ", s.ndcg, s.recall) }
            out += "\n"
        }
        return out
    }
}
