import Foundation

/// Word error rate: the word-level Levenshtein distance (substitutions + deletions + insertions)
/// between a reference and a hypothesis, over the reference's word count. Words are compared
/// lower-cased with punctuation removed (apostrophes inside words kept), as NIST's sclite and
/// `jiwer` with its default normalisation do.
public struct WordErrors: Sendable, Equatable {
    public var substitutions = 0
    public var deletions = 0
    public var insertions = 0
    public var referenceWords = 0

    public init() {}

    public var errors: Int { substitutions + deletions + insertions }
    /// errors ÷ reference words (0 for an empty reference matched by an empty hypothesis).
    public var rate: Double { referenceWords == 0 ? (errors == 0 ? 0 : 1) : Double(errors) / Double(referenceWords) }

    public static func + (a: WordErrors, b: WordErrors) -> WordErrors {
        var s = WordErrors()
        s.substitutions = a.substitutions + b.substitutions
        s.deletions = a.deletions + b.deletions
        s.insertions = a.insertions + b.insertions
        s.referenceWords = a.referenceWords + b.referenceWords
        return s
    }

    /// The words of `text` as WER compares them.
    public static func words(_ text: String) -> [String] {
        let lowered = text.lowercased()
        var words: [String] = []
        var current = ""
        let chars = Array(lowered)
        for (i, c) in chars.enumerated() {
            if c.isLetter || c.isNumber {
                current.append(c)
            } else if c == "'" || c == "’", !current.isEmpty, i + 1 < chars.count, chars[i + 1].isLetter {
                current.append("'")
            } else if !current.isEmpty {
                words.append(current)
                current = ""
            }
        }
        if !current.isEmpty { words.append(current) }
        return words
    }

    /// The minimal edit between `reference` and `hypothesis`, counted by kind.
    public static func between(reference: String, hypothesis: String) -> WordErrors {
        let r = words(reference)
        let h = words(hypothesis)
        // d[i][j]: (cost, subs, dels, ins) to turn r[..<i] into h[..<j]; ties prefer substitution.
        typealias Cell = (cost: Int, s: Int, d: Int, i: Int)
        var prev = [Cell](repeating: (0, 0, 0, 0), count: h.count + 1)
        for j in 0...h.count { prev[j] = (j, 0, 0, j) }
        for i in 1...max(1, r.count) where !r.isEmpty {
            var row = [Cell](repeating: (0, 0, 0, 0), count: h.count + 1)
            row[0] = (i, 0, i, 0)
            for j in stride(from: 1, through: h.count, by: 1) {
                let same = r[i - 1] == h[j - 1]
                var best = prev[j - 1]
                best.cost += same ? 0 : 1
                if !same { best.s += 1 }
                var del = prev[j]
                del.cost += 1
                del.d += 1
                var ins = row[j - 1]
                ins.cost += 1
                ins.i += 1
                if del.cost < best.cost { best = del }
                if ins.cost < best.cost { best = ins }
                row[j] = best
            }
            prev = row
        }
        let last = prev[h.count]
        var e = WordErrors()
        e.substitutions = last.s
        e.deletions = last.d
        e.insertions = last.i
        e.referenceWords = r.count
        return e
    }
}

/// Streamed text in, whole sentences out, so speech can start on the first sentence while the
/// rest of an answer is still being generated. A sentence is emitted once the next one has
/// begun (only then is a full stop known not to be an abbreviation); a run without a sentence
/// end longer than `maxLength` is cut at its last comma or space.
public struct SentenceStream: Sendable {
    var buffer = ""
    public var maxLength: Int

    public init(maxLength: Int = 240) { self.maxLength = maxLength }

    /// Adds streamed text; returns the sentences it completed.
    public mutating func add(_ piece: String) -> [String] {
        buffer += piece
        var out: [String] = []
        let parts = Sentences.split(buffer)
        if parts.count >= 2 {
            out = Array(parts.dropLast())
            // Keep the unfinished tail as written (split trims; find it from the end).
            let tail = parts.last!
            if let r = buffer.range(of: tail, options: .backwards) { buffer = String(buffer[r.lowerBound...]) } else { buffer = tail }
        }
        while buffer.count > maxLength {
            let head = buffer.prefix(maxLength)
            let cut = head.lastIndex(of: ",").map { buffer.index(after: $0) } ?? head.lastIndex(of: " ") ?? head.endIndex
            let piece = buffer[..<cut].trimmingCharacters(in: .whitespacesAndNewlines)
            if !piece.isEmpty { out.append(piece) }
            buffer = String(buffer[cut...])
        }
        return out
    }

    /// The rest, at the end of the stream.
    public mutating func finish() -> [String] {
        let rest = Sentences.split(buffer)
        buffer = ""
        return rest
    }
}
