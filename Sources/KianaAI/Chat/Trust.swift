import Foundation

/// One sentence of a retrieved source, scored as evidence for a question.
public struct EvidenceSentence: Sendable, Equatable {
    /// The source's number in the prompt (1-based).
    public var source: Int
    public var text: String
    /// Combined score (see `TrustSettings`); higher is better evidence.
    public var score: Double
    /// Cosine similarity of question and sentence (0 without an embedder).
    public var similarity: Double
    /// Share of the question's content words found in the sentence or its source's title.
    public var overlap: Double
    /// Share of the question's content words found anywhere in the sentence's source.
    public var sourceOverlap: Double = 0
    /// The sentence holds the kind of thing asked for (a number or date when one is asked for).
    public var typeMatch: Bool = false
    /// Whether the sentence holds a number (a date, a phone number, an amount, a code).
    public var hasNumber: Bool { !Words.digitRuns(text).isEmpty }
}

/// The tunable parts of the answer pipeline, chosen on the dev split of the
/// question-answering set (`kiana bench answers --calibrate`) and fixed here.
public struct TrustSettings: Sendable, Equatable, Codable {
    /// Weight of the question–sentence cosine similarity in an evidence score.
    public var similarityWeight = 1.0
    /// Weight of the question-word overlap in an evidence score.
    public var overlapWeight = 0.75
    /// Weight of the question-word overlap of the whole source (context for the sentence).
    public var sourceOverlapWeight = 0.25
    /// Added when the sentence holds what kind of answer is asked for.
    public var typeWeight = 0.1
    /// Abstain (no model call) when the best evidence scores below this.
    public var abstainBelow = 0.8
    /// Abstain when a word of the question occurs nowhere in the knowledge base.
    public var abstainOnUnknownTerms = true
    /// Sentences offered to the model: the best, and others within this margin of it.
    public var evidenceMargin = 0.15
    public var maxEvidence = 3
    /// How far below the best a second sentence may score and still complete the answer.
    public var coverMargin = 0.3
    /// Tokens the draft may have.
    public var answerTokens = 80
    public init() {}

    /// The evidence score of a sentence under these weights.
    public func score(_ e: EvidenceSentence) -> Double {
        similarityWeight * e.similarity + overlapWeight * e.overlap + sourceOverlapWeight * e.sourceOverlap + (e.typeMatch ? typeWeight : 0)
    }
}

/// What kind of answer a question asks for, from its wording (English and German).
public enum AnswerType: Sendable, Equatable {
    /// An amount, a count, a phone number, a code, an address number: written with digits.
    case number
    /// A date, a time, a weekday or a month.
    case time

    public static func of(_ question: String) -> AnswerType? {
        let q = " " + Words.tokens(question).joined(separator: " ") + " "
        if timeCues.contains(where: { q.contains(" \($0) ") }) { return .time }
        if Trust.asksForNumber(question) { return .number }
        return nil
    }

    static let timeCues = [
        "when", "what time", "what day", "which day", "what date", "which date", "how late", "wann", "uhrzeit", "welchem tag",
        "welcher tag", "datum", "seit wann", "bis wann", "ab wann", "um wie viel uhr",
    ]

    /// The sentence holds something of this type.
    public func matches(_ sentence: String) -> Bool {
        if !Words.digitRuns(sentence).isEmpty { return true }
        let words = Set(Words.tokens(sentence))
        switch self {
        case .number: return !words.isDisjoint(with: Self.numberWords)
        case .time: return !words.isDisjoint(with: Self.timeWords) || !words.isDisjoint(with: Self.numberWords)
        }
    }

