import Foundation
@testable import KianaAI
import KianaCore
import KianaStore
import Testing

func unit(_ v: [Float]) -> [Float] {
    let n = v.reduce(0) { $0 + $1 * $1 }.squareRoot()
    return v.map { $0 / n }
}

/// Clustered vectors: unit centres plus per-cluster noise, normalised.
func clusteredVectors(_ n: Int, dim: Int, clusters: Int, seed: UInt64) -> [[Float]] {
    var r = SplitMix64(seed: 99)
    func g(_ r: inout SplitMix64) -> Float {
        let u1 = max(Float(r.next() >> 40) / Float(1 << 24), 1e-7)
        let u2 = Float(r.next() >> 40) / Float(1 << 24)
        return (-2 * log(u1)).squareRoot() * cos(2 * .pi * u2)
    }
    let centres = (0..<clusters).map { _ in unit((0..<dim).map { _ in g(&r) }) }
    var r2 = SplitMix64(seed: seed)
    return (0..<n).map { _ in
        let c = Int(r2.next() % UInt64(clusters))
        return unit(centres[c].map { $0 + 0.05 * g(&r2) })
    }
}

@Suite struct VectorIndexTests {
    @Test func exactScanFindsTheTrueNearest() {
        let vs = clusteredVectors(2000, dim: 64, clusters: 20, seed: 1)
        var m = VectorMatrix(dimension: 64)
        for v in vs { m.append(v) }
        let q = vs[123]
        let hits = m.exactSearch(q, k: 5)
        #expect(hits.first?.label == 123)
        // scores are sorted and equal the true dot products
        let truth = vs.enumerated().map { ($0.offset, zip($0.element, q).reduce(Float(0)) { $0 + $1.0 * $1.1 }) }.sorted { $0.1 > $1.1 }
        #expect(hits.map(\.label) == truth.prefix(5).map(\.0))
        #expect(abs(hits[1].score - truth[1].1) < 1e-5)
    }

    @Test func hnswRecallAgainstExactSearch() {
        let dim = 96
        let base = clusteredVectors(8000, dim: dim, clusters: 80, seed: 1)
        let queries = clusteredVectors(200, dim: dim, clusters: 80, seed: 2)
        var flat = VectorMatrix(dimension: dim)
        var g = HNSW(dimension: dim, m: 16, efConstruction: 100)
        for v in base {
            flat.append(v)
            g.insert(v)
        }
        var found = 0
        for q in queries {
            let truth = Set(flat.exactSearch(q, k: 10).map(\.label))
            found += Set(g.search(q, k: 10, ef: 128).map(\.label)).intersection(truth).count
        }
        let recall = Double(found) / Double(queries.count * 10)
        #expect(recall >= 0.98, "recall@10 \(recall)")
    }

    @Test func hnswSerializationRoundTripsAndRejectsDamage() throws {
        let vs = clusteredVectors(1500, dim: 32, clusters: 10, seed: 3)
        var g = HNSW(dimension: 32, m: 8, efConstruction: 40)
        for v in vs { g.insert(v) }
        g.markDeleted(7)
        let data = g.serialized()
        let back = try HNSW(serialized: data)
        #expect(back.count == g.count && back.deleted == [7])
        for q in vs.prefix(20) {
            #expect(back.search(q, k: 10, ef: 50).map(\.label) == g.search(q, k: 10, ef: 50).map(\.label))
            #expect(!back.search(q, k: 10, ef: 50).contains { $0.label == 7 })
        }
        // truncated, bit-flipped header, garbage: an error, never a crash
        #expect(throws: KianaAIError.self) { _ = try HNSW(serialized: data.prefix(data.count - 3)) }
        var flipped = data
        flipped[20] ^= 0xFF
        #expect(throws: KianaAIError.self) { _ = try HNSW(serialized: flipped) }
        #expect(throws: KianaAIError.self) { _ = try HNSW(serialized: Data("not an index".utf8)) }
    }
}

@Suite struct FusionTests {
    func id(_ n: UInt8) -> ItemID { try! ItemID(bytes: [UInt8](repeating: 0, count: 15) + [n]) }

    @Test func reciprocalRankFusionScores() {
        let fused = RankFusion.fuse(keyword: [(id(1), 9), (id(2), 5), (id(3), 1)], vector: [(id(3), 0.9), (id(1), 0.8), (id(4), 0.1)])
        // id1: 1/61 + 1/62; id3: 1/63 + 1/61; id2: 1/62; id4: 1/63
        #expect(fused.map(\.id) == [id(1), id(3), id(2), id(4)])
        #expect(abs(fused[0].score - (1.0 / 61 + 1.0 / 62)) < 1e-12)
        #expect(fused[1].keywordRank == 3 && fused[1].vectorRank == 1)
        #expect(fused[3].keywordRank == nil)
    }

    @Test(arguments: [1, 2, 5, 20])
    func fusionOfAListWithItselfKeepsItsOrder(n: Int) {
        let list = (0..<n).map { (id(UInt8($0)), Double(n - $0)) }
        #expect(RankFusion.fuse(keyword: list, vector: list).map(\.id) == list.map(\.0))
    }

