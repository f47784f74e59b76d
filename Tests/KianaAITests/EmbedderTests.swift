import Foundation
import KianaAI
import KianaTestSupport
import Testing

/// Loaded once: the model takes a moment to load and every test here uses the same weights.
let sharedEmbedder: Embedder? = {
    guard Models.hasMiniLM else { return nil }
    return try? Embedder.load(modelDirectory: Models.directory)
}()

func requireEmbedder() throws -> Embedder? {
    if let e = sharedEmbedder { return e }
    if Shared.isCI { Issue.record("the MiniLM model is missing from \(Models.directory); setup must fetch it") }
    return nil
}

struct ReferenceSentence: Decodable {
    var ids: [Int32]
    var embedding: [Double]
}
struct MiniLMReference: Decodable { var sentences: [String: ReferenceSentence] }

func loadReference() throws -> MiniLMReference? {
    let rel = "vectors/minilm/reference.json"
    guard Shared.exists(rel) else {
        if Shared.isCI { Issue.record("../shared/\(rel) is missing") }
        return nil
    }
    return try JSONDecoder().decode(MiniLMReference.self, from: Data(contentsOf: Shared.root.appendingPathComponent(rel)))
}

func cosine(_ a: [Float], _ b: [Double]) -> Double {
    var dot = 0.0
    var na = 0.0
    var nb = 0.0
    for i in a.indices {
        dot += Double(a[i]) * b[i]
        na += Double(a[i]) * Double(a[i])
        nb += b[i] * b[i]
    }
    return dot / (na.squareRoot() * nb.squareRoot())
}

@Suite(.needsMiniLM) struct EmbedderTests {
    @Test func tokenIDsMatchReference() throws {
        guard let e = try requireEmbedder(), let ref = try loadReference() else { return }
        #expect(ref.sentences.count >= 5)
        for (sentence, r) in ref.sentences {
            #expect(e.tokenize(sentence) == r.ids, "ids of \(sentence)")
        }
    }

    @Test func embeddingsMatchReference() throws {
        guard let e = try requireEmbedder(), let ref = try loadReference() else { return }
        let sentences = ref.sentences.keys.sorted()
        // one batch through both threads, and each sentence alone: same vectors either way
        let batch = e.embed(sentences)
        for (i, s) in sentences.enumerated() {
            let c = cosine(batch[i], ref.sentences[s]!.embedding)
            #expect(c > 0.9999, "cosine \(c) for \(s)")
            let alone = e.embed(s)
            #expect(cosine(alone, batch[i].map(Double.init)) > 0.999999)
        }
    }

    @Test func truncatesAt256Tokens() throws {
        guard let e = try requireEmbedder() else { return }
        let long = Array(repeating: "word", count: 1000).joined(separator: " ")
        let ids = e.tokenize(long)
        #expect(ids.count == 256)
        #expect(ids.first == e.tokenizer.cls && ids.last == e.tokenizer.sep)
        let v = e.embed(long)
        #expect(abs(v.reduce(0) { $0 + $1 * $1 } - 1) < 1e-4)
    }
}