    static let numberWords: Set<String> = [
        "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "twenty",
        "hundred", "once", "twice", "half", "dozen", "ein", "eine", "zwei", "drei", "vier", "fünf", "sechs", "sieben",
        "acht", "neun", "zehn", "elf", "zwölf", "zwanzig", "hundert", "einmal", "zweimal", "halb", "halbe",
    ]
    static let timeWords: Set<String> = [
        "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "mondays", "tuesdays", "wednesdays",
        "thursdays", "fridays", "saturdays", "sundays", "january", "february", "march", "april", "may", "june", "july",
        "august", "september", "october", "november", "december", "morning", "evening", "noon", "midnight", "weekend",
        "daily", "weekly", "monthly", "yearly", "montag", "dienstag", "mittwoch", "donnerstag", "freitag", "samstag",
        "sonntag", "montags", "dienstags", "mittwochs", "donnerstags", "freitags", "samstags", "sonntags", "januar",
        "februar", "märz", "mai", "juni", "juli", "oktober", "dezember", "morgens", "abends", "mittags", "täglich",
        "wöchentlich", "monatlich", "jährlich", "wochenende",
    ]
}

/// Where an answer's facts come from, and whether it holds up: evidence selection, the
/// abstention decision and the sentence-by-sentence check of a draft. Pure functions.
public enum Trust {
    // MARK: evidence

    /// Every sentence of every source, scored against the question, best first.
    /// `embed` gives unit vectors for texts (nil: overlap only).
    public static func evidence(
        question: String, sources: [GroundingSource], settings: TrustSettings = TrustSettings(),
        embed: (([String]) -> [[Float]])? = nil
    ) -> [EvidenceSentence] {
        let asked = questionWords(question)
        let wanted = AnswerType.of(question)
        func covered(_ words: [String]) -> Double {
            asked.isEmpty ? 0 : Double(asked.filter { q in words.contains { Words.sameWord(q, $0) } }.count) / Double(asked.count)
        }
        var items: [(source: Int, text: String, overlap: Double, sourceOverlap: Double, type: Bool)] = []
        for (i, s) in sources.enumerated() {
            let titleWords = Words.content(s.title ?? "")
            let whole = covered(titleWords + Words.content(s.text))
            for sentence in Sentences.split(s.text) where sentence.count >= 3 {
                items.append((i + 1, sentence, covered(Words.content(sentence) + titleWords), whole, wanted?.matches(sentence) ?? false))
            }
        }
        var similarity = [Double](repeating: 0, count: items.count)
        if let embed, !items.isEmpty {
            let vectors = embed([question] + items.map(\.1))
            let q = vectors[0]
            for k in items.indices { similarity[k] = cosine(q, vectors[k + 1]) }
        }
        return items.enumerated().map { k, it in
            var e = EvidenceSentence(source: it.source, text: it.text, score: 0, similarity: similarity[k], overlap: it.overlap)
            e.sourceOverlap = it.sourceOverlap
            e.typeMatch = it.type
            e.score = settings.score(e)
            return e
        }.sorted { $0.score > $1.score || ($0.score == $1.score && $0.source < $1.source) }
    }

    /// The question's content words, without the words that only say what kind of answer is
    /// wanted ("number", "name", "tell").
    static func questionWords(_ question: String) -> [String] {
        var seen: [String] = []
        for w in Words.content(question) where !askWords.contains(w) && !seen.contains(w) { seen.append(w) }
        return seen
    }

    static let askWords: Set<String> = [
        "tell", "know", "please", "remind", "again", "name", "number", "exactly", "actually", "sag", "sage", "weißt",
        "bitte", "nochmal", "nummer", "heißt", "lautet", "genau", "eigentlich",
        // words that name the kind of answer rather than its subject
        "model", "models", "address", "addresses", "type", "kind", "brand", "size", "dose", "amount", "provider",
        "hostname", "modell", "adresse", "typ", "marke", "größe", "dosis", "menge", "anbieter",
        // how-questions: "how much", "how long", "wie hoch", "wie lange"
        "much", "many", "long", "far", "often", "old", "big", "high", "late", "early", "hoch", "viel", "viele", "lange",
        "weit", "oft", "alt", "groß", "spät", "früh",
    ]