    @Test func metrics() {
        #expect(abs(RankingMetricsCheck.ndcg(["a", "b"], ["a": 2]) - 1) < 1e-12)
        #expect(RankingMetricsCheck.ndcg(["x", "a"], ["a": 2]) < 1)
    }
}

/// nDCG as the benchmark computes it (kept here so the formula is pinned by a test).
enum RankingMetricsCheck {
    static func ndcg(_ ranked: [String], _ rel: [String: Int]) -> Double {
        func dcg(_ r: [Int]) -> Double { r.enumerated().reduce(0) { $0 + (pow(2, Double($1.element)) - 1) / log2(Double($1.offset) + 2) } }
        return dcg(ranked.map { rel[$0] ?? 0 }) / dcg(rel.values.sorted(by: >))
    }
}

@Suite struct ChunkerTests {
    @Test func sectionsAreNeverMixedAndHeadingsBecomePaths() {
        let doc = "# Router\n\nWifi password is Sunflower42.\n\n## Reset\n\nHold reset ten seconds.\n\n# Car\n\nOil change every 15000 km."
        let c = Chunker().chunks(doc)
        #expect(c.map(\.heading) == ["Router", "Router › Reset", "Car"])
        #expect(c[0].text == "Wifi password is Sunflower42.")
    }

