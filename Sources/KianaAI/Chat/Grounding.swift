import Foundation

/// A knowledge item offered to the model as a numbered source.
public struct GroundingSource: Sendable, Equatable, Codable {
    /// Hex ID of the knowledge item.
    public var id: String
    public var title: String?
    public var text: String
    public var source: String?
    public init(id: String, title: String?, text: String, source: String?) {
        self.id = id
        self.title = title
        self.text = text
        self.source = source
    }
}

/// A prompt with the sources that made it in (numbered 1… in this order).
public struct GroundedPrompt: Sendable {
    public var messages: [ChatMessage]
    public var sources: [GroundingSource]
    /// History turns left out to fit the context.
    public var droppedHistory: Int
    /// Sources left out (or cut) to fit the context.
    public var droppedSources: Int
}

/// Building grounded prompts and reading citations back: pure functions, no model, no I/O.
public enum Grounding {
    public static let instructions = """
        You are KI_ana, a private assistant running on the owner's own device. \
        Answer the question using the numbered sources below, which are what the owner taught you. \
        Cite the sources you use with their number in square brackets, like [1]. \
        If the sources do not contain the answer, say that you do not know it yet.
        """

    /// Lays out system instructions with numbered sources, the history and the question, so
    /// that prompt + `answerTokens` fit `contextSize`. What gives way, in order: the oldest
    /// history turns, then the lowest-ranked sources, then the length of the last source.
    /// The question is never cut: if it alone does not fit, that is an error.
    public static func build(
        question: String, sources: [GroundingSource], history: [ChatMessage],
        contextSize: Int, answerTokens: Int, countTokens: (String) -> Int
    ) throws(KianaAIError) -> GroundedPrompt {
        let overhead = 16  // template markers per message
        let budget = contextSize - answerTokens
        let questionCost = countTokens(question) + overhead
        let bare = countTokens(instructions) + overhead
        guard questionCost + bare <= budget else {
            throw KianaAIError(
                .contextFull,
                "the question alone (\(questionCost) tokens) does not fit the context of \(contextSize) tokens with \(answerTokens) left for the answer; shorten it or use a larger --context"
            )
        }
        var remaining = budget - questionCost - bare
        // Sources get priority over history, but history keeps at least its last turn pair if it fits.
        var chosen: [GroundingSource] = []
        var dropped = 0
        let sourceBudget = max(remaining * 3 / 4, remaining - history.suffix(2).reduce(0) { $0 + countTokens($1.content) + overhead })
        var used = 0
        for s in sources {
            let line = sourceLine(chosen.count + 1, s)
            let cost = countTokens(line) + 1
            if used + cost <= sourceBudget {
                chosen.append(s)
                used += cost
            } else if chosen.isEmpty || sourceBudget - used > 64 {
                // Cut this source to what is left (by characters, checked by tokens).
                var cut = s
                var chars = s.text.count * max(0, sourceBudget - used - 16) / max(cost, 1)
                while chars > 20 {
                    cut.text = String(s.text.prefix(chars)) + " …"
                    if used + countTokens(sourceLine(chosen.count + 1, cut)) + 1 <= sourceBudget { break }
                    chars = chars * 3 / 4
                }
                if chars > 20 {
                    chosen.append(cut)
                    used += countTokens(sourceLine(chosen.count, cut)) + 1
                }
                dropped += 1
            } else {
                dropped += 1
            }
        }
        remaining -= used
        var kept: [ChatMessage] = []
        for m in history.reversed() {
            let cost = countTokens(m.content) + overhead
            if cost > remaining { break }
            kept.insert(m, at: 0)
            remaining -= cost
        }
        // A history must not start with an assistant turn.
        while kept.first?.role == .assistant { kept.removeFirst() }
        var system = instructions
        if chosen.isEmpty {
            system += "\n\nThere are no sources for this question."
        } else {
            system += "\n\nSources:\n" + chosen.enumerated().map { sourceLine($0.offset + 1, $0.element) }.joined(separator: "\n")
        }
        return GroundedPrompt(
            messages: [ChatMessage(.system, system)] + kept + [ChatMessage(.user, question)],
            sources: chosen, droppedHistory: history.count - kept.count, droppedSources: dropped)
    }