    static func cosine(_ a: [Float], _ b: [Float]) -> Double {
        guard a.count == b.count, !a.isEmpty else { return 0 }
        var dot: Float = 0
        var na: Float = 0
        var nb: Float = 0
        for i in a.indices {
            dot += a[i] * b[i]
            na += a[i] * a[i]
            nb += b[i] * b[i]
        }
        return na > 0 && nb > 0 ? Double(dot / (na.squareRoot() * nb.squareRoot())) : 0
    }

    /// The sentences the model is shown: the covering set (`cover`), then the next best within
    /// the margin, at most `maxEvidence`.
    public static func chosen(_ ranked: [EvidenceSentence], question: String, settings: TrustSettings = TrustSettings()) -> [EvidenceSentence] {
        guard let best = ranked.first else { return [] }
        var out = cover(ranked, question: question, settings: settings)
        for e in ranked.prefix(while: { $0.score >= best.score - settings.evidenceMargin }) where out.count < settings.maxEvidence && !out.contains(e) {
            out.append(e)
        }
        return out
    }

    /// The sentences an answer needs: the best one, plus, when the question asks about more
    /// than it mentions (two facts: "the vet's and the babysitter's numbers"), the best-ranked
    /// sentence within `coverMargin` that mentions a question word the first one lacks.
    public static func cover(_ ranked: [EvidenceSentence], question: String, settings: TrustSettings = TrustSettings()) -> [EvidenceSentence] {
        guard let best = ranked.first else { return [] }
        let asked = questionWords(question)
        func mentions(_ e: EvidenceSentence) -> [String] {
            let words = Words.content(e.text)
            return asked.filter { q in words.contains { Words.sameWord(q, $0) } }
        }
        let missing = Set(asked).subtracting(mentions(best))
        guard !missing.isEmpty else { return [best] }
        let second = ranked.dropFirst().prefix(8).first { e in
            e.score >= best.score - settings.coverMargin && !missing.isDisjoint(with: mentions(e)) && e.text != best.text
        }
        return second.map { [best, $0] } ?? [best]
    }

    /// True when nothing retrieved supports the question well enough to answer it: the best
    /// evidence scores below the threshold, or the question names something (`unknownTerms`: its
    /// content words that occur nowhere in the knowledge base) that nobody taught.
    public static func shouldAbstain(_ ranked: [EvidenceSentence], unknownTerms: [String] = [], settings: TrustSettings = TrustSettings()) -> Bool {
        guard let best = ranked.first else { return true }
        if settings.abstainOnUnknownTerms && !unknownTerms.isEmpty { return true }
        return best.score < settings.abstainBelow
    }

    /// The question's words that decide whether the knowledge base knows its subject: content
    /// words without digits and without the words that only say what kind of answer is wanted.
    public static func subjectWords(_ question: String) -> [String] {
        questionWords(question).filter { !$0.contains(where: \.isNumber) && $0.count >= 3 }
    }

    /// The one fixed sentence of the pipeline: nothing taught answers this.
    public static func abstention(_ language: Language) -> String {
        switch language {
        case .en: "I don't know that yet: nothing you have taught me answers it. You can teach me with \"remember that …\"."
        case .de: "Das weiß ich noch nicht: Nichts, was du mir beigebracht hast, beantwortet das. Du kannst es mir mit „merk dir, dass …“ beibringen."
        }
    }

    // MARK: the prompt

