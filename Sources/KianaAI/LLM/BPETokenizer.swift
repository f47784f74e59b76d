/// A byte-level BPE tokenizer built from a GGUF file's `tokenizer.ggml.*` metadata (the GPT-2
/// scheme: bytes mapped to printable characters, merges applied by rank).
///
/// Encoding: control and user-defined tokens are matched whole first (when `special` is on),
/// the rest is split by the model's pre-tokenizer (`smollm`: every digit alone, then the GPT-2
/// rules), and each piece is merged by rank. Decoding maps characters back to bytes;
/// `StreamDecoder` holds back an incomplete UTF-8 sequence until its last byte arrives.
public struct BPETokenizer: Sendable {
    public enum PreTokenizer: String, Sendable {
        /// GPT-2's rules (`'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`).
        case gpt2
        /// `\p{N}` first (each digit alone), then GPT-2's rules: SmolLM, StarCoder.
        case smollm
    }

    public let tokens: [String]
    /// ggml token types: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
    public let types: [Int]
    public let pre: PreTokenizer
    public let bos: Int32?
    public let eos: Int32?
    /// End-of-generation tokens: eos, eot and the well-known end markers present in the vocabulary.
    public let endOfGeneration: Set<Int32>
    let ids: [String: Int32]
    /// (left id << 32 | right id) → (rank, merged id).
    let merges: [UInt64: (rank: Int32, id: Int32)]
    /// Control and user-defined tokens, longest first.
    let specials: [(text: [UInt8], id: Int32)]
    let byteToken: [Int32]
    let charToByte: [UInt32: UInt8]

    public var vocabularySize: Int { tokens.count }

    public init(gguf: GGUFFile) throws(KianaAIError) {
        let m = gguf.metadata
        func bad(_ why: String) -> KianaAIError { KianaAIError(.modelCorrupt, "\(gguf.path): tokenizer metadata \(why)") }
        guard m["tokenizer.ggml.model"]?.string == "gpt2" else {
            throw KianaAIError(
                .modelCorrupt, "\(gguf.path): tokenizer model \(m["tokenizer.ggml.model"]?.string ?? "none") is not supported (byte-level BPE, \"gpt2\", is)")
        }
        guard let toks = m["tokenizer.ggml.tokens"]?.stringArray, !toks.isEmpty, toks.count < 1 << 24 else { throw bad("has no token list") }
        guard let mergeList = m["tokenizer.ggml.merges"]?.stringArray else { throw bad("has no merges") }
        let preName = m["tokenizer.ggml.pre"]?.string ?? "default"
        switch preName {
        case "smollm", "starcoder", "refact", "codeshell": pre = .smollm
        case "gpt-2", "gpt2", "default": pre = .gpt2
        default: throw KianaAIError(.modelCorrupt, "\(gguf.path): pre-tokenizer \"\(preName)\" is not supported (gpt2, smollm are)")
        }
        var types = m["tokenizer.ggml.token_type"]?.intArray ?? []
        if types.count != toks.count { types = [Int](repeating: 1, count: toks.count) }
        var ids: [String: Int32] = [:]
        ids.reserveCapacity(toks.count)
        for (i, t) in toks.enumerated() where ids[t] == nil { ids[t] = Int32(i) }
        var merges: [UInt64: (rank: Int32, id: Int32)] = [:]
        merges.reserveCapacity(mergeList.count)
        for (rank, line) in mergeList.enumerated() {
            guard let sp = line.firstIndex(of: " ", after: line.startIndex) else { throw bad("merge \(rank) has no space") }
            let l = String(line[..<sp])
            let r = String(line[line.index(after: sp)...])
            guard let a = ids[l], let b = ids[r], let c = ids[l + r] else { continue }
            let key = UInt64(UInt32(a)) << 32 | UInt64(UInt32(b))
            if merges[key] == nil { merges[key] = (Int32(rank), c) }
        }
        var specials: [(text: [UInt8], id: Int32)] = []
        for (i, t) in toks.enumerated() where (types[i] == 3 || types[i] == 4) && !t.isEmpty {
            specials.append((Array(t.utf8), Int32(i)))
        }
        specials.sort { $0.text.count > $1.text.count }
        // GPT-2's byte ↔ character table.
        var byteToChar = [UInt32](repeating: 0, count: 256)
        var n: UInt32 = 0
        for b in 0..<256 {
            if (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b) {
                byteToChar[b] = UInt32(b)
            } else {
                byteToChar[b] = 256 + n
                n += 1
            }
        }
        var charToByte: [UInt32: UInt8] = [:]
        var byteToken = [Int32](repeating: -1, count: 256)
        for b in 0..<256 {
            charToByte[byteToChar[b]] = UInt8(b)
            let s = String(Character(Unicode.Scalar(byteToChar[b])!))
            byteToken[b] = ids[s] ?? -1
        }
        func id(_ key: String) -> Int32? {
            guard let v = m[key]?.int, v >= 0, v < toks.count else { return nil }
            return Int32(v)
        }
        bos = id("tokenizer.ggml.bos_token_id")
        eos = id("tokenizer.ggml.eos_token_id")
        var eog: Set<Int32> = []
        if let eos { eog.insert(eos) }
        if let eot = id("tokenizer.ggml.eot_token_id") { eog.insert(eot) }
        for name in ["<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "</s>"] {
            if let i = ids[name], types[Int(i)] == 3 || types[Int(i)] == 4 { eog.insert(i) }
        }
        endOfGeneration = eog
        self.tokens = toks
        self.types = types
        self.ids = ids
        self.merges = merges
        self.specials = specials
        self.byteToken = byteToken
        self.charToByte = charToByte
    }

