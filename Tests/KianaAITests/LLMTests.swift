import Foundation
import KianaAI
import KianaTestSupport
import PropertyBased
import Testing

/// Loaded once: every engine test uses the same mapped file.
let sharedLlama: LlamaModel? = {
    guard Models.hasSmolLM else { return nil }
    return try? LlamaModel(path: Models.smolLM)
}()

func requireLlama() -> LlamaModel? {
    if let m = sharedLlama { return m }
    if Shared.isCI { Issue.record("SmolLM2 is missing from \(Models.directory); setup must fetch it") }
    return nil
}

struct SmolReference: Decodable {
    struct Tok: Decodable {
        var text: String
        var ids: [Int32]
    }
    struct Greedy: Decodable {
        var prompt: String
        var continuation_starts_with: String
    }
    var tokenize: [Tok]
    var greedy: [Greedy]
}

func smolReference() throws -> SmolReference? {
    let rel = "vectors/smollm2/reference.json"
    guard Shared.exists(rel) else {
        if Shared.isCI { Issue.record("../shared/\(rel) is missing") }
        return nil
    }
    return try JSONDecoder().decode(SmolReference.self, from: Data(contentsOf: Shared.root.appendingPathComponent(rel)))
}

@Suite(.needsModels) struct LlamaReferenceTests {
    @Test func tokenIDsMatchLlamaCpp() throws {
        guard let m = requireLlama(), let ref = try smolReference() else { return }
        #expect(!ref.tokenize.isEmpty)
        for t in ref.tokenize {
            #expect(m.tokenizer.encode(t.text) == t.ids, "\(t.text)")
            #expect(m.tokenizer.decode(t.ids, special: true) == t.text)
        }
    }

    @Test func greedyContinuationsMatchLlamaCpp() throws {
        guard let m = requireLlama(), let ref = try smolReference() else { return }
        #expect(!ref.greedy.isEmpty)
        let session = LlamaSession(model: m, contextSize: 512, threads: 2)
        for g in ref.greedy {
            var o = GenerationOptions()
            o.sampling = .greedy
            o.maxTokens = g.continuation_starts_with.utf8.count + 4
            let r = try session.generate(prompt: m.tokenizer.encode(g.prompt), options: o)
            #expect(r.text.hasPrefix(g.continuation_starts_with), "\(g.prompt) → \(r.text)")
        }
    }

    @Test func batchedPromptGivesTheSameLogitsAsOneTokenAtATime() throws {
        guard let m = requireLlama() else { return }
        let ids = m.tokenizer.encode("The capital of France is Paris, and the capital of Germany is")
        let a = LlamaSession(model: m, contextSize: 128, threads: 2, batchSize: 32)
        try a.eval(ids)
        let b = LlamaSession(model: m, contextSize: 128, threads: 1, batchSize: 1)
        for t in ids { try b.eval([t]) }
        let diff = zip(a.logits, b.logits).map { abs($0 - $1) }.max() ?? 1
        #expect(diff < 1e-3, "max logit difference \(diff)")
        #expect(a.logits.firstIndex(of: a.logits.max()!) == b.logits.firstIndex(of: b.logits.max()!))
    }

    @Test func promptCacheIsReusedAndContextOverflowIsAnError() throws {
        guard let m = requireLlama() else { return }
        let s = LlamaSession(model: m, contextSize: 64, threads: 2)
        var o = GenerationOptions()
        o.sampling = .greedy
        o.maxTokens = 4
        let p = m.tokenizer.encode("One two three four five")
        _ = try s.generate(prompt: p, options: o)
        let again = try s.generate(prompt: p + m.tokenizer.encode(" six"), options: o)
        #expect(again.reusedTokens == p.count)
        let long = [Int32](repeating: p[0], count: 80)
        #expect(throws: KianaAIError.self) { _ = try s.generate(prompt: long, options: o) }
        // Generation that reaches the end of the window stops with a reason, nothing dropped.
        o.maxTokens = 1000
        let r = try s.generate(prompt: Array(long.prefix(50)), options: o)
        #expect(r.stopReason == .contextFull || r.stopReason == .endOfGeneration)
    }

