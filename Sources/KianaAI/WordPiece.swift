import Foundation

/// BERT's uncased tokenizer: basic tokenization (cleaning, CJK spacing, lower-casing, accent
/// stripping, punctuation splitting) followed by greedy longest-match WordPiece, as in the
/// original BERT code and Hugging Face's BertTokenizer with `do_lower_case=True`.
public struct WordPieceTokenizer: Sendable {
    public let vocab: [String: Int32]
    public let unk: Int32, cls: Int32, sep: Int32, pad: Int32
    /// Words longer than this many characters become [UNK] (BERT's `max_input_chars_per_word`).
    public let maxCharsPerWord = 100

    /// Reads vocab.txt: one token per line, the line number is the ID.
    public init(vocabPath: String) throws(KianaAIError) {
        guard let text = try? String(contentsOfFile: vocabPath, encoding: .utf8) else {
            throw KianaAIError(.modelMissing, "cannot read vocabulary \(vocabPath)")
        }
        try self.init(vocabText: text)
    }

    public init(vocabText text: String) throws(KianaAIError) {
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        if lines.last?.isEmpty == true { lines.removeLast() }
        var v: [String: Int32] = [:]
        v.reserveCapacity(lines.count)
        for (i, line) in lines.enumerated() {
            let token = line.hasSuffix("\r") ? String(line.dropLast()) : String(line)
            if v[token] == nil { v[token] = Int32(i) }
        }
        func special(_ s: String) throws(KianaAIError) -> Int32 {
            guard let i = v[s] else { throw KianaAIError(.modelCorrupt, "vocabulary has no \(s) token") }
            return i
        }
        vocab = v
        unk = try special("[UNK]")
        cls = try special("[CLS]")
        sep = try special("[SEP]")
        pad = try special("[PAD]")
    }

    /// Token IDs with [CLS] and [SEP], truncated so the whole sequence has at most `maxLength` IDs.
    public func encode(_ text: String, maxLength: Int = 256) -> [Int32] {
        var ids: [Int32] = [cls]
        let limit = max(2, maxLength) - 1
        outer: for word in basicTokens(text) {
            for id in wordPiece(word) {
                if ids.count >= limit { break outer }
                ids.append(id)
            }
        }
        ids.append(sep)
        return ids
    }

    /// The basic tokenizer's words (as Unicode scalar arrays).
    func basicTokens(_ text: String) -> [[Unicode.Scalar]] {
        var words: [[Unicode.Scalar]] = []
        var current: [Unicode.Scalar] = []
        func flushWord() {
            guard !current.isEmpty else { return }
            // lower-case, then NFD and drop non-spacing marks, then split on punctuation
            let lowered = String(String.UnicodeScalarView(current)).lowercased()
            var piece: [Unicode.Scalar] = []
            for s in lowered.decomposedStringWithCanonicalMapping.unicodeScalars {
                if s.properties.generalCategory == .nonspacingMark { continue }
                if Self.isPunctuation(s) {
                    if !piece.isEmpty {
                        words.append(piece)
                        piece = []
                    }
                    words.append([s])
                } else {
                    piece.append(s)
                }
            }
            if !piece.isEmpty { words.append(piece) }
            current = []
        }
        for s in text.unicodeScalars {
            let v = s.value
            if v == 0 || v == 0xFFFD || Self.isControl(s) { continue }
            if Self.isWhitespace(s) {
                flushWord()
                continue
            }
            if Self.isCJK(v) {
                flushWord()
                current = [s]
                flushWord()
                continue
            }
            current.append(s)
        }
        flushWord()
        return words
    }

    /// Greedy longest-match-first WordPiece of one word; the whole word is [UNK] if any part fails.
    func wordPiece(_ word: [Unicode.Scalar]) -> [Int32] {
        if word.count > maxCharsPerWord { return [unk] }
        var out: [Int32] = []
        var start = 0
        while start < word.count {
            var end = word.count
            var found: Int32?
            while start < end {
                var s = start > 0 ? "##" : ""
                s.unicodeScalars.append(contentsOf: word[start..<end])
                if let id = vocab[s] {
                    found = id
                    break
                }
                end -= 1
            }
            guard let id = found else { return [unk] }
            out.append(id)
            start = end
        }
        return out
    }

    static func isWhitespace(_ s: Unicode.Scalar) -> Bool {
        switch s.value {
        case 0x20, 0x09, 0x0A, 0x0D: return true
        default: return s.properties.generalCategory == .spaceSeparator
        }
    }

    static func isControl(_ s: Unicode.Scalar) -> Bool {
        switch s.value {
        case 0x09, 0x0A, 0x0D: return false
        default:
            let c = s.properties.generalCategory
            return c == .control || c == .format
        }
    }

    static func isPunctuation(_ s: Unicode.Scalar) -> Bool {
        let v = s.value
        if (33...47).contains(v) || (58...64).contains(v) || (91...96).contains(v) || (123...126).contains(v) { return true }
        switch s.properties.generalCategory {
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
            .initialPunctuation, .finalPunctuation, .otherPunctuation:
            return true
        default: return false
        }
    }

    /// The CJK Unified Ideographs blocks BERT spaces out (not kana or hangul).
    static func isCJK(_ v: UInt32) -> Bool {
        (0x4E00...0x9FFF).contains(v) || (0x3400...0x4DBF).contains(v) || (0x20000...0x2A6DF).contains(v)
            || (0x2A700...0x2B73F).contains(v) || (0x2B740...0x2B81F).contains(v) || (0x2B820...0x2CEAF).contains(v)
            || (0xF900...0xFAFF).contains(v) || (0x2F800...0x2FA1F).contains(v)
    }
}