    /// Instructions, one worked example and the evidence, in the question's language.
    public static func prompt(question: String, evidence: [EvidenceSentence], language: Language) -> [ChatMessage] {
        var bySource: [(Int, [String])] = []
        for e in evidence.sorted(by: { $0.source < $1.source }) {
            if let k = bySource.firstIndex(where: { $0.0 == e.source }) { bySource[k].1.append(e.text) } else { bySource.append((e.source, [e.text])) }
        }
        switch language {
        case .en:
            let sources = bySource.map { "Source [\($0.0)]: " + $0.1.joined(separator: " ") }.joined(separator: "\n")
            return [
                ChatMessage(
                    .system,
                    "Answer the question with one short sentence. Copy names, numbers, dates and codes exactly as the source writes them. Do not add anything the source does not say."
                ),
                ChatMessage(.user, "Source [1]: The bakery on the market square opens at 7:30.\n\nQuestion: When does the bakery open?"),
                ChatMessage(.assistant, "The bakery opens at 7:30."),
                ChatMessage(.user, "\(sources)\n\nQuestion: \(question)"),
            ]
        case .de:
            let sources = bySource.map { "Quelle [\($0.0)]: " + $0.1.joined(separator: " ") }.joined(separator: "\n")
            return [
                ChatMessage(
                    .system,
                    "Beantworte die Frage mit einem kurzen deutschen Satz. Schreibe Namen, Zahlen, Daten und Codes genau so ab, wie die Quelle sie schreibt. Füge nichts hinzu."
                ),
                ChatMessage(.user, "Quelle [1]: Der Bäcker am Markt öffnet um 7:30 Uhr.\n\nFrage: Wann öffnet der Bäcker?"),
                ChatMessage(.assistant, "Der Bäcker öffnet um 7:30 Uhr."),
                ChatMessage(.user, "\(sources)\n\nFrage: \(question)"),
            ]
        }
    }

    // MARK: checking a draft

    /// The verdict on one drafted sentence.
    public struct Verdict: Sendable, Equatable {
        /// The sentence without citation markers.
        public var text: String
        /// Sources (1-based) that together support it; empty when unsupported.
        public var sources: [Int]
        /// Why it is unsupported (nil when supported).
        public var problem: String?
        public var supported: Bool { problem == nil }
    }

    /// Checks each sentence of a draft against the sources it may cite: every number group and
    /// digit run must appear verbatim in a source (or the question); every other content word
    /// must appear, up to inflection, in a source or the question; and the sentence must add
    /// something from a source that the question did not already say. A sentence that is only
    /// a citation marker ("The number is [1].") adds nothing and fails.
    public static func verify(draft: String, question: String, sources: [GroundingSource]) -> [Verdict] {
        Sentences.split(draft).map { verify(sentence: $0, question: question, sources: sources) }
    }

    public static func verify(sentence: String, question: String, sources: [GroundingSource]) -> Verdict {
        let text = stripMarkers(sentence)
        let words = Words.content(text)
        guard !words.isEmpty else { return Verdict(text: text, sources: [], problem: "it says nothing but a citation marker") }
        let q = Facts(question)
        let facts = sources.map { Facts(($0.title ?? "") + " " + $0.text) }
        // one source alone, else several together
        var firstProblem = "no source says it"
        for (i, f) in facts.enumerated() {
            switch check(words: words, text: text, against: [f], question: q) {
            case .none: return Verdict(text: text, sources: [i + 1], problem: nil)
            case .some(let p): if i == 0 { firstProblem = p }
            }
        }
        if facts.count > 1, check(words: words, text: text, against: facts, question: q) == nil {
            // the sources that contribute a word or a number the question did not have
            let used = facts.indices.filter { i in
                words.contains { w in !q.has(w) && facts[i].has(w) }
            }
            if used.count > 1 { return Verdict(text: text, sources: used.map { $0 + 1 }, problem: nil) }
        }
        return Verdict(text: text, sources: [], problem: firstProblem)
    }

    static func check(words: [String], text: String, against sources: [Facts], question: Facts) -> String? {
        for g in Words.numberGroups(text) where !question.groups.contains(where: { $0.contains(g) }) {
            if !sources.contains(where: { $0.groups.contains { $0.contains(g) } }) { return "the number \(g) is in no source" }
        }
        var adds = false
        for w in words {
            let inSource = sources.contains { $0.has(w) }
            if !inSource && !question.has(w) && !scaffolding.contains(w) { return "\"\(w)\" is in no source" }
            if inSource && !question.has(w) { adds = true }
        }
        return adds ? nil : "it only repeats the question"
    }

    /// Words an answer may use to frame a fact without a source saying them.
    static let scaffolding: Set<String> = ["number", "called", "named", "nummer", "heißt", "uhr", "yes", "ja"]