    @Test func stopStringsEndGenerationAndAreNotEmitted() throws {
        guard let m = requireLlama() else { return }
        let s = LlamaSession(model: m, contextSize: 256, threads: 2)
        var o = GenerationOptions()
        o.sampling = .greedy
        o.maxTokens = 40
        o.stop = ["Red"]
        let streamed = Locked("")
        let r = try s.generate(prompt: m.tokenizer.encode("<|im_start|>user\nList three primary colors.<|im_end|>\n<|im_start|>assistant\n"), options: o) {
            piece in
            streamed.update { $0 += piece }
            return true
        }
        #expect(streamed.get == r.text)
        #expect(r.stopReason == .stopString)
        #expect(r.text == "The primary colors are:\n\n- ")
    }

    @Test func seededSamplingIsReproducibleAndTopK1IsGreedy() throws {
        guard let m = requireLlama() else { return }
        let s = LlamaSession(model: m, contextSize: 256, threads: 2)
        let p = m.tokenizer.encode("Once upon a time")
        var o = GenerationOptions()
        o.maxTokens = 24
        o.sampling.temperature = 1.0
        o.sampling.seed = 42
        let a = try s.generate(prompt: p, options: o)
        let b = try s.generate(prompt: p, options: o)
        #expect(a.tokens == b.tokens)
        o.sampling.seed = 43
        let c = try s.generate(prompt: p, options: o)
        o.sampling = .greedy
        let g = try s.generate(prompt: p, options: o)
        var k1 = GenerationOptions()
        k1.maxTokens = 24
        k1.sampling.topK = 1
        k1.sampling.repeatPenalty = 1
        k1.sampling.seed = 7
        let t = try s.generate(prompt: p, options: k1)
        #expect(t.tokens == g.tokens)
        #expect(a.tokens != c.tokens || a.tokens != g.tokens)
    }
}

@Suite struct GGUFErrorTests {
    func write(_ bytes: [UInt8]) throws -> String {
        let p = FileManager.default.temporaryDirectory.appendingPathComponent("kiana-\(UUID().uuidString).gguf").path
        try Data(bytes).write(to: URL(fileURLWithPath: p))
        return p
    }

    @Test("Not GGUF, wrong version, truncated header, truncated tensor data: one clear error each")
    func badFiles() throws {
        let magicBad = try write(Array("GGML".utf8) + [3, 0, 0, 0] + [UInt8](repeating: 0, count: 16))
        let version = try write(Array("GGUF".utf8) + [9, 0, 0, 0] + [UInt8](repeating: 0, count: 16))
        let huge = try write(Array("GGUF".utf8) + [3, 0, 0, 0] + [0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0] + [0, 0, 0, 0, 0, 0, 0, 0])
        defer { for p in [magicBad, version, huge] { try? FileManager.default.removeItem(atPath: p) } }
        for (p, words) in [(magicBad, "bad magic"), (version, "version 9"), (huge, "count exceeds")] {
            do {
                _ = try GGUFFile(path: p)
                Issue.record("\(p) loaded")
            } catch {
                #expect(error.code == .modelCorrupt)
                #expect(error.message.contains(words), "\(error.message)")
            }
        }
        do {
            _ = try GGUFFile(path: "/nonexistent/x.gguf")
            Issue.record("loaded")
        } catch { #expect(error.code == .modelMissing) }
        guard Models.hasSmolLM else { return }
        // The real file cut at several points: always an error, never a crash.
        let full = try Data(contentsOf: URL(fileURLWithPath: Models.smolLM), options: .alwaysMapped)
        for cut in [30, 1000, 500_000, 1_600_000, full.count - 100] {
            let p = try write([UInt8](full.prefix(cut)))
            defer { try? FileManager.default.removeItem(atPath: p) }
            do {
                _ = try LlamaModel(path: p)
                Issue.record("a file cut at \(cut) bytes loaded")
            } catch {
                #expect(error.code == .modelCorrupt, "\(error)")
                #expect(
                    error.message.contains("truncated") || error.message.contains("outside the file") || error.message.contains("exceeds"),
                    "\(cut): \(error.message)")
            }
        }
    }

