import Foundation
import KianaAI
import KianaCore
import KianaNode
import KianaStore
import Synchronization

/// The committed question-answering set (Resources/qa-set.json): questions over the retrieval
/// set's passages with short expected answers (each fact a list of accepted variants), the
/// passages that support them, a kind, a language and a dev/test split.
public struct QASet: Decodable, Sendable {
    public struct Question: Decodable, Sendable {
        public var id: String
        public var split: String
        public var lang: String
        public var kind: String
        public var question: String
        public var type: String
        public var answers: [[String]]
        public var support: [String]
        public var answerable: Bool { !answers.isEmpty }
    }
    public var questions: [Question]

    public static func load(path: String? = nil) throws -> QASet {
        try BundledSet.load(path: path, resource: "qa-set", what: "question-answering set")
    }
}

/// How an answer is scored against a question of the set.
public enum AnswerScoring {
    /// Lower case, letters and digits only (spaces, punctuation and citation markers gone), so
    /// "0731 602 118" matches "0731-602118".
    public static func normalise(_ s: String) -> String {
        String(Trust.stripMarkers(s).lowercased().filter { $0.isLetter || $0.isNumber })
    }

    /// Every fact of the question appears (any of its variants): as whole words, case and
    /// punctuation ignored ("5 s" is not in "15 seconds"), or, for variants that are numbers,
    /// with spaces and punctuation ignored ("0761 387 2290" is in "07613872290").
    public static func correct(_ answer: String, _ q: QASet.Question) -> Bool {
        let clean = Trust.stripMarkers(answer)
        let words = " " + Words.tokens(clean).joined(separator: " ") + " "
        let squeezed = normalise(clean)
        return q.answerable
            && q.answers.allSatisfy { variants in
                variants.contains { v in
                    let t = Words.tokens(v).joined(separator: " ")
                    if t.isEmpty { return false }
                    if words.contains(" \(t) ") { return true }
                    let digits = normalise(v)
                    return digits.allSatisfy(\.isNumber) && digits.count >= 4 && squeezed.contains(digits)
                }
            }
    }

    /// Phrases by which a plain model says it does not know (the baseline has no abstention
    /// flag); the pipeline's own abstention sentence contains one of them.
    static let abstentionPhrases = [
        "don't know", "do not know", "not contain", "no information", "not mentioned", "not provided", "no sources",
        "weiß ich noch nicht", "weiß ich nicht", "keine information", "nicht bekannt",
    ]

    public static func abstains(_ answer: String) -> Bool {
        let a = answer.lowercased().replacingOccurrences(of: "’", with: "'")
        return abstentionPhrases.contains { a.contains($0) }
    }

    /// Number groups of the answer (markers removed) that appear in none of the texts.
    public static func alteredNumbers(_ answer: String, in texts: [String]) -> [String] {
        let known = texts.flatMap { Words.numberGroups($0) }
        return Words.numberGroups(Trust.stripMarkers(answer)).filter { g in !known.contains { $0.contains(g) } }
    }

    /// The benchmark's own support test for one answer sentence (independent of the pipeline's
    /// check, which allows inflections): every number group verbatim in the cited sources or the
    /// question, and at least 90% of its content words, exactly as written, there too.
    public static func sentenceSupported(_ sentence: String, cited: [String], question: String) -> Bool {
        let text = Trust.stripMarkers(sentence)
        if !alteredNumbers(text, in: cited + [question]).isEmpty { return false }
        let words = Words.content(text)
        guard !words.isEmpty else { return false }
        let known = Set(cited.flatMap { Words.content($0) } + Words.content(question))
        let hit = words.filter { known.contains($0) }.count
        return Double(hit) >= 0.9 * Double(words.count)
    }
}

/// `kiana bench answers`: runs the answer pipeline as shipped and, in the same run, the plain
/// grounded pipeline it replaced (the baseline), over one split of the question-answering set,
/// against a fresh node holding the retrieval set's passages.
public struct AnswerBench {
    public var modelDirectory: String
    public var setPath: String?
    public var passagesPath: String?
    public var split = "test"
    public var limit: Int?
    /// Answer length limit in tokens, both pipelines (the shipped one drafts at most 80).
    public var maxTokens = 128
    /// The backend that answers (the embedded model by default).
    public var backend = BackendConfig()
    /// A second backend run in the same way, e.g. llama.cpp's llama-server (OpenAI-compatible).
    public var compare: BackendConfig?