    /// A text's words and number groups, for support checks.
    struct Facts {
        var words: [String]
        var groups: [String]
        init(_ text: String) {
            words = Words.content(text)
            groups = Words.numberGroups(text)
        }
        func has(_ w: String) -> Bool {
            if w.contains(where: \.isNumber) { return words.contains(w) || groups.contains { $0.contains(w) && w.allSatisfy(\.isNumber) } }
            return words.contains { Words.sameWord(w, $0) }
        }
    }

    /// The sentence without citation markers like "[1]", "[1, 2]", "[A]", "[Source 1]".
    public static func stripMarkers(_ s: String) -> String {
        var out = s.replacingOccurrences(of: #"\s*\[[^\]\n]{0,16}\]"#, with: "", options: .regularExpression)
        out = out.replacingOccurrences(of: #"\s+([.,;:!?])"#, with: "$1", options: .regularExpression)
        return out.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Whether the question asks for something written with digits (a date, a time, an amount,
    /// a phone number, a code); then an answer without digits misses it when the evidence has one.
    public static func asksForNumber(_ question: String) -> Bool {
        let q = " " + Words.tokens(question).joined(separator: " ") + " "
        return numberCues.contains { q.contains(" \($0) ") }
    }

    static let numberCues = [
        "how many", "how much", "how old", "how long", "how far", "how often", "when", "what time", "what year",
        "which year", "what date", "which date", "phone", "number", "code", "pin", "price", "cost", "costs", "year",
        "wie viel", "wie viele", "wieviel", "wie alt", "wie lange", "wann", "uhrzeit", "welches jahr", "nummer",
        "telefonnummer", "telefon", "festnetz", "code", "pin", "preis", "kostet", "kosten", "jahr", "datum",
    ]

    /// The answer the owner sees: the draft's supported sentences, each followed by its citation;
    /// when none is left (or a number was asked for and the answer lacks it), the best evidence
    /// sentence quoted with its citation.
    public static func finalAnswer(
        draft: String, question: String, sources: [GroundingSource], evidence: [EvidenceSentence], settings: TrustSettings = TrustSettings()
    ) -> (answer: String, cited: [Int], support: [EvidenceSentence], verdicts: [Verdict], quoted: Bool) {
        let verdicts = verify(draft: draft, question: question, sources: sources)
        var kept = verdicts.filter(\.supported)
        let needed = cover(evidence, question: question, settings: settings)
        let missesNumber = asksForNumber(question) && (evidence.first?.hasNumber ?? false) && !kept.contains { !Words.digitRuns($0.text).isEmpty }
        var quoted = false
        if kept.isEmpty || missesNumber {
            kept = []
            quoted = true
        }
        // every needed evidence sentence must show in the answer; what the draft left out is quoted
        let q = Set(Words.content(question))
        var parts: [(String, [Int])] = kept.map { ($0.text, $0.sources) }
        for e in needed {
            let new = Set(Words.content(e.text)).subtracting(q)
            let shown = kept.contains { v in v.sources.contains(e.source) && !new.isDisjoint(with: Words.content(v.text)) }
            if !shown {
                parts.append((e.text, [e.source]))
                quoted = true
            }
        }
        guard !parts.isEmpty else { return ("", [], [], verdicts, true) }
        let answer = parts.map { p in p.0 + " " + p.1.map { "[\($0)]" }.joined() }.joined(separator: " ")
        var cited: [Int] = []
        for p in parts { for s in p.1 where !cited.contains(s) { cited.append(s) } }
        // the evidence sentence of each cited source that shares most with the answer
        let support = cited.compactMap { n in
            evidence.filter { $0.source == n }.max { shared($0.text, answer) < shared($1.text, answer) }
        }
        return (answer, cited, support, verdicts, quoted && kept.isEmpty)
    }

    static func shared(_ a: String, _ b: String) -> Int {
        let x = Set(Words.content(a))
        return Set(Words.content(b)).intersection(x).count
    }
}