    static func sourceLine(_ n: Int, _ s: GroundingSource) -> String {
        let text = s.text.replacingOccurrences(of: "\n", with: " ")
        if let t = s.title, !t.isEmpty, !text.hasPrefix(t) { return "[\(n)] \(t): \(text)" }
        return "[\(n)] \(text)"
    }

    /// The source numbers (1-based) an answer cites: its `[n]` markers (also `[1, 2]`,
    /// `[Source 1]`); when it has none, the source whose words the answer repeats most (at
    /// least two content words, and half of the source's or a fifth of the answer's).
    public static func citations(answer: String, sources: [GroundingSource]) -> [Int] {
        var found: [Int] = []
        if let re = try? NSRegularExpression(pattern: #"\[(?:sources?\s*)?(\d+(?:\s*,\s*\d+)*)\]"#, options: [.caseInsensitive]) {
            let ns = answer as NSString
            for m in re.matches(in: answer, range: NSRange(location: 0, length: ns.length)) {
                for part in ns.substring(with: m.range(at: 1)).split(separator: ",") {
                    if let n = Int(part.trimmingCharacters(in: .whitespaces)), n >= 1, n <= sources.count, !found.contains(n) { found.append(n) }
                }
            }
        }
        if !found.isEmpty { return found }
        let words = contentWords(answer)
        guard !words.isEmpty else { return [] }
        var best = 0
        var bestOverlap = 0
        var bestSourceWords = 1
        for (i, s) in sources.enumerated() {
            let sourceWords = contentWords((s.title ?? "") + " " + s.text)
            let overlap = words.intersection(sourceWords).count
            if overlap > bestOverlap {
                bestOverlap = overlap
                best = i + 1
                bestSourceWords = max(1, sourceWords.count)
            }
        }
        // Evidence: the answer repeats half of the source's content words, or the source makes
        // up a fifth of the answer's (a long, rambling answer can still restate a short fact).
        let covers = Double(bestOverlap) >= Double(bestSourceWords) * 0.5 || Double(bestOverlap) >= Double(words.count) * 0.2
        return bestOverlap >= 2 && covers ? [best] : []
    }

    static let stopWords: Set<String> = [
        "the", "and", "that", "this", "with", "for", "are", "was", "were", "you", "your",
        "from", "have", "has", "not", "but", "can", "will", "they", "their", "there",
        "what", "which", "who", "when", "where", "how", "about", "into", "than", "then",
        "der", "die", "das", "und", "ist", "ein", "eine", "nicht", "mit", "von", "den",
    ]

    static func contentWords(_ s: String) -> Set<String> {
        Set(Words.tokens(s).filter { $0.count >= 3 && !stopWords.contains($0) })
    }

    /// The question trimmed, or the reason it cannot be asked: empty, over 64 KiB, or holding a
    /// NUL (stored as SQL text, which ends at NUL: refused rather than cut). Checked where the
    /// question arrives, before anything streams.
    public static func checkedQuestion(_ question: String, conversation: String? = nil) throws(KianaAIError) -> String {
        let q = question.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !q.isEmpty else { throw KianaAIError(.invalidInput, "the question is empty") }
        guard q.utf8.count <= 64 * 1024 else { throw KianaAIError(.invalidInput, "the question is longer than 64 KiB") }
        guard !q.utf8.contains(0), conversation?.utf8.contains(0) != true else {
            throw KianaAIError(.invalidInput, "the question and the conversation ID must not contain NUL characters")
        }
        return q
    }

    /// "remember that" / "merk dir" with nothing after it: a command missing its fact, which
    /// must not be asked as a question (it would be answered "I don't know").
    public static func isBareRememberCommand(_ text: String) -> Bool {
        let t = text.lowercased().trimmingCharacters(in: CharacterSet.whitespacesAndNewlines.union(CharacterSet(charactersIn: ":,.!?…")))
        return [
            "remember", "remember that", "remember this", "please remember", "please remember that", "please remember this",
            "merk dir", "merk dir das", "merk dir, dass", "merk dir dass", "merk dir bitte", "merk dir bitte, dass",
            "bitte merk dir", "bitte merk dir das", "merke dir", "merke dir das", "merke dir, dass", "merke dir dass",
        ].contains(t)
    }