    public init(modelDirectory: String) { self.modelDirectory = modelDirectory }

    /// One question's outcome in one pipeline.
    public struct Outcome: Sendable, Codable {
        public var id: String
        public var lang: String
        public var kind: String
        public var type: String
        public var answerable: Bool
        public var answer: String
        public var correct: Bool
        public var abstained: Bool
        public var quoted: Bool
        public var cited: [String]
        public var support: [String]
        public var sentences: Int
        public var unsupported: Int
        public var numbersAltered: Bool?
        public var firstText: Double
        public var total: Double
    }

    /// Aggregates of a group of outcomes.
    public struct Summary: Sendable, Codable {
        public var group: String
        public var answerable: Int
        public var unanswerable: Int
        public var accuracy: Double?
        public var exactCopy: Double?
        public var citationPrecision: Double?
        public var citationRecall: Double?
        public var correctAbstention: Double?
        public var falseAbstention: Double?
        public var unsupportedSentences: Double?
        public var quoted: Double?
        public var firstTextP50: Double?
        public var totalP50: Double?
    }

    public struct Run: Sendable, Codable {
        public var pipeline: String
        public var backend: String
        public var outcomes: [Outcome]
        public var summaries: [Summary]
    }

    /// What a run answers from: the split's questions, a fresh node in a temporary directory
    /// holding every passage, and each item's passage ID. `close()` removes the directory.
    struct Fixture {
        var questions: [QASet.Question]
        var textOf: [String: String]
        var node: Node
        var directory: String
        var passageOf: [String: String]
        func close() { try? FileManager.default.removeItem(atPath: directory) }
    }

    func fixture(progress: (String) -> Void) throws -> Fixture {
        let set = try QASet.load(path: setPath)
        let passages = try RetrievalSet.load(path: passagesPath).passages
        let questions = set.questions.filter { split == "all" || $0.split == split }
        guard !questions.isEmpty else { throw KianaAIError(.invalidInput, "no questions in split \(split)") }
        let (node, dir, passageOf) = try makeNode(passages, progress: progress)
        return Fixture(
            questions: questions, textOf: Dictionary(uniqueKeysWithValues: passages.map { ($0.id, $0.title + " " + $0.text) }), node: node,
            directory: dir, passageOf: passageOf)
    }