    public func id(of token: String) -> Int32? { ids[token] }

    /// Token ids for `text`. With `special`, control tokens written in the text (such as
    /// `<|im_start|>`) become their single id; without it they are tokenized as plain text.
    public func encode(_ text: String, special: Bool = true) -> [Int32] {
        let bytes = Array(text.utf8)
        var out: [Int32] = []
        out.reserveCapacity(bytes.count / 3 + 4)
        var start = 0
        var i = 0
        if special && !specials.isEmpty {
            while i < bytes.count {
                if let s = specials.first(where: { matches($0.text, bytes, at: i) }) {
                    encodePlain(bytes[start..<i], into: &out)
                    out.append(s.id)
                    i += s.text.count
                    start = i
                } else {
                    i += 1
                }
            }
        }
        encodePlain(bytes[start..<bytes.count], into: &out)
        return out
    }

    private func matches(_ needle: [UInt8], _ hay: [UInt8], at i: Int) -> Bool {
        guard hay[i] == needle[0], hay.count - i >= needle.count else { return false }
        for k in 1..<needle.count where hay[i + k] != needle[k] { return false }
        return true
    }

    private func encodePlain(_ bytes: ArraySlice<UInt8>, into out: inout [Int32]) {
        guard !bytes.isEmpty else { return }
        let scalars = Array(String(decoding: bytes, as: UTF8.self).unicodeScalars)
        for piece in pretokenize(scalars) { bpe(piece, into: &out) }
    }

    /// Splits scalars into pre-token pieces.
    func pretokenize(_ s: [Unicode.Scalar]) -> [ArraySlice<Unicode.Scalar>] {
        var pieces: [ArraySlice<Unicode.Scalar>] = []
        switch pre {
        case .gpt2: Self.gpt2Split(s[...], into: &pieces)
        case .smollm:
            var start = 0
            for (i, c) in s.enumerated() where Self.category(c) == .number {
                if start < i { Self.gpt2Split(s[start..<i], into: &pieces) }
                pieces.append(s[i...i])
                start = i + 1
            }
            if start < s.count { Self.gpt2Split(s[start..<s.count], into: &pieces) }
        }
        return pieces
    }

    enum Category { case letter, number, whitespace, other, undefined }

