import Foundation
import KianaCore
import KianaStore
import Synchronization
#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// A Chroma server's REST API (v2) for one collection of item vectors: the external vector
/// database of issue 19 part 8. Vectors are unit-length, the collection's space is inner
/// product, so Chroma's distance is `1 - cosine` and the score returned is the cosine, as the
/// in-process index returns. Work in progress on branch chroma-client.
public struct ChromaClient: Sendable {
    let http: HTTPLines
    public let collection: String
    let tenant = "default_tenant"
    let database = "default_database"

    public init(url: URL, collection: String, timeout: TimeInterval = 10) {
        http = HTTPLines(baseURL: url, apiKey: nil, timeout: timeout)
        self.collection = collection
    }

    var collectionsPath: String { "api/v2/tenants/\(tenant)/databases/\(database)/collections" }

    /// One JSON exchange, waited for on this thread (retrieval runs off the cooperative pool).
    func call(_ path: String, _ json: Any?) throws(KianaAIError) -> Any {
        let req = try http.request(path, json: json)
        let result = Mutex<Result<(Int, Data), KianaAIError>?>(nil)
        let done = DispatchSemaphore(value: 0)
        let base = http.baseURL.absoluteString
        let task = URLSession.shared.dataTask(with: req) { data, response, error in
            if let error {
                result.withLock { $0 = .failure(KianaAIError(.backend, "Chroma at \(base) is not reachable (\(error.localizedDescription)); start it or set vector.backend=builtin")) }
            } else {
                result.withLock { $0 = .success(((response as? HTTPURLResponse)?.statusCode ?? 0, data ?? Data())) }
            }
            done.signal()
        }
        task.resume()
        // URLRequest's timeout covers only idle gaps; a server that trickles must not hold a search.
        guard done.wait(timeout: .now() + http.timeout + 1) == .success else {
            task.cancel()
            throw KianaAIError(.backend, "Chroma at \(base) did not answer within \(Int(http.timeout)) s; check it or set vector.backend=builtin")
        }
        let (status, data) = try result.withLock { $0! }.get()
        guard data.count <= HTTPLines.maxBody else { throw KianaAIError(.backend, "Chroma's reply is too large") }
        let body = (try? JSONSerialization.jsonObject(with: data, options: .fragmentsAllowed)) ?? [:]
        guard (200..<300).contains(status) else {
            let message = (body as? [String: Any])?["message"] as? String ?? String(decoding: data.prefix(300), as: UTF8.self)
            throw KianaAIError(.backend, "Chroma at \(base) answered \(status): \(message)")
        }
        return body
    }

    /// Whether the server answers.
    public func heartbeat() throws(KianaAIError) {
        _ = try call("api/v2/heartbeat", nil)
    }

    /// The collection's ID, creating it (inner-product space) if needed.
    public func collectionID() throws(KianaAIError) -> String {
        let r = try call(collectionsPath, ["name": collection, "configuration": ["hnsw": ["space": "ip"]], "get_or_create": true])
        guard let id = (r as? [String: Any])?["id"] as? String else { throw KianaAIError(.backend, "Chroma did not return a collection ID") }
        return id
    }

    /// Adds or replaces vectors by item ID, each with the version of the store's vector it is.
    public func upsert(_ items: [(ItemID, [Float])], versions: [Int64]? = nil, in id: String) throws(KianaAIError) {
        guard !items.isEmpty else { return }
        var body: [String: Any] = ["ids": items.map { $0.0.description }, "embeddings": items.map { $0.1.map(Double.init) }]
        if let versions { body["metadatas"] = versions.map { ["v": $0] } }
        _ = try call("\(collectionsPath)/\(id)/upsert", body)
    }

    public func delete(_ ids: [ItemID], in id: String) throws(KianaAIError) {
        guard !ids.isEmpty else { return }
        _ = try call("\(collectionsPath)/\(id)/delete", ["ids": ids.map(\.description)])
    }

    public func count(in id: String) throws(KianaAIError) -> Int {
        let r = try call("\(collectionsPath)/\(id)/count", nil)
        guard let n = (r as? NSNumber)?.intValue else { throw KianaAIError(.backend, "Chroma did not return a count") }
        return n
    }

    /// Every item in the collection with the vector version it holds (nil without one).
    public func allVersions(in id: String) throws(KianaAIError) -> [ItemID: Int64?] {
        let r = try call("\(collectionsPath)/\(id)/get", ["include": ["metadatas"]])
        guard let m = r as? [String: Any], let ids = m["ids"] as? [String] else { throw KianaAIError(.backend, "Chroma's get answer has no ids") }
        let metas = m["metadatas"] as? [Any] ?? []
        var out: [ItemID: Int64?] = [:]
        for (i, text) in ids.enumerated() {
            guard let item = Hex.decode(text).flatMap({ try? ItemID(bytes: $0) }) else { continue }
            let v = (i < metas.count ? metas[i] as? [String: Any] : nil)?["v"] as? NSNumber
            out[item] = v?.int64Value
        }
        return out
    }