    /// A greeting, thanks or acknowledgement as the whole message ("hi", "Thanks!", "vielen
    /// Dank", "ok"): its fixed reply in the language it was said in, else nil. Nothing is looked
    /// up for it: in a conversation it would count as a follow-up naming nothing and repeat the
    /// previous answer, and alone it would be answered "I don't know".
    public static func smallTalkReply(_ text: String) -> String? {
        // Words of letters and digits ("ok 42" is no acknowledgement); punctuation and emoji dropped.
        let t = text.lowercased().components(separatedBy: CharacterSet.alphanumerics.inverted).filter { !$0.isEmpty }.joined(separator: " ")
        for (phrases, reply) in smallTalk where phrases.contains(t) { return reply }
        return nil
    }

    static let smallTalk: [(Set<String>, String)] = [
        (
            ["hi", "hello", "hey", "hi there", "hello there", "good morning", "good afternoon", "good evening"],
            "Hello! Ask me about anything you have taught me, or teach me something with “remember that …”."
        ),
        (
            ["hallo", "moin", "servus", "guten morgen", "guten tag", "guten abend"],
            "Hallo! Frag mich nach dem, was du mir beigebracht hast, oder bring mir etwas bei mit „merk dir, dass …“."
        ),
        (
            ["thanks", "thank you", "thanks a lot", "thank you very much", "thank you so much", "thanks so much", "many thanks", "cheers", "thx", "ty",
             "ok thanks", "ok thank you", "great thanks"],
            "You're welcome."
        ),
        (
            ["danke", "danke schön", "danke schoen", "dankeschön", "dankeschoen", "danke sehr", "vielen dank", "vielen vielen dank", "ok danke", "super danke",
             "danke dir"],
            "Gern geschehen."
        ),
        (["bye", "goodbye", "good bye", "see you", "good night"], "Goodbye!"),
        (["tschüss", "tschüs", "tschuess", "ciao", "bis bald", "gute nacht", "auf wiedersehen"], "Tschüss!"),
        (["ok", "okay", "great", "cool", "got it", "perfect", "alright", "all right"], "Alright."),
        (["alles klar", "prima", "super", "passt"], "Alles klar."),
    ]

    /// The fact in "remember that …" / "merk dir …" (and close variants, asked politely: "can
    /// you remember that …?"), or nil. A question after the command ("remember: what is …?") is
    /// no fact: nil, so it is asked instead of stored.
    public static func rememberCommand(_ text: String) -> String? {
        if isBareRememberCommand(text) { return nil }  // "merk dir das": "das" is no fact
        let t = text.trimmingCharacters(in: .whitespacesAndNewlines)
        let lower = t.lowercased()
        // A polite request is a question in form only: its "?" is not the fact's.
        let asking = ["can you ", "could you ", "would you ", "will you ", "kannst du ", "könntest du "]
        let polite = asking.flatMap { a in ["please ", ""].map { a + $0 } }.first { lower.hasPrefix($0) }
        let body = polite.map { String(t.dropFirst($0.count)) } ?? t
        let bodyLower = body.lowercased()
        let prefixes = [
            "please remember that ", "remember that ", "remember: ",
            "merk dir bitte, dass ", "merk dir, dass ", "merk dir dass ", "merk dir: ", "merk dir ",
            "merke dir, dass ", "merke dir dass ", "merke dir ",
            "dir merken, dass ", "dir merken dass ",
        ]
        for p in prefixes where bodyLower.hasPrefix(p) {
            var fact = String(body.dropFirst(p.count)).trimmingCharacters(in: .whitespacesAndNewlines)
            if polite != nil {
                while fact.hasSuffix("?") { fact.removeLast() }
                fact = fact.trimmingCharacters(in: .whitespaces)
                if !fact.isEmpty, !".!…".contains(fact.last!) { fact += "." }
            } else if fact.hasSuffix("?") {
                return nil
            }
            guard !fact.isEmpty else { return nil }
            fact = fact.prefix(1).uppercased() + fact.dropFirst()
            return fact
        }
        return nil
    }
}