    static func category(_ c: Unicode.Scalar) -> Category {
        if c.properties.isWhitespace { return .whitespace }
        switch c.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return .letter
        case .decimalNumber, .letterNumber, .otherNumber: return .number
        case .unassigned: return .undefined
        default: return .other
        }
    }

    /// GPT-2's split, as llama.cpp's hand-written matcher applies it (the regex with a final `\s+`).
    static func gpt2Split(_ s: ArraySlice<Unicode.Scalar>, into pieces: inout [ArraySlice<Unicode.Scalar>]) {
        let end = s.endIndex
        var pos = s.startIndex
        var start = pos
        func cat(_ i: Int) -> Category? { i < end ? category(s[i]) : nil }
        func add(_ p: Int) {
            if p > start { pieces.append(s[start..<p]) }
            start = p
        }
        while pos < end {
            let c = s[pos]
            if c == "'" && pos + 1 < end {
                let c1 = s[pos + 1]
                if c1 == "s" || c1 == "t" || c1 == "m" || c1 == "d" {
                    pos += 2
                    add(pos)
                    continue
                }
                if pos + 2 < end {
                    let c2 = s[pos + 2]
                    if (c1 == "r" && c2 == "e") || (c1 == "v" && c2 == "e") || (c1 == "l" && c2 == "l") {
                        pos += 3
                        add(pos)
                        continue
                    }
                }
            }
            let lead = c == " " ? cat(pos + 1) : cat(pos)
            if lead == .letter || lead == .number {
                if c == " " { pos += 1 }
                while cat(pos) == lead { pos += 1 }
                add(pos)
                continue
            }
            if lead == .other {
                if c == " " { pos += 1 }
                while cat(pos) == .other { pos += 1 }
                add(pos)
                continue
            }
            var ws = 0
            while cat(pos + ws) == .whitespace { ws += 1 }
            if ws > 1 && pos + ws < end {
                pos += ws - 1
                add(pos)
                continue
            }
            if ws > 0 {
                pos += ws
                add(pos)
                continue
            }
            pos += 1
            add(pos)
        }
        add(end)
    }

    /// Merges one pre-token piece by rank and appends its ids.
    func bpe(_ piece: ArraySlice<Unicode.Scalar>, into out: inout [Int32]) {
        var utf8: [UInt8] = []
        for c in piece { utf8.append(contentsOf: Array(String(Character(c)).utf8)) }
        var sym = utf8.map { byteToken[Int($0)] }
        if sym.contains(-1) {  // a vocabulary without every byte: skip what cannot be represented
            sym.removeAll { $0 < 0 }
        }
        while sym.count > 1 {
            var best = -1
            var bestRank = Int32.max
            var bestId: Int32 = 0
            for i in 0..<(sym.count - 1) {
                let key = UInt64(UInt32(sym[i])) << 32 | UInt64(UInt32(sym[i + 1]))
                if let m = merges[key], m.rank < bestRank {
                    bestRank = m.rank
                    bestId = m.id
                    best = i
                }
            }
            if best < 0 { break }
            sym[best] = bestId
            sym.remove(at: best + 1)
        }
        out.append(contentsOf: sym)
    }

    /// The bytes a token stands for. Control tokens give their text only with `special`.
    public func bytes(of token: Int32, special: Bool = false) -> [UInt8] {
        guard token >= 0, Int(token) < tokens.count else { return [] }
        let t = tokens[Int(token)]
        let type = types[Int(token)]
        if type == 3 { return special ? Array(t.utf8) : [] }
        if type == 4 { return Array(t.utf8) }
        var out: [UInt8] = []
        for c in t.unicodeScalars {
            if let b = charToByte[c.value] { out.append(b) } else { out.append(contentsOf: Array(String(Character(c)).utf8)) }
        }
        return out
    }

    /// Text of a whole token sequence (invalid UTF-8 becomes U+FFFD).
    public func decode(_ ids: [Int32], special: Bool = false) -> String {
        String(decoding: ids.flatMap { bytes(of: $0, special: special) }, as: UTF8.self)
    }

    /// Decodes a stream of tokens into text pieces that are always whole UTF-8 characters.
    public struct StreamDecoder: Sendable {
        let tokenizer: BPETokenizer
        var pending: [UInt8] = []
        public init(_ tokenizer: BPETokenizer) { self.tokenizer = tokenizer }

        /// The text that became complete with this token (possibly empty).
        public mutating func push(_ token: Int32) -> String {
            pending += tokenizer.bytes(of: token)
            let n = Self.completePrefix(pending)
            guard n > 0 else { return "" }
            let s = String(decoding: pending[..<n], as: UTF8.self)
            pending.removeFirst(n)
            return s
        }

        /// Whatever is left (an incomplete sequence becomes U+FFFD).
        public mutating func flush() -> String {
            defer { pending = [] }
            return pending.isEmpty ? "" : String(decoding: pending, as: UTF8.self)
        }

        /// Length of the longest prefix that does not end inside a UTF-8 sequence.
        static func completePrefix(_ b: [UInt8]) -> Int {
            var i = b.count - 1
            var back = 0
            while i >= 0, back < 4, b[i] & 0xC0 == 0x80 {
                i -= 1
                back += 1
            }
            guard i >= 0 else { return b.count > 3 ? b.count : 0 }
            let lead = b[i]
            let need = lead < 0x80 ? 1 : lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1
            return b.count - i >= need ? b.count : i
        }
    }
}

extension String {
    fileprivate func firstIndex(of c: Character, after: Index) -> Index? {
        self[index(after: after)...].firstIndex(of: c)
    }
}