    /// The `k` nearest items to `query`, best first, with their cosine scores.
    public func query(_ query: [Float], k: Int, in id: String) throws(KianaAIError) -> [(ItemID, Float)] {
        let r = try call(
            "\(collectionsPath)/\(id)/query", ["query_embeddings": [query.map(Double.init)], "n_results": k, "include": ["distances"]])
        guard let m = r as? [String: Any], let ids = (m["ids"] as? [[String]])?.first, let distances = (m["distances"] as? [[Double]])?.first,
            ids.count == distances.count
        else { throw KianaAIError(.backend, "Chroma's query answer has no ids and distances") }
        var seen = Set<ItemID>()
        var out: [(ItemID, Float)] = []
        for (text, d) in zip(ids, distances) where d.isFinite && d >= -1e-3 && d <= 2 + 1e-3 && out.count < k {
            guard let item = Hex.decode(text).flatMap({ try? ItemID(bytes: $0) }), seen.insert(item).inserted else { continue }
            out.append((item, Float(1 - d)))
        }
        return out
    }
}

/// Item vectors kept in a Chroma collection of this node's own (derived state). Opening does not
/// contact the server: the first vector search brings the collection in step with the store
/// (vectors it lacks or holds in another version are sent, items the store no longer has are
/// removed), and a search that fails makes the next one do that again, so a server that was
/// down, restarted empty or recreated is filled again without restarting the node. Keyword
/// search never touches it.
public final class ChromaVectorIndex: VectorSearching {
    let client: ChromaClient
    let store: SearchStore
    let model: String
    let dimension: Int
    public let count: Int
    /// The collection's ID once it is in step with the store.
    private let synced = Mutex<String?>(nil)
    public var usesHNSW: Bool { true }

    init(client: ChromaClient, store: SearchStore, model: String, dimension: Int, count: Int) {
        self.client = client
        self.store = store
        self.model = model
        self.dimension = dimension
        self.count = count
    }

    /// `owner` names whose vectors these are (network and device, so two nodes sharing one
    /// server never touch each other's collection).
    public static func open(store: SearchStore, model: String, dimension: Int, url: URL, owner: String) throws -> ChromaVectorIndex {
        let clean = { (t: String) in t.lowercased().filter { ($0.isASCII && ($0.isLetter || $0.isNumber)) || $0 == "-" } }
        let client = ChromaClient(url: url, collection: "kiana-\(clean(owner))-\(clean(model))")
        return ChromaVectorIndex(client: client, store: store, model: model, dimension: dimension, count: try store.vectorCount(model: model))
    }

    /// The version a vector is kept under: a hash of its bytes (the store's row numbers can be
    /// reused by an edit), 52 bits so every JSON reader keeps it exact.
    static func version(_ v: [Float]) -> Int64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for f in v {
            var bits = f.bitPattern
            for _ in 0..<4 {
                h = (h ^ UInt64(bits & 0xff)) &* 0x100_0000_01b3
                bits >>= 8
            }
        }
        return Int64(h & ((1 << 52) - 1))
    }

    func collection() throws -> String {
        if let id = synced.withLock({ $0 }) { return id }
        let id = try client.collectionID()
        var held = try client.allVersions(in: id)
        var batch: [(ItemID, [Float])] = []
        var versions: [Int64] = []
        func flush() throws {
            try client.upsert(batch, versions: versions, in: id)
            batch.removeAll(keepingCapacity: true)
            versions.removeAll(keepingCapacity: true)
        }
        for (item, _, v) in try store.allVectors(model: model) where v.count == dimension {
            let version = Self.version(v)
            let had = held.removeValue(forKey: item)
            if let had, had == version { continue }
            batch.append((item, v))
            versions.append(version)
            if batch.count == 256 { try flush() }
        }
        try flush()
        let stale = Array(held.keys)
        for start in stride(from: 0, to: stale.count, by: 256) { try client.delete(Array(stale[start..<min(start + 256, stale.count)]), in: id) }
        synced.withLock { $0 = id }
        return id
    }

    public func search(_ query: [Float], k: Int, allowed: Set<ItemID>?) throws -> [(ItemID, Float)] {
        guard count > 0, k > 0 else { return [] }
        if let allowed, allowed.isEmpty { return [] }
        do {
            let id = try collection()
            guard let allowed else { return try client.query(query, k: min(k, count), in: id) }
            // Chroma filters by metadata, not by ID: ask for more and keep the allowed ones.
            var depth = min(count, max(k * 8, 100))
            while true {
                let hits = try client.query(query, k: depth, in: id).filter { allowed.contains($0.0) }
                if hits.count >= k || depth >= count { return Array(hits.prefix(k)) }
                depth = min(count, depth * 4)
            }
        } catch {
            synced.withLock { $0 = nil }
            throw error
        }
    }
}