    @Test func metadataAndTensorsOfTheDefaultModel() throws {
        guard let m = requireLlama() else { return }
        let c = m.config
        let dims: [Int] = [c.layers, c.dim, c.heads, c.kvHeads, c.headDim, c.ffn, c.vocab, c.contextLength, c.ropeDim]
        #expect(dims == [30, 576, 9, 3, 64, 1536, 49152, 8192, 64])
        #expect(c.ropeBase == 100000 && abs(c.eps - 1e-5) < 1e-9)
        #expect(m.gguf.quantisation == "Q4_1")
        #expect(m.gguf.tensors.count == 272)
        #expect((130_000_000...140_000_000).contains(m.gguf.parameterCount))
        #expect(ChatTemplate.detect(m.chatTemplate) == .chatML)
    }
}

@Suite struct BPETests {
    @Test("Streaming decode of any token sequence equals whole decode, in whole characters")
    func streamingDecode() async throws {
        guard let m = requireLlama() else { return }
        let tok = m.tokenizer
        await propertyCheck(count: 200, input: Gen.uint64(in: 0...49151).array(of: 1...24)) { raw in
            let ids = raw.map(Int32.init)
            var d = BPETokenizer.StreamDecoder(tok)
            var s = ""
            for t in ids { s += d.push(t) }
            s += d.flush()
            #expect(s == tok.decode(ids))
        }
    }

    @Test(
        "encode ∘ decode is the identity on text",
        arguments: [
            "Grüße aus München! 😀 — naïve café", "日本語のテキストと中文", "   leading and trailing   ", "tabs\tand\nnewlines\r\n",
            "it's they're we've I'm you'll he'd", "1234567890 3.14159 -42", "<|im_start|> literal", "", "\u{0}\u{1}control",
        ])
    func roundTrip(_ text: String) throws {
        guard let m = requireLlama() else { return }
        #expect(m.tokenizer.decode(m.tokenizer.encode(text), special: true) == text)
    }

    @Test func controlTokensMatchWholeOnlyWhenAsked() throws {
        guard let m = requireLlama() else { return }
        let t = m.tokenizer
        #expect(t.encode("<|im_end|>") == [2])
        #expect(t.encode("<|im_end|>", special: false).count > 1)
        #expect(t.endOfGeneration.contains(2))
        #expect(t.encode("Hello 12") == t.encode("Hello") + t.encode(" ") + t.encode("1") + t.encode("2"))
    }
}

@Suite struct GroundingTests {
    let sources = (1...6).map { GroundingSource(id: "id\($0)", title: nil, text: String(repeating: "word\($0) ", count: 200), source: nil) }

