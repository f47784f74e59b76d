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
    /// Cosine similarity of question and the sentence's whole source (0 without an embedder).
    public var sourceSimilarity: Double = 0
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
    public var sourceOverlapWeight = 0.75
    /// Added when the sentence holds what kind of answer is asked for.
    public var typeWeight = 0.1
    /// Weight of the question–source cosine similarity.
    public var sourceSimilarityWeight = 1.0
    /// Abstain (no model call) when the best evidence scores below this.
    public var abstainBelow = 1.89
    /// Subtracted from the best evidence score, for the abstention decision, when a subject
    /// word of the question occurs nowhere in the knowledge base (infinity: always abstain then).
    public var unknownTermPenalty = 0.4
    /// Sentences offered to the model: the best, and others within this margin of it.
    public var evidenceMargin = 0.3
    public var maxEvidence = 3
    /// How far below the best a second sentence may score and still complete the answer.
    public var coverMargin = 0.6
    /// Tokens the draft may have.
    public var answerTokens = 80
    public init() {}

    /// The abstention threshold, for scores with or without the embedding similarities.
    public func threshold(withVectors: Bool) -> Double {
        if withVectors { return abstainBelow }
        let all = similarityWeight + overlapWeight + sourceOverlapWeight + sourceSimilarityWeight + typeWeight
        return abstainBelow * (overlapWeight + sourceOverlapWeight + typeWeight) / max(all, 1e-9)
    }

    /// The evidence score of a sentence under these weights.
    public func score(_ e: EvidenceSentence) -> Double {
        similarityWeight * e.similarity + overlapWeight * e.overlap + sourceOverlapWeight * e.sourceOverlap
            + sourceSimilarityWeight * e.sourceSimilarity + (e.typeMatch ? typeWeight : 0)
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
    /// Month names, English and German (the German ones that differ).
    static let months = [
        "january", "february", "march", "april", "may", "june", "july", "august", "september", "october", "november",
        "december", "januar", "februar", "märz", "mai", "juni", "juli", "oktober", "dezember",
    ]
    static let timeWords = Set(months).union([
        "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "mondays", "tuesdays", "wednesdays",
        "thursdays", "fridays", "saturdays", "sundays", "morning", "evening", "noon", "midnight", "weekend",
        "daily", "weekly", "monthly", "yearly", "montag", "dienstag", "mittwoch", "donnerstag", "freitag", "samstag",
        "sonntag", "montags", "dienstags", "mittwochs", "donnerstags", "freitags", "samstags", "sonntags", "morgens",
        "abends", "mittags", "täglich", "wöchentlich", "monatlich", "jährlich", "wochenende",
    ])
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
        evidence(questions: [question], sources: sources, settings: settings, embed: embed)[0]
    }

    /// `evidence` for several questions over the same sources (a question and its parts), with
    /// one embedding pass over the sentences. A question without an answer type of its own takes
    /// `answerType` (a part inherits the whole question's).
    public static func evidence(
        questions: [String], sources: [GroundingSource], settings: TrustSettings = TrustSettings(),
        answerType: AnswerType? = nil, embed: (([String]) -> [[Float]])? = nil
    ) -> [[EvidenceSentence]] {
        var sentences: [(source: Int, text: String, words: [String], title: [String])] = []
        let asked = Set(questions.flatMap(questionWords))
        for (i, s) in sources.enumerated() {
            // Words as bags, hyphenated words also joined: "wifi" is said by "Wi-Fi" (decision 115).
            let titleWords = Array(termWords(s.title ?? ""))
            var candidates = Sentences.split(s.text).filter { $0.count >= 3 }.flatMap(windows).map { (text: $0, words: Array(termWords($0))) }
            // a long source: only the sentences that share most words with the question are scored
            if candidates.count > maxSentencesPerSource {
                let shared = candidates.map { c in asked.filter { q in c.words.contains { Words.sameWord(q, $0) } }.count }
                let order = candidates.indices.sorted { shared[$0] > shared[$1] || (shared[$0] == shared[$1] && $0 < $1) }
                candidates = order.prefix(maxSentencesPerSource).sorted().map { candidates[$0] }
            }
            for c in candidates { sentences.append((i + 1, c.text, c.words, titleWords)) }
        }
        let sourceWords = sources.map { Array(termWords(($0.title ?? "") + " " + $0.text)) }
        var vectors: [[Float]] = []
        let sourceTexts = sources.map { ($0.title.map { $0 + "\n" } ?? "") + $0.text }
        if let embed, !sentences.isEmpty { vectors = embed(questions + sentences.map(\.text) + sourceTexts) }
        let firstSource = questions.count + sentences.count
        return questions.enumerated().map { qi, question in
            let asked = questionWords(question)
            let wanted = AnswerType.of(question) ?? answerType
            func covered(_ words: [String]) -> Double {
                asked.isEmpty ? 0 : Double(asked.filter { q in words.contains { Words.sameWord(q, $0) } }.count) / Double(asked.count)
            }
            let whole = sourceWords.map(covered)
            return sentences.enumerated().map { k, it in
                let similarity = vectors.isEmpty ? 0 : cosine(vectors[qi], vectors[questions.count + k])
                var e = EvidenceSentence(source: it.source, text: it.text, score: 0, similarity: similarity, overlap: covered(it.words + it.title))
                e.sourceOverlap = whole[it.source - 1]
                if !vectors.isEmpty { e.sourceSimilarity = cosine(vectors[qi], vectors[firstSource + it.source - 1]) }
                e.typeMatch = wanted?.matches(it.text) ?? false
                e.score = settings.score(e)
                return e
            }.sorted { $0.score > $1.score || ($0.score == $1.score && $0.source < $1.source) }
        }
    }

    /// The two questions in one ("What is the vet's number and the babysitter's?"): the parts
    /// around " and " / " und " when each names something; a part that is not a question of its
    /// own borrows the first part's opening ("What are the IP addresses of nimbus-02 and of
    /// cirrus-db?" gives "What are the IP addresses of cirrus-db"). Empty for a single question.
    public static func parts(_ question: String) -> [String] {
        let q = question.trimmingCharacters(in: .whitespacesAndNewlines).trimmingCharacters(in: CharacterSet(charactersIn: "?!."))
        for joint in [", and ", " and ", ", und ", " und "] {
            guard let r = q.range(of: joint, options: .caseInsensitive) else { continue }
            let first = String(q[..<r.lowerBound]).trimmingCharacters(in: .whitespaces)
            let second = String(q[r.upperBound...]).trimmingCharacters(in: .whitespaces)
            guard !questionWords(first).isEmpty, !questionWords(second).isEmpty else { return [] }
            let firstWords = first.split(separator: " ").map(String.init)
            let secondWords = second.split(separator: " ").map(String.init)
            guard firstWords.count >= 3, secondWords.count >= 2 else { return [] }
            let opening = secondWords.prefix(2).map { $0.lowercased() }
            if opening.contains(where: { whWords.contains($0) }) { return [first, second] }
            if let lead = secondWords.first?.lowercased(), prepositions.contains(lead),
                let cut = firstWords.lastIndex(where: { $0.lowercased() == lead })
            {
                return [first, (firstWords[..<cut] + secondWords).joined(separator: " ")]
            }
            // "… of my brother Jan and my sister Katrin": the second replaces as many final words
            guard firstWords.count > secondWords.count else { return [first, second] }
            return [first, (firstWords.dropLast(secondWords.count) + secondWords).joined(separator: " ")]
        }
        return []
    }

    /// Sentences of one source scored at most (the ones sharing most words with the question).
    static let maxSentencesPerSource = 64
    /// Longest evidence sentence shown or quoted, in characters (a run-on text is cut).
    static let maxSentenceCharacters = 600

    /// A run-on sentence as pieces of about 400 characters cut at spaces, so the part that
    /// answers can be found and shown.
    static func windows(_ s: String) -> [String] {
        guard s.count > maxSentenceCharacters else { return [s] }
        var out: [String] = []
        var cur = ""
        for word in s.split(separator: " ", omittingEmptySubsequences: true) {
            if cur.count + word.count + 1 > 400, !cur.isEmpty {
                out.append(cur)
                cur = ""
            }
            cur += cur.isEmpty ? String(word) : " " + word
        }
        if !cur.isEmpty { out.append(cur) }
        return out.map(clip)
    }

    static func clip(_ s: String) -> String {
        s.count <= maxSentenceCharacters ? s : String(s.prefix(maxSentenceCharacters)) + " …"
    }

    static let whWords: Set<String> = [
        "what", "which", "who", "whom", "whose", "when", "where", "why", "how", "was", "welche", "welcher", "welches",
        "wer", "wen", "wem", "wann", "wo", "wie", "warum", "wohin", "is", "are", "does", "do", "ist", "sind", "hat",
    ]
    static let prepositions: Set<String> = ["of", "for", "at", "in", "on", "from", "with", "to", "von", "für", "bei", "im", "in", "an", "mit", "zu"]

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

    /// The sentences the model is shown: the needed ones (`needed`), then the next best within
    /// the margin, at most `maxEvidence`.
    public static func chosen(_ ranked: [EvidenceSentence], needed: [EvidenceSentence], settings: TrustSettings = TrustSettings()) -> [EvidenceSentence] {
        guard let best = ranked.first else { return [] }
        var out = needed
        for e in ranked.prefix(while: { $0.score >= best.score - settings.evidenceMargin }) where out.count < settings.maxEvidence && !out.contains(e) {
            out.append(e)
        }
        return out
    }

    /// The sentences an answer needs. For a question in two parts (`parts`), the best sentence
    /// of each part (`partRankings`). Otherwise the best one, plus, when the question asks about
    /// more than it mentions, the best-ranked sentence within `coverMargin` that mentions a
    /// question word the first one lacks.
    public static func needed(
        _ ranked: [EvidenceSentence], question: String, partRankings: [[EvidenceSentence]] = [], settings: TrustSettings = TrustSettings()
    ) -> [EvidenceSentence] {
        guard let best = ranked.first else { return [] }
        if !partRankings.isEmpty {
            var out: [EvidenceSentence] = []
            for r in partRankings {
                guard let top = r.first, top.score >= settings.abstainBelow - 2 * settings.coverMargin else { continue }
                if !out.contains(where: { $0.text == top.text && $0.source == top.source }) { out.append(top) }
            }
            return out.isEmpty ? [best] : out
        }
        let asked = questionWords(question)
        func mentions(_ e: EvidenceSentence) -> [String] {
            let words = termWords(e.text)
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
    /// content words that occur nowhere in the knowledge base) that nobody taught. Without an
    /// embedder (`withVectors` false) the similarity terms are missing from every score, and
    /// the threshold shrinks in proportion to the weights that remain.
    public static func shouldAbstain(
        _ ranked: [EvidenceSentence], unknownTerms: [String] = [], withVectors: Bool = true, settings: TrustSettings = TrustSettings()
    ) -> Bool {
        guard let best = ranked.first else { return true }
        let score = unknownTerms.isEmpty ? best.score : best.score - settings.unknownTermPenalty
        return score < settings.threshold(withVectors: withVectors)
    }

    /// Where a sentence is about a neighbour of what the question asks: the question names a
    /// thing with a word that the sentence's source (its title and text) does not have, and
    /// the sentence (or the title) names the same thing with another word the question does not
    /// have ("black tea" asked, "green tea" found; "the garage door" and "the front door";
    /// "Ben's birthday" and "Anna's birthday"). A paraphrase ("main door" for "front door") is
    /// found too: the answer says what its note is about, it is not withheld. Pairs are adjacent
    /// content words within a phrase (a possessive 's keeps them adjacent, a hyphen joins one word; punctuation and function
    /// words part them); words that only say what kind of fact is asked for (phone, number …),
    /// prepositions, common verbs and words with digits never name. Nil when the sentence is not
    /// about a neighbour.
    public static func neighbour(question: String, sentence: String, source: GroundingSource) -> (asked: String, found: String)? {
        let asked = namingPairs(question)
        guard !asked.isEmpty else { return nil }
        let found = namingPairs(sentence) + namingPairs(source.title ?? "")
        guard !found.isEmpty else { return nil }
        let questionWords = termWords(question)
        // the asked word anywhere in the source keeps the sentence: it may be about both
        let words = termWords((source.title ?? "") + "\n" + source.text)
        // a word that shares a stem counts as said ("replacement", "Replace")
        func inText(_ w: String) -> Bool {
            words.contains { t in
                if Words.sameWord(w, t) { return true }
                let shorter = min(w.count, t.count)
                let common = zip(w, t).prefix { $0 == $1 }.count
                if common >= 5 && common >= shorter - 1 && shorter >= 5 { return true }
                // a German adjective's endings: "roter" and "roten" Tee
                return germanStem(w) == germanStem(t) && germanStem(w).count >= 3
            }
        }
        for a in asked where !inText(a.naming) {
            for f in found where Words.sameWord(a.named, f.named) && !questionWords.contains(where: { Words.sameWord(f.naming, $0) }) {
                return (a.phrase, f.phrase)
            }
        }
        return nil
    }

    /// A word without a German adjective ending (-em, -en, -er, -es, -e), when three letters stay.
    static func germanStem(_ w: String) -> Substring {
        for ending in ["em", "en", "er", "es", "e"] where w.hasSuffix(ending) && w.count - ending.count >= 3 {
            return w.dropLast(ending.count)
        }
        return Substring(w)
    }

    /// Content words of a text, and its hyphenated words joined ("Wi-Fi" is also "wifi").
    public static func termWords(_ text: String) -> Set<String> {
        Set(Words.content(text) + Words.content(text.replacingOccurrences(of: "-", with: "")))
    }

    /// Said before an answer whose note is about a neighbour of what was asked.
    public static func neighbourNote(_ n: (asked: String, found: String), language: Language) -> String {
        switch language {
        case .en: "What I was taught is about “\(n.found)” (you asked about “\(n.asked)”):"
        case .de: "Was du mir beigebracht hast, betrifft „\(n.found)“ (du hast nach „\(n.asked)“ gefragt):"
        }
    }

    /// Prepositions, common verbs and negations: they neither name a thing nor are one
    /// ("during INC-2291", "the run takes", "not resolve"), so they part phrases.
    static let notNaming: Set<String> = [
        "during", "within", "per", "without", "between", "under", "above", "across", "through", "since", "until", "via",
        "near", "like", "around", "against", "along", "among", "behind", "beyond", "inside", "outside", "toward", "towards",
        "upon", "off", "out", "up", "away", "usually", "normally", "always", "never",
        "take", "takes", "took", "taken", "go", "goes", "went", "gone", "need", "needs", "needed", "start", "starts",
        "leave", "leaves", "come", "comes", "came", "make", "makes", "made", "put", "puts", "keep", "keeps", "kept",
        "run", "runs", "use", "uses", "used", "give", "gives", "gave", "want", "let", "see", "say", "says", "said", "find",
        "bring", "buy", "bought", "stay", "meet", "meets", "begin", "begins", "happen", "happens", "belong", "belongs",
        "mean", "means", "cook", "bake", "water", "spin", "spins", "steep", "steeps", "simmer", "boil", "wash", "open", "opens",
        "opened", "close", "closes", "closed", "end", "ends",
        "während", "pro", "ohne", "zwischen", "seit", "gegen", "nimmt", "nehmen", "geht", "gehen", "kommt", "kommen",
        "braucht", "brauchen", "brauche", "macht", "machen", "liegt", "steht", "fängt", "beginnt", "endet", "geleert",
        "habe", "hab", "hast", "habt", "hatte", "hattest", "gab", "gewesen", "worden", "wurden", "wirst",
        // negations and "nothing" qualify a statement, they name no thing
        "not", "no", "none", "nothing", "nobody", "nicht", "kein", "keine", "keinen", "keiner", "nichts", "nie", "niemand",
    ]

    /// Adjacent content-word pairs (naming word, named word) within phrases of a text, each with
    /// its phrase as written: from the naming word to the end of the run of content words
    /// ("second car key" for the pair second–car).
    static func namingPairs(_ text: String) -> [(naming: String, named: String, phrase: String)] {
        // the words of the text, as written and as compared; `joined`: no punctuation before it
        var words: [(key: String, shown: String, joined: Bool)] = []
        var word = ""  // as written: hyphens and inner apostrophes kept
        var possessive = false
        var joined = true
        let chars = Array(text)
        func isWordChar(_ i: Int) -> Bool { i < chars.count && (chars[i].isLetter || chars[i].isNumber) }
        func isS(_ i: Int) -> Bool { i < chars.count && (chars[i] == "s" || chars[i] == "S") }
        func close() {
            guard !word.isEmpty else { return }
            var key = word.lowercased().replacingOccurrences(of: "-", with: "").replacingOccurrences(of: "’", with: "'")
            while key.hasSuffix("'") { key.removeLast() }
            words.append((key, word + (possessive ? "’s" : ""), joined))
            possessive = false
            joined = true
            word = ""
        }
        var i = 0
        while i < chars.count {
            let ch = chars[i]
            if ch.isLetter || ch.isNumber {
                word.append(ch)
            } else if ch == "-", !word.isEmpty, isWordChar(i + 1) {
                word.append(ch)  // "Wi-Fi", "e-mail": one word
            } else if ch == "'" || ch == "’", !word.isEmpty {
                if isS(i + 1) && !isWordChar(i + 2) {
                    i += 1  // a possessive: "Ben's birthday" names the birthday
                    possessive = true
                    close()
                } else if isWordChar(i + 1) {
                    word.append(ch)  // "O'Brien"
                } else {
                    word.append(ch)  // "Max' Fahrrad", "the kids' room": a possessive too
                    close()
                }
            } else if ch == " " || ch == "\u{00A0}" {
                close()
            } else {
                close()
                joined = false
            }
            i += 1
        }
        close()
        func content(_ w: String) -> Bool {
            !w.contains(where: \.isNumber) && w.count >= 3 && !Words.englishStop.contains(w) && !Words.germanStop.contains(w)
                && !notNaming.contains(w) && !(genericWords.contains(w) && !events.contains(w))
        }
        func naming(_ w: String) -> Bool { content(w) && !genericWords.contains(w) && !AnswerType.numberWords.contains(w) }
        var out: [(naming: String, named: String, phrase: String)] = []
        var k = 0
        while k < words.count {
            // a run: adjacent content words with no punctuation between them
            guard content(words[k].key) else { k += 1; continue }
            var end = k + 1
            while end < words.count, words[end].joined, content(words[end].key) { end += 1 }
            for j in k..<(end - 1) where naming(words[j].key) {
                out.append((words[j].key, words[j + 1].key, words[j..<end].map(\.shown).joined(separator: " ")))
            }
            k = end
        }
        return out
    }

    /// The question's words that decide whether the knowledge base knows its subject: content
    /// words without digits and without the words that only say what kind of answer is wanted.
    public static func subjectWords(_ question: String) -> [String] {
        questionWords(question).filter { !$0.contains(where: \.isNumber) && $0.count >= 3 && !genericWords.contains($0) }
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
        let t = PromptText.of(language)
        let sources = bySource.map { "\(t.source) [\($0.0)]: " + $0.1.joined(separator: " ") }.joined(separator: "\n")
        return [
            ChatMessage(.system, t.instructions),
            ChatMessage(.user, "\(t.source) [1]: \(t.exampleSource)\n\n\(t.question): \(t.exampleQuestion)"),
            ChatMessage(.assistant, t.exampleAnswer),
            ChatMessage(.user, "\(sources)\n\n\(t.question): \(question)"),
        ]
    }

    /// The prompt's words in one language: instructions and one worked example.
    struct PromptText {
        var instructions, source, question, exampleSource, exampleQuestion, exampleAnswer: String

        static func of(_ language: Language) -> PromptText {
            switch language {
            case .en:
                PromptText(
                    instructions:
                        "Answer the question with one short sentence. Copy names, numbers, dates and codes exactly as the source writes them. Do not add anything the source does not say.",
                    source: "Source", question: "Question", exampleSource: "The bakery on the market square opens at 7:30.",
                    exampleQuestion: "When does the bakery open?", exampleAnswer: "The bakery opens at 7:30.")
            case .de:
                PromptText(
                    instructions:
                        "Beantworte die Frage mit einem kurzen deutschen Satz. Schreibe Namen, Zahlen, Daten und Codes genau so ab, wie die Quelle sie schreibt. Füge nichts hinzu.",
                    source: "Quelle", question: "Frage", exampleSource: "Der Bäcker am Markt öffnet um 7:30 Uhr.",
                    exampleQuestion: "Wann öffnet der Bäcker?", exampleAnswer: "Der Bäcker öffnet um 7:30 Uhr.")
            }
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

    /// Checks each sentence of a draft against the sources it may cite: every number must be
    /// copied whole from a source sentence that is about what the drafted sentence says, every
    /// code whole, every other content word must appear, up to inflection, in a source or the
    /// question, and the sentence must add something from a source that the question did not
    /// already say. A sentence that is only a citation marker ("The number is [1].") adds
    /// nothing and fails.
    public static func verify(draft: String, question: String, sources: [GroundingSource]) -> [Verdict] {
        let q = Facts(title: nil, text: question)
        let facts = sources.map { Facts(title: $0.title, text: $0.text) }
        return Sentences.split(draft).map { verify(sentence: $0, question: q, sources: facts) }
    }

    public static func verify(sentence: String, question: String, sources: [GroundingSource]) -> Verdict {
        verify(sentence: sentence, question: Facts(title: nil, text: question), sources: sources.map { Facts(title: $0.title, text: $0.text) })
    }

    static func verify(sentence: String, question q: Facts, sources facts: [Facts]) -> Verdict {
        let text = stripMarkers(sentence)
        let words = Words.content(text)
        guard !words.isEmpty else { return Verdict(text: text, sources: [], problem: "it says nothing but a citation marker") }
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
        // What the sentence is about: its own specific words, else the question's.
        var subject = Set(words.filter { !$0.contains(where: \.isNumber) && !genericWords.contains($0) })
        if subject.isEmpty { subject = Set(question.words.filter { !$0.contains(where: \.isNumber) && !genericWords.contains($0) }) }
        for g in NumberGroup.all(in: text) {
            // a number copied whole from a source, from a sentence about what this one says
            guard sources.contains(where: { $0.numbers.contains { $0.holds(g) } }) else { return "the number \(g.runs.joined(separator: " ")) is in no source" }
            if !sources.contains(where: { $0.vouches(g, for: subject, question: question) }) { return "no source says \(g.runs.joined(separator: " ")) about this" }
        }
        // a code is copied whole: "C-12", not "12"
        let answerCodes = Codes.of(text)
        for code in answerCodes where !sources.contains(where: { $0.codes.contains(code) }) {
            return "the code \(code) is in no source"
        }
        for d in Words.digitRuns(text) where !answerCodes.contains(where: { $0.contains(d) }) {
            if !sources.contains(where: { $0.plain.contains(d) }) { return "\(d) is part of a longer code in the source" }
        }
        var adds = false
        for w in words {
            let inSource = sources.contains { $0.has(w) }
            // a word of the question is no licence: the dishwasher's code is not the washing machine's
            if !inSource && !scaffolding.contains(w) && !(question.has(w) && genericWords.contains(w) && !sourceMustSay.contains(w)) {
                return "\"\(w)\" is in no source"
            }
            if inSource && !question.has(w) { adds = true }
        }
        return adds ? nil : "it only repeats the question"
    }

    /// Kinds of fact that name an event, not a format: a source must say them ("Ben's birthday is
    /// on Wednesday" is not licensed by a note on Ben's football practice).
    static let events: Set<String> = ["birthday", "birthdays", "geburtstag"]

    /// Kinds of fact that are not a format either: a phone number, a code or a hostname shows
    /// what it is; an address, a model or a dose does not ("The dentist's address is 030 555
    /// 0192" from a note giving the practice's phone number; "The printer model is HP 305" from
    /// a note on its ink cartridges). A drafted sentence may use them only where a source does.
    static let labels: Set<String> = [
        "address", "addresses", "model", "models", "type", "brand", "size", "dose", "amount", "provider",
        "adresse", "modell", "typ", "marke", "größe", "dosis", "menge", "anbieter",
    ]

    /// Words of the question that license nothing in an answer: a source must say them.
    static let sourceMustSay = events.union(labels)

    /// Words an answer may use to frame a fact without a source saying them.
    static let scaffolding: Set<String> = ["number", "called", "named", "nummer", "heißt", "uhr", "yes", "ja"]

    /// Words that say what kind of fact is meant, not whose: a number found next to "phone"
    /// does not make it the vet's phone number.
    static let genericWords: Set<String> = askWords.union(scaffolding).union([
        "phone", "telephone", "mobile", "code", "pin", "password", "birthday", "date", "time", "price", "cost", "costs",
        "tel", "telefon", "handy", "passwort", "geburtstag", "datum", "uhrzeit", "preis", "kosten", "kostet",
        "reached", "call", "erreichbar", "is", "are", "was", "ist", "sind", "telefonnummer",
    ])

    /// A text's words, number groups and codes, for support checks.
    struct Facts {
        var words: [String]
        var numbers: [NumberGroup]
        /// Letter-and-digit tokens ("c-12", "e24", "gast2024"), lower-cased.
        var codes: [String]
        /// Digit runs that stand as numbers of their own (not inside a code).
        var plain: Set<String>
        /// Per sentence: its number groups and the content words of it (with the title's, and
        /// the previous sentence's when it is a bare fragment such as "Phone 0157 3390 2214.").
        var sentences: [(numbers: [NumberGroup], context: Set<String>)]
        init(title: String?, text: String) {
            let titleWords = Words.content(title ?? "")
            words = titleWords + Words.content(text)
            numbers = NumberGroup.all(in: text)
            codes = Codes.of(text)
            plain = Codes.plainDigits(text)
            let split = Sentences.split(text)
            let contents = split.map { Set(Words.content($0)) }
            sentences = split.indices.map { i in
                var context = contents[i].union(titleWords)
                let specific = contents[i].filter { !$0.contains(where: \.isNumber) && !Trust.genericWords.contains($0) }
                if specific.isEmpty && i > 0 { context.formUnion(contents[i - 1]) }
                return (NumberGroup.all(in: split[i]), context)
            }
        }
        func has(_ w: String) -> Bool {
            if w.contains(where: \.isNumber) { return words.contains(w) }
            return words.contains { Words.sameWord(w, $0) }
        }
        /// A sentence of this text holds the number and is about `subject`: it names every
        /// subject word the question asked about (whose number it is) and all but one of the
        /// others when there are three or more.
        func vouches(_ group: NumberGroup, for subject: Set<String>, question: Facts) -> Bool {
            sentences.contains { s in
                guard s.numbers.contains(where: { $0.holds(group) }) else { return false }
                let missing = subject.filter { w in !s.context.contains { Words.sameWord(w, $0) } }
                if missing.contains(where: { question.has($0) }) { return false }
                return missing.isEmpty || (subject.count >= 3 && missing.count <= 1)
            }
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
        "telefonnummer", "telefon", "festnetz", "preis", "kostet", "kosten", "jahr", "datum",
    ]

    /// The answer the owner sees: the draft's supported sentences, each followed by its citation;
    /// when none is left (or a number was asked for and the answer lacks it), the best evidence
    /// sentence quoted with its citation.
    public static func finalAnswer(
        draft: String, question: String, sources: [GroundingSource], evidence: [EvidenceSentence], needed: [EvidenceSentence]? = nil
    ) -> (answer: String, cited: [Int], support: [EvidenceSentence], verdicts: [Verdict], quoted: Bool) {
        let verdicts = verify(draft: draft, question: question, sources: sources)
        // a date or a time where another number was asked for ("The flight number is 12 July.")
        var kept = verdicts.filter { $0.supported && !givesOnlyTimes($0.text, question: question) }
        let needed = needed ?? Self.needed(evidence, question: question)
        let missesNumber = asksForNumber(question) && (evidence.first?.hasNumber ?? false) && !kept.contains { !Words.digitRuns($0.text).isEmpty }
        var quoted = false
        if kept.isEmpty || missesNumber {
            kept = []
            quoted = true
        }
        // every needed evidence sentence must show in the answer; what the draft left out is quoted
        let q = Set(Words.content(question))
        var parts: [(text: String, sources: [Int], quote: EvidenceSentence?)] = kept.map { ($0.text, $0.sources, nil) }
        for e in needed {
            let new = Set(Words.content(e.text)).subtracting(q)
            let shown = kept.contains { v in v.sources.contains(e.source) && !new.isDisjoint(with: Words.content(v.text)) }
            if !shown {
                parts.append((e.text, [e.source], e))
                quoted = true
            }
        }
        guard !parts.isEmpty else { return ("", [], [], verdicts, true) }
        let answer = parts.map { p in p.text + " " + p.sources.map { "[\($0)]" }.joined() }.joined(separator: " ")
        var cited: [Int] = []
        for p in parts { for s in p.sources where !cited.contains(s) { cited.append(s) } }
        // behind each part: the sentence quoted, or of each source it cites the evidence sentence
        // that shares most with it (a quote and a drafted sentence from one source both show)
        var support: [EvidenceSentence] = []
        for p in parts {
            let behind = p.quote.map { [$0] } ?? p.sources.compactMap { n in
                evidence.filter { $0.source == n }.max { shared($0.text, p.text) < shared($1.text, p.text) }
            }
            for e in behind where !support.contains(where: { $0.source == e.source && $0.text == e.text }) { support.append(e) }
        }
        return (answer, cited, support, verdicts, quoted && kept.isEmpty)
    }

    /// True when the question asks for a number that is not a time (a flight number, a code, an
    /// amount; not "when", not a year) and every number of the sentence is part of a date or a
    /// time of day ("12 July", "July 12th", "12.07.2026", "2026-07-12", "09:40", "5pm", "7 Uhr").
    static func givesOnlyTimes(_ sentence: String, question: String) -> Bool {
        guard AnswerType.of(question) == .number else { return false }
        let asked = Set(Words.tokens(question))
        guard asked.isDisjoint(with: ["year", "years", "jahr", "jahre", "jahren", "age", "old", "alt"]) else { return false }
        guard !Words.digitRuns(sentence).isEmpty else { return false }
        var rest = sentence
        for pattern in timePatterns {
            rest = rest.replacingOccurrences(of: pattern, with: " ", options: [.regularExpression, .caseInsensitive])
        }
        return Words.digitRuns(rest).isEmpty
    }

    static let timePatterns = {
        let months = (AnswerType.months + ["sept"]).joined(separator: "|")
        return [
            #"\b\d{1,2}(st|nd|rd|th)?\.?\s+(of\s+)?("# + months + #")\b(\s+\d{4})?"#,
            #"\b("# + months + #")\s+\d{1,2}(st|nd|rd|th)?\b(,?\s+\d{4})?"#,
            #"\b\d{1,2}\.\d{1,2}\.(\d{2,4})?"#, #"\b\d{4}-\d{2}-\d{2}\b"#, #"\b\d{1,2}:\d{2}\b"#,
            #"\b\d{1,2}\s?(am|pm|uhr)\b"#,
        ]
    }()

    static func shared(_ a: String, _ b: String) -> Int {
        let x = Set(Words.content(a))
        return Set(Words.content(b)).intersection(x).count
    }
}

/// Codes in text: runs of letters and digits joined by "-", "/" or "." that hold both a letter
/// and a digit ("C-12", "E24", "HR-552-0193", "Gast2024").
enum Codes {
    /// The text cut into spans (letters and digits joined by "-", "/", "."; `true`) and the
    /// characters between them (`false`), in order.
    static func pieces(_ text: String) -> [(String, isSpan: Bool)] {
        var out: [(String, isSpan: Bool)] = []
        var cur = ""
        let chars = Array(text)
        for (i, ch) in chars.enumerated() {
            if ch.isLetter || ch.isNumber {
                cur.append(ch)
            } else if ch == "-" || ch == "/" || ch == ".", !cur.isEmpty, i + 1 < chars.count, chars[i + 1].isLetter || chars[i + 1].isNumber {
                cur.append(ch)
            } else {
                if !cur.isEmpty { out.append((cur, true)) }
                cur = ""
                out.append((String(ch), false))
            }
        }
        if !cur.isEmpty { out.append((cur, true)) }
        return out
    }

    static func spans(_ text: String) -> [String] { pieces(text).filter(\.isSpan).map(\.0) }

    static func isCode(_ span: String) -> Bool { span.contains(where: \.isLetter) && span.contains(where: { $0.isASCII && $0.isNumber }) }

    /// The text with its codes blanked out, so the digits of "C-12" are not read as the number 12.
    static func blanked(_ text: String) -> String {
        pieces(text).map { $0.isSpan && isCode($0.0) ? String(repeating: " ", count: $0.0.count) : $0.0 }.joined()
    }

    static func of(_ text: String) -> [String] {
        spans(text).filter(isCode).map { $0.lowercased() }
    }

    /// Digit runs of the spans that are numbers only ("0761", "12.06.2026" gives 12, 06, 2026).
    static func plainDigits(_ text: String) -> Set<String> {
        Set(spans(text).filter { !$0.contains(where: \.isLetter) }.flatMap { Words.digitRuns($0) })
    }
}

/// A number as written: digit runs joined by single spaces, dots, dashes, slashes or colons
/// ("0761 387 2290", "12.06.2026", "7:30").
struct NumberGroup: Equatable {
    var runs: [String]
    /// Joined by spaces (a phone number): only the whole group is the same number.
    var spaced: Bool

    /// The numbers of a text, codes left out ("C-12" holds no number 12).
    static func all(in text: String) -> [NumberGroup] { parse(Codes.blanked(text)) }

    /// Every digit group of a text as written, codes included.
    static func parse(_ text: String) -> [NumberGroup] {
        var out: [NumberGroup] = []
        var runs: [String] = []
        var cur = ""
        var spaced = false
        var separator: Character?
        func close() {
            if !cur.isEmpty { runs.append(cur) }
            if !runs.isEmpty { out.append(NumberGroup(runs: runs, spaced: spaced)) }
            runs = []
            cur = ""
            spaced = false
            separator = nil
        }
        for ch in text {
            if ch.isASCII && ch.isNumber {
                if let sep = separator {
                    runs.append(cur)
                    cur = ""
                    if sep == " " || sep == "\u{00A0}" { spaced = true }
                    separator = nil
                }
                cur.append(ch)
            } else if !cur.isEmpty && separator == nil && " .-/:\u{00A0}".contains(ch) {
                separator = ch
            } else {
                close()
            }
        }
        close()
        return out
    }

    /// This number, as written in a source, contains `other` as a whole: the same runs, or
    /// (for dates, times and decimals, not phone numbers) a whole part of them ("2026" of
    /// "12.06.2026").
    func holds(_ other: NumberGroup) -> Bool {
        if runs == other.runs { return true }
        guard !spaced, other.runs.count < runs.count else { return false }
        for start in 0...(runs.count - other.runs.count) where Array(runs[start..<start + other.runs.count]) == other.runs { return true }
        return false
    }
}
