import Foundation
import KianaCore
#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// A Chroma server's REST API (v2) for one collection of item vectors: the external vector
/// database of issue 19 part 8. Vectors are unit-length, the collection's space is inner
/// product, so Chroma's distance is `1 - cosine` and the score returned is the cosine, as the
/// in-process index returns. Work in progress on branch chroma-client: not wired into retrieval.
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

    func call(_ path: String, _ json: Any?) async throws(KianaAIError) -> Any {
        let (status, data) = try await http.fetch(path, json: json)
        let body = (try? JSONSerialization.jsonObject(with: data, options: .fragmentsAllowed)) ?? [:]
        guard (200..<300).contains(status) else {
            let message = (body as? [String: Any])?["message"] as? String ?? String(decoding: data.prefix(300), as: UTF8.self)
            throw KianaAIError(.backend, "Chroma at \(http.baseURL.absoluteString) answered \(status): \(message)")
        }
        return body
    }

    /// Whether the server answers.
    public func heartbeat() async throws(KianaAIError) {
        _ = try await call("api/v2/heartbeat", nil)
    }

    /// The collection's ID, creating it (inner-product space) if needed.
    public func collectionID() async throws(KianaAIError) -> String {
        let r = try await call(collectionsPath, ["name": collection, "configuration": ["hnsw": ["space": "ip"]], "get_or_create": true])
        guard let id = (r as? [String: Any])?["id"] as? String else { throw KianaAIError(.backend, "Chroma did not return a collection ID") }
        return id
    }

    /// Adds or replaces vectors by item ID.
    public func upsert(_ items: [(ItemID, [Float])], in id: String) async throws(KianaAIError) {
        guard !items.isEmpty else { return }
        _ = try await call(
            "\(collectionsPath)/\(id)/upsert", ["ids": items.map { $0.0.description }, "embeddings": items.map { $0.1.map(Double.init) }])
    }

    public func delete(_ ids: [ItemID], in id: String) async throws(KianaAIError) {
        guard !ids.isEmpty else { return }
        _ = try await call("\(collectionsPath)/\(id)/delete", ["ids": ids.map(\.description)])
    }

    public func count(in id: String) async throws(KianaAIError) -> Int {
        let r = try await call("\(collectionsPath)/\(id)/count", nil)
        guard let n = (r as? NSNumber)?.intValue else { throw KianaAIError(.backend, "Chroma did not return a count") }
        return n
    }

    /// The `k` nearest items to `query`, best first, with their cosine scores.
    public func query(_ query: [Float], k: Int, in id: String) async throws(KianaAIError) -> [(ItemID, Float)] {
        let r = try await call(
            "\(collectionsPath)/\(id)/query", ["query_embeddings": [query.map(Double.init)], "n_results": k, "include": ["distances"]])
        guard let m = r as? [String: Any], let ids = (m["ids"] as? [[String]])?.first, let distances = (m["distances"] as? [[Double]])?.first,
            ids.count == distances.count
        else { throw KianaAIError(.backend, "Chroma's query answer has no ids and distances") }
        return zip(ids, distances).compactMap { id, d in Hex.decode(id).flatMap { try? ItemID(bytes: $0) }.map { ($0, Float(1 - d)) } }
    }
}