    @Test("The question is never cut: sources and history give way, or it is an error")
    func budget() throws {
        let count: (String) -> Int = { $0.split(separator: " ").count + 1 }
        let history = (0..<10).flatMap {
            [ChatMessage(.user, "question \($0) " + String(repeating: "x ", count: 50)), ChatMessage(.assistant, "answer \($0)")]
        }
        let q = "What is word3?"
        let p = try Grounding.build(question: q, sources: sources, history: history, contextSize: 1024, answerTokens: 256, countTokens: count)
        #expect(p.messages.last == ChatMessage(.user, q))
        #expect(p.messages.first?.role == .system)
        #expect(p.messages.reduce(0) { $0 + count($1.content) + 16 } <= 1024 - 256)
        #expect(p.droppedSources > 0 && p.droppedHistory > 0)
        #expect(p.messages.dropFirst().first?.role != .assistant)
        let long = String(repeating: "very long question ", count: 400)
        #expect(throws: KianaAIError.self) {
            _ = try Grounding.build(question: long, sources: sources, history: [], contextSize: 512, answerTokens: 128, countTokens: count)
        }
    }

    @Test(
        "Citations: [n] markers (also lists and 'Source n'), else the source the answer repeats",
        arguments: [
            ("It is under the pot [2].", [2]),
            ("See [1, 3] and [Source 2].", [1, 3, 2]),
            ("Nothing relevant [9].", []),
            ("The answer mentions word4 and word4 again with word4.", []),
        ])
    func citations(_ answer: String, _ expected: [Int]) {
        #expect(Grounding.citations(answer: answer, sources: sources) == expected)
    }

    @Test func citationByOverlap() {
        let s = [
            GroundingSource(id: "a", title: nil, text: "Our wifi password is Sunflower42.", source: nil),
            GroundingSource(id: "b", title: nil, text: "The spare key is under the third flower pot.", source: nil),
        ]
        #expect(Grounding.citations(answer: "The spare key is under the third flower pot, near the door.", sources: s) == [2])
        #expect(Grounding.citations(answer: "I do not know.", sources: s) == [])
        // A rambling answer that restates a short source still cites it.
        let long =
            "Our wifi password is Sunflower42, which is a special secret code used for routers, tablets, phones, laptops, printers and television devices everywhere in the household."
        #expect(Grounding.citations(answer: long, sources: s) == [1])
    }

    @Test(
        "remember that … / merk dir …",
        arguments: [
            ("Remember that the boiler is serviced in March", "The boiler is serviced in March"),
            ("merk dir, dass der Schlüssel im Blumentopf liegt", "Der Schlüssel im Blumentopf liegt"),
            ("Merk dir: Minka frisst nur Thunfisch", "Minka frisst nur Thunfisch"),
            ("What do you remember?", nil),
            ("remember that   ", nil),
            // Asked politely: the question mark is the request's, not the fact's.
            ("Can you remember that the bakery opens at seven?", "The bakery opens at seven."),
            ("could you please remember that Minka eats tuna", "Minka eats tuna."),
            ("Kannst du dir merken, dass Minka Thunfisch frisst?", "Minka Thunfisch frisst."),
            // A question after the command is asked, not stored.
            ("Remember: what is the wifi password?", nil),
            ("remember that where is the key?", nil),
        ])
    func remember(_ text: String, _ fact: String?) {
        #expect(Grounding.rememberCommand(text) == fact)
    }

    @Test("A remember command without its fact is recognised, not asked", arguments: [
        ("remember that", true), ("Remember that…", true), ("  merk dir, dass  ", true), ("Merk dir:", true), ("please remember", true),
        ("merk dir das", true), ("Bitte merk dir das!", true), ("remember this", true),
        ("remember that the sky is blue", false), ("What should I remember?", false), ("remembering", false),
    ])
    func bareRemember(_ text: String, _ bare: Bool) {
        #expect(Grounding.isBareRememberCommand(text) == bare)
        if bare { #expect(Grounding.rememberCommand(text) == nil) }
    }

    @Test("Greetings, thanks and acknowledgements alone are small talk; a question with them is not", arguments: [
        ("hi", "Hello!"), ("Hello there!", "Hello!"), ("Thanks!", "You're welcome."), ("thank you very much :)", "You're welcome."),
        ("Vielen Dank!", "Gern geschehen."), ("ok", "Alright."), ("Guten Morgen", "Hallo!"),
        ("Vielen, vielen Dank!", "Gern geschehen."), ("danke schoen", "Gern geschehen."), ("thx", "You're welcome."), ("Tschüss", "Tschüss!"),
        ("and his number?", nil), ("Hi, where is the key?", nil), ("Thanks, and the wifi password?", nil), ("okay so what is the code", nil),
        ("ok 42", nil), ("hi2", nil),
    ])
    func smallTalk(_ text: String, _ reply: String?) {
        let got = Grounding.smallTalkReply(text)
        if let reply { #expect(got?.hasPrefix(reply) == true, "\(text): \(got ?? "nil")") } else { #expect(got == nil, "\(text): \(got ?? "")") }
    }

    @Test func chatMLRendering() {
        let s = ChatTemplate.chatML.render([ChatMessage(.system, "S"), ChatMessage(.user, "Q")])
        #expect(s == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n")
        #expect(ChatTemplate.detect("{{ bos_token }}{% for m in messages %}[INST]") == nil)
    }
}