    @Test func longTextIsSplitWithOverlapAndNothingLost() {
        let sentences = (0..<200).map { "Sentence number \($0) says something about topic \($0 % 7)." }
        var doc = ""
        for (i, s) in sentences.enumerated() { doc += s + (i % 5 == 4 ? "\n\n" : " ") }
        let chunker = Chunker()
        let c = chunker.chunks(doc)
        #expect(c.count > 5)
        #expect(c.allSatisfy { $0.text.count <= chunker.maximum + chunker.overlap + 2 })
        let joined = c.map(\.text).joined(separator: " ")
        for s in sentences { #expect(joined.contains(s), "lost: \(s)") }
        // consecutive chunks share text (the overlap)
        let shared = zip(c, c.dropFirst()).filter { a, b in Chunker.sentences(b.text).first.map { a.text.contains($0) } ?? false }
        #expect(shared.count >= c.count / 2)
    }

    @Test func hugeParagraphWithoutSentenceEndsIsCut() {
        let doc = String(repeating: "word ", count: 2000)
        let c = Chunker().chunks(doc)
        #expect(c.count >= 8)
        #expect(c.allSatisfy { $0.text.count <= 1200 + 150 + 2 })
    }

    /// Upload names are plain names a user can read: no control or invisible characters (a
    /// right-to-left override, a zero-width space), but the joiners real names need.
    @Test(arguments: [
        ("notes.md", true), ("نامه\u{200C}ها.md", true), ("👨\u{200D}👩.md", true), ("\u{202E}gnp.md", false),
        ("report\u{200B}.pdf", false), ("a\u{2066}b.md", false), ("tab\there.md", false), (".hidden.md", false), ("a/b.md", false),
    ])
    func uploadNamesArePlain(_ name: String, _ accepted: Bool) {
        #expect(((try? TextExtraction.uploadName(name)) != nil) == accepted, "\(name.debugDescription)")
    }

    @Test("Text that is not UTF-8 is read as Windows-1252, as Foundation's codec reads it; UTF-8 stays as it is")
    func windows1252Fallback() throws {
        let latin1 = Data("Der Schl\u{FC}ssel liegt bei Frau M\u{FC}ller, 5 \u{20AC}.".data(using: .windowsCP1252)!)
        #expect(String(validating: latin1, as: UTF8.self) == nil)
        #expect(TextExtraction.decode(latin1) == "Der Schl\u{FC}ssel liegt bei Frau M\u{FC}ller, 5 \u{20AC}.")
        // Every byte against Foundation's (CoreFoundation's) Windows-1252, one at a time; the five
        // it leaves undefined become U+FFFD.
        let undefined: Set<UInt8> = [0x81, 0x8D, 0x8F, 0x90, 0x9D]
        for byte in UInt8(0)...255 {
            let ours = TextExtraction.windows1252(Data([byte]))
            if undefined.contains(byte) {
                #expect(ours == "\u{FFFD}", "byte \(byte)")
            } else {
                #expect(ours == String(data: Data([byte]), encoding: .windowsCP1252), "byte \(byte)")
            }
        }
        // One stray byte in a UTF-8 file is one character; the rest stays UTF-8.
        let mixed = Data("Grüße – Müller ".utf8) + Data([0x96]) + Data(" Straße".utf8)
        #expect(TextExtraction.decode(mixed) == "Grüße – Müller \u{2013} Straße")
        #expect(TextExtraction.decode(Data([0xE2, 0x82])) == "\u{E2}\u{201A}", "a cut sequence is two 1252 bytes")
        // UTF-16 with its byte-order mark, either order; an odd trailing byte is U+FFFD.
        let le = Data([0xFF, 0xFE]) + "Grüße".data(using: .utf16LittleEndian)!
        let be = Data([0xFE, 0xFF]) + "Grüße\r\n🙂".data(using: .utf16BigEndian)!
        #expect(TextExtraction.decode(le) == "Grüße")
        #expect(TextExtraction.decode(be) == "Grüße\n🙂")
        #expect(TextExtraction.decode(le + Data([0x41])) == "Grüße\u{FFFD}")
        // UTF-32 with its mark, either order (its little-endian mark begins like UTF-16's), as Foundation encodes it.
        let text32 = "Grüße\r\n🙂 €"
        #expect(TextExtraction.decode(Data([0xFF, 0xFE, 0, 0]) + text32.data(using: .utf32LittleEndian)!) == "Grüße\n🙂 €")
        #expect(TextExtraction.decode(Data([0, 0, 0xFE, 0xFF]) + text32.data(using: .utf32BigEndian)!) == "Grüße\n🙂 €")
        // A surrogate value and a cut unit later on are one U+FFFD each, in either order.
        #expect(TextExtraction.decode(Data([0xFF, 0xFE, 0, 0, 0x41, 0, 0, 0, 0x00, 0xD8, 0, 0, 0x42])) == "A\u{FFFD}\u{FFFD}")
        #expect(TextExtraction.decode(Data([0, 0, 0xFE, 0xFF, 0, 0, 0, 0x41, 0, 0, 0xD8, 0, 0x42])) == "A\u{FFFD}\u{FFFD}")
        #expect(TextExtraction.decode(Data([0xFF, 0xFE, 0, 0]) + "Hi".data(using: .utf16LittleEndian)!) == "\u{0}Hi", "UTF-16 starting with U+0000")
        let utf8 = Data("Schlüssel \u{FEFF}ok\r\nnext".utf8)
        #expect(TextExtraction.decode(utf8) == "Schlüssel \u{FEFF}ok\nnext")
        #expect(TextExtraction.decode(Data([0xEF, 0xBB, 0xBF]) + Data("bom".utf8)) == "bom")
    }

    /// Bytes that are not text (random, compressed) named .md are refused as such; text in the
    /// encodings `decode` reads, with a few stray bytes, is not.
    @Test func binaryBytesAreNotTakenForText() throws {
        var rng = SystemRandomNumberGenerator()
        // Random bytes without a zero byte (a zero is caught by the ledger already).
        let random = Data((0..<20_000).map { _ in UInt8.random(in: 1...255, using: &rng) })
        #expect {
            _ = try TextExtraction.text(of: "/x/notes.md", data: random)
        } throws: { ($0 as? KianaAIError)?.message.contains("does not read as text") == true }
        #expect(throws: KianaAIError.self) { try TextExtraction.text(of: "/x/page.html", data: random) }
        let prose = String(repeating: "Der Schlüssel liegt bei Frau Müller, 5 €. Grüße – 🙂\n\tTabs\r\n", count: 200)
        for data in [Data(prose.utf8), prose.data(using: .windowsCP1252, allowLossyConversion: true)!, Data([0xFF, 0xFE]) + prose.data(using: .utf16LittleEndian)!] {
            #expect(try TextExtraction.text(of: "/x/notes.md", data: data).contains("Frau M"))
        }
        // A few stray bytes in a long text stay text.
        var stray = Data(prose.utf8)
        for i in stride(from: 0, to: stray.count, by: 500) { stray[i] = 0x01 }
        #expect(try TextExtraction.text(of: "/x/notes.txt", data: stray).contains("Frau M"))
    }

    @Test func htmlBecomesTextWithHeadings() {
        let html =
            "<html><head><title>T</title><script>var x = '<p>';</script></head><body><h2>Pasta &amp; Sauce</h2><p>Boil&nbsp;water.<br>Add salt &#8364;1 &#x41;.</p><!-- hidden --><ul><li>one</li><li>two</li></ul></body></html>"
        let t = TextExtraction.htmlText(html)
        #expect(t.contains("## Pasta & Sauce"))
        #expect(t.contains("Boil water.\nAdd salt €1 A."))
        #expect(!t.contains("var x") && !t.contains("hidden") && !t.contains("<"))
        #expect(Chunker().chunks(t).first?.heading == "Pasta & Sauce")
    }
}

@Suite struct TokenizerTests {
    @Test(.needsMiniLM) func basicRules() throws {
        guard let e = try requireEmbedder() else { return }
        let t = e.tokenizer
        // accents stripped, lower-cased, punctuation split, control characters dropped
        #expect(t.encode("CAFÉ,x\u{0007}y") == t.encode("cafe , xy"))
        // CJK ideographs become single tokens; a too-long word is one [UNK]
        #expect(t.encode("日本").count == 4)
        #expect(t.encode(String(repeating: "a", count: 101)) == [t.cls, t.unk, t.sep])
        #expect(t.encode("") == [t.cls, t.sep])
    }
}