    /// A fresh node in a temporary directory with every passage as a knowledge item, and the
    /// passage ID of each item.
    func makeNode(_ passages: [RetrievalSet.Passage], progress: (String) -> Void) throws -> (Node, String, [String: String]) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kiana-answers-\(UUID().uuidString)").path
        let node = try Node.initialize(directory: DataDirectory(path: dir), name: "bench")
        var passageOf: [String: String] = [:]
        var ops: [KnowledgeOp] = []
        for p in passages {
            let id = ItemID.random()
            passageOf[id.description] = p.id
            ops.append(.put(id, KnowledgeFields(title: p.title, text: p.text, tags: p.tags, source: "retrieval-set#\(p.id)")))
        }
        for start in stride(from: 0, to: ops.count, by: 200) {
            _ = try node.store.write(Array(ops[start..<min(start + 200, ops.count)]), identity: node.identity, now: currentMillis())
        }
        progress("embedding \(passages.count) passages")
        return (node, dir, passageOf)
    }

    public func run(pipelines: [String] = ["shipped", "baseline"], progress: @escaping (String) -> Void) async throws -> [Run] {
        let f = try fixture(progress: progress)
        defer { f.close() }
        let questions = limit.map { Array(f.questions.prefix($0)) } ?? f.questions
        var runs: [Run] = []
        for config in [backend] + (compare.map { [$0] } ?? []) {
            let assistant = try LocalAssistant(node: f.node, config: config, modelDirectory: modelDirectory)
            runs += try await run(assistant, questions: questions, pipelines: pipelines, textOf: f.textOf, passageOf: f.passageOf, progress: progress)
        }
        return runs
    }

    func run(
        _ assistant: LocalAssistant, questions: [QASet.Question], pipelines: [String], textOf: [String: String],
        passageOf: [String: String], progress: @escaping (String) -> Void
    ) async throws -> [Run] {
        var runs: [Run] = []
        for pipeline in pipelines {
            var outcomes: [Outcome] = []
            for (n, q) in questions.enumerated() {
                var options = AskOptions()
                options.persist = false
                options.maxTokens = maxTokens
                options.trusted = pipeline == "shipped"
                let clock = ContinuousClock()
                let start = clock.now
                let first = FirstText()
                let r = try await assistant.ask(q.question, options: options) { _ in
                    first.mark(start.duration(to: clock.now))
                    return true
                }
                let total = start.duration(to: clock.now)
                let cited = r.citations.compactMap { passageOf[$0.id] }
                let citedTexts = cited.compactMap { textOf[$0] }
                let promptTexts = r.sources.map { ($0.title ?? "") + " " + $0.text }
                // the baseline has no abstention flag: its refusals are recognised by their words
                let abstained = options.trusted ? r.abstained : AnswerScoring.abstains(r.answer)
                // the note before an answer from a neighbour's note is no claim from the sources:
                // every measure below reads the answer without it
                let claimed = r.note.map { String(r.answer.dropFirst($0.count + 1)) } ?? r.answer
                let sentences = abstained ? [] : Sentences.split(Trust.stripMarkers(claimed))
                let unsupported = sentences.filter {
                    !AnswerScoring.sentenceSupported($0, cited: citedTexts.isEmpty ? promptTexts : citedTexts, question: q.question)
                }.count
                var altered: Bool?
                if q.answerable, ["number", "date", "code"].contains(q.type), !abstained {
                    altered = !AnswerScoring.alteredNumbers(claimed, in: q.support.compactMap { textOf[$0] } + [q.question]).isEmpty
                }
                outcomes.append(
                    Outcome(
                        id: q.id, lang: q.lang, kind: q.kind, type: q.type, answerable: q.answerable, answer: r.answer,
                        correct: !abstained && AnswerScoring.correct(claimed, q), abstained: abstained, quoted: r.quoted,
                        cited: cited, support: q.support, sentences: sentences.count, unsupported: unsupported, numbersAltered: altered,
                        firstText: seconds(first.value ?? total), total: seconds(total)))
                if (n + 1) % 10 == 0 || n + 1 == questions.count { progress("\(assistant.label), \(pipeline): \(n + 1)/\(questions.count) questions") }
            }
            runs.append(Run(pipeline: pipeline, backend: assistant.label, outcomes: outcomes, summaries: Self.summarise(outcomes)))
        }
        return runs
    }

    /// Calibration on a split (the dev split; never the test split), no model calls: for every
    /// combination of the evidence weights and the unknown-word penalty on a grid, how often the
    /// best evidence sentence holds the expected answer, and the abstention threshold that best
    /// separates answerable from unanswerable questions (most correct abstentions minus false
    /// abstentions); the 15 best combinations by the sum of the two, best first.
    public func calibrate(verbose: Bool = false, progress: @escaping (String) -> Void) async throws -> String {
        let f = try fixture(progress: progress)
        defer { f.close() }
        let (questions, passageOf) = (f.questions, f.passageOf)
        let assistant = try LocalAssistant(node: f.node, config: backend, modelDirectory: modelDirectory)
        // per question: every sentence's features and whether it holds the answer
        var rows: [(q: QASet.Question, sentences: [(EvidenceSentence, Bool)], unknown: Bool)] = []
        var retrieved: [String: (Int, Int)] = [:]  // kind: (questions, with every supporting passage retrieved)
        var detail = ""
        let current = TrustSettings()
        for q in questions {
            let found = try await assistant.evidence(q.question)
            let (sources, ranked) = (found.sources, found.ranked)
            rows.append((q, ranked.map { ($0, AnswerScoring.correct($0.text, q)) }, !found.unknownTerms.isEmpty))
            let got = Set(sources.compactMap { passageOf[$0.id] })
            let all = q.support.allSatisfy(got.contains)
            retrieved[q.kind, default: (0, 0)].0 += 1
            if all { retrieved[q.kind, default: (0, 0)].1 += 1 }
            if verbose {
                let best = ranked.first
                let holds = best.map { AnswerScoring.correct($0.text, q) } ?? false
                detail += String(
                    format: "%@ %@ score=%.2f retrieved=%@ holds=%@ unknown=%@ q=%@ best=%@\n", q.id, q.kind, best?.score ?? 0, "\(all)", "\(holds)",
                    found.unknownTerms.joined(separator: ","), q.question, best?.text ?? "-")
            }
        }
        var out = detail + "calibration on split \(split): \(questions.count) questions (\(questions.filter(\.answerable).count) answerable)\n"
        out += "  supporting passages all retrieved: " + retrieved.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value.1)/\($0.value.0)" }.joined(separator: ", ") + "\n"
        let unknownOK = Double(rows.filter { !$0.q.answerable && $0.unknown }.count) / Double(max(1, rows.filter { !$0.q.answerable }.count))
        let unknownBad = Double(rows.filter { $0.q.answerable && $0.unknown }.count) / Double(max(1, rows.filter(\.q.answerable).count))
        out += String(format: "  a word the knowledge base lacks: %.3f of unanswerable, %.3f of answerable questions\n", unknownOK, unknownBad)
        out += "  (below: abstention = a word the knowledge base lacks, or the best evidence scores under the threshold)\n"
        out += "  overlap  source-overlap  type  unknown-penalty  source-sim  best-holds-answer  threshold  abstain-ok  abstain-false  J\n"
        var lines: [(Double, String)] = []
        for wo in stride(from: 0.0, through: 1.5, by: 0.25) {
            for wp in stride(from: 0.0, through: 1.0, by: 0.25) {
                for wt in stride(from: 0.0, through: 0.4, by: 0.1) { for penalty in [0.2, 0.4, 0.6, Double.infinity] { for ws in [0.0, 0.5, 1.0] {
                    var t = current
                    t.overlapWeight = wo
                    t.sourceOverlapWeight = wp
                    t.typeWeight = wt
                    t.sourceSimilarityWeight = ws
                    let best = rows.map { r -> (Bool, Double, Bool) in
                        let b = r.sentences.max { t.score($0.0) < t.score($1.0) }
                        let score = b.map { t.score($0.0) } ?? -9
                        return (r.q.answerable, r.unknown ? score - penalty : score, b?.1 ?? false)
                    }
                    let answerable = best.filter(\.0)
                    let holds = Double(answerable.filter(\.2).count) / Double(max(1, answerable.count))
                    var top = (t: 0.0, ok: 0.0, bad: 0.0, j: -2.0)
                    for th in stride(from: 0.2, through: 4.0, by: 0.01) {
                        let ok = Double(best.filter { !$0.0 && $0.1 < th }.count) / Double(max(1, best.filter { !$0.0 }.count))
                        let bad = Double(best.filter { $0.0 && $0.1 < th }.count) / Double(max(1, answerable.count))
                        if ok - bad > top.j { top = (th, ok, bad, ok - bad) }
                    }
                    lines.append(
                        (holds + top.j, String(format: "  %5.2f    %5.2f           %4.1f  %5.1f            %4.1f        %.3f              %.2f       %.3f       %.3f          %.3f\n", wo, wp, wt, penalty, ws, holds, top.t, top.ok, top.bad, top.j)))
                } } }
            }
        }
        out += lines.sorted { $0.0 > $1.0 }.prefix(15).map(\.1).joined()
        return out
    }

    func seconds(_ d: Duration) -> Double { d / .seconds(1) }

    /// Summaries for all questions, per language of answerable questions, and per kind.
    public static func summarise(_ outcomes: [Outcome]) -> [Summary] {
        var groups: [(String, [Outcome])] = [("all", outcomes)]
        for lang in ["en", "de"] { groups.append(("answerable \(lang)", outcomes.filter { $0.answerable && $0.lang == lang })) }
        for kind in ["single", "paraphrase", "two-fact", "german", "cross-lingual", "unanswerable"] {
            groups.append((kind, outcomes.filter { $0.kind == kind }))
        }
        return groups.filter { !$0.1.isEmpty }.map { summary($0.0, $0.1) }
    }

    static func summary(_ group: String, _ o: [Outcome]) -> Summary {
        func mean(_ xs: [Double]) -> Double? { xs.isEmpty ? nil : xs.reduce(0, +) / Double(xs.count) }
        func share(_ xs: [Bool]) -> Double? { mean(xs.map { $0 ? 1 : 0 }) }
        func p50(_ xs: [Double]) -> Double? {
            guard !xs.isEmpty else { return nil }
            let s = xs.sorted()
            return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
        }
        let answerable = o.filter(\.answerable)
        let unanswerable = o.filter { !$0.answerable }
        let answered = answerable.filter { !$0.abstained }
        let cited = answered.filter { !$0.cited.isEmpty }
        let sentences = o.reduce(0) { $0 + $1.sentences }
        return Summary(
            group: group, answerable: answerable.count, unanswerable: unanswerable.count,
            accuracy: share(answerable.map(\.correct)),
            exactCopy: share(answered.compactMap { $0.numbersAltered.map { !$0 } }),
            citationPrecision: mean(cited.map { c in Double(Set(c.cited).intersection(c.support).count) / Double(Set(c.cited).count) }),
            citationRecall: mean(answered.map { c in Double(Set(c.cited).intersection(c.support).count) / Double(max(1, Set(c.support).count)) }),
            correctAbstention: share(unanswerable.map(\.abstained)),
            falseAbstention: share(answerable.map(\.abstained)),
            unsupportedSentences: sentences == 0 ? nil : Double(o.reduce(0) { $0 + $1.unsupported }) / Double(sentences),
            quoted: share(o.filter { !$0.abstained }.map(\.quoted)),
            firstTextP50: p50(o.map(\.firstText)), totalP50: p50(o.map(\.total)))
    }

    /// A table per summary group: pipelines side by side.
    public static func render(_ runs: [Run], split: String) -> String {
        func f(_ x: Double?) -> String { x.map { String(format: "%.3f", $0) } ?? "  –  " }
        func ms(_ x: Double?) -> String { x.map { String(format: "%.0f ms", $0 * 1000) } ?? "–" }
        var out = "kiana bench answers: split \(split)\n"
        out += "  accuracy = every expected fact appears (normalised); exact-copy = answered number/date/code questions whose numbers all appear verbatim in the supporting passages;\n"
        out += "  unsupported = answer sentences with a number not in the cited sources (or question) or under 90% of their words there, exactly as written\n"
        let groups = runs.first?.summaries.map(\.group) ?? []
        for g in groups {
            let rows = runs.compactMap { r in r.summaries.first { $0.group == g }.map { ("\(r.pipeline) \(r.backend)", $0) } }
            guard let first = rows.first?.1 else { continue }
            out += "\n  \(g) (\(first.answerable) answerable, \(first.unanswerable) unanswerable)\n"
            out += "    accuracy  exact-copy  cite-prec  cite-rec  abstain-ok  abstain-false  unsupported  quoted  first-text p50  total p50  pipeline\n"
            for (name, s) in rows {
                out +=
                    "    \(f(s.accuracy))     \(f(s.exactCopy))       \(f(s.citationPrecision))      \(f(s.citationRecall))     \(f(s.correctAbstention))       \(f(s.falseAbstention))          \(f(s.unsupportedSentences))        \(f(s.quoted))  \(ms(s.firstTextP50).padding(toLength: 14, withPad: " ", startingAt: 0))  \(ms(s.totalP50).padding(toLength: 9, withPad: " ", startingAt: 0))  \(name)\n"
            }
        }
        return out
    }
}

/// The time of the first streamed text of an answer.
final class FirstText: Sendable {
    private let seen = Mutex<Duration?>(nil)
    func mark(_ d: Duration) { seen.withLock { if $0 == nil { $0 = d } } }
    var value: Duration? { seen.withLock { $0 } }
}
