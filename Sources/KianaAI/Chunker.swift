import Foundation

/// One piece of a document to store as a knowledge item.
public struct Chunk: Sendable, Equatable {
    /// Heading path of the section the chunk is in ("Setup › Network"), empty before any heading.
    public var heading: String
    public var text: String
}

/// Splits a document into overlapping chunks that fit the embedder (≤ 256 tokens ≈ 1,000
/// characters of English): sections at Markdown headings are never mixed, paragraphs are packed
/// whole up to `target` characters, a paragraph longer than `maximum` is split at sentence ends
/// (then at spaces), and a chunk that continues a section starts with the last sentences of the
/// previous one (up to `overlap` characters) so a fact on a boundary is found from both sides.
public struct Chunker: Sendable {
    public var target = 900
    public var maximum = 1200
    public var overlap = 150

    public init() {}

    public func chunks(_ document: String) -> [Chunk] {
        var out: [Chunk] = []
        var headings: [(level: Int, title: String)] = []
        var paragraph: [Substring] = []
        var paragraphs: [String] = []
        var inFence = false

        func flushParagraph() {
            let p = paragraph.joined(separator: "\n").trimmingCharacters(in: .whitespacesAndNewlines)
            if !p.isEmpty { paragraphs.append(p) }
            paragraph = []
        }
        func flushSection() {
            flushParagraph()
            out += pack(paragraphs, heading: headings.map(\.title).joined(separator: " › "))
            paragraphs = []
        }
        for line in document.split(separator: "\n", omittingEmptySubsequences: false) {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.hasPrefix("```") || trimmed.hasPrefix("~~~") {
                inFence.toggle()
                paragraph.append(line)
                continue
            }
            if !inFence, let (level, title) = Self.heading(trimmed) {
                flushSection()
                while let last = headings.last, last.level >= level { headings.removeLast() }
                headings.append((level, title))
                continue
            }
            if trimmed.isEmpty && !inFence { flushParagraph() } else { paragraph.append(line) }
        }
        flushSection()
        return out
    }

    /// "## Title" → (2, "Title"); nil for other lines.
    static func heading(_ line: String) -> (Int, String)? {
        guard line.hasPrefix("#") else { return nil }
        let level = line.prefix { $0 == "#" }.count
        guard level <= 6 else { return nil }
        let rest = line.dropFirst(level)
        guard rest.isEmpty || rest.first == " " || rest.first == "\t" else { return nil }
        let title = rest.trimmingCharacters(in: .whitespaces).trimmingCharacters(in: CharacterSet(charactersIn: "#")).trimmingCharacters(in: .whitespaces)
        return title.isEmpty ? nil : (level, title)
    }

    func pack(_ paragraphs: [String], heading: String) -> [Chunk] {
        var pieces: [String] = []
        for p in paragraphs {
            if p.count <= maximum { pieces.append(p) } else { pieces += splitLong(p) }
        }
        var chunks: [Chunk] = []
        var current = ""
        var carried = false  // current holds only overlap from the previous chunk
        for piece in pieces {
            if !current.isEmpty && current.count + 2 + piece.count > target && !carried {
                chunks.append(Chunk(heading: heading, text: current))
                current = tail(of: current)
                carried = !current.isEmpty
                if current.count + 2 + piece.count > maximum {
                    current = ""
                    carried = false
                }
            }
            current = current.isEmpty ? piece : current + "\n\n" + piece
            carried = false
        }
        if !current.isEmpty && !carried { chunks.append(Chunk(heading: heading, text: current)) }
        return chunks
    }

    /// The last whole sentences of a chunk, at most `overlap` characters.
    func tail(of text: String) -> String {
        guard overlap > 0 else { return "" }
        let sentences = Self.sentences(text)
        var tail: [String] = []
        var length = 0
        for s in sentences.reversed() {
            if length + s.count > overlap { break }
            tail.insert(s, at: 0)
            length += s.count + 1
        }
        return tail.joined(separator: " ")
    }

    /// Splits an over-long paragraph at sentence ends, and over-long sentences at spaces.
    func splitLong(_ p: String) -> [String] {
        var out: [String] = []
        var current = ""
        for s in Self.sentences(p) {
            var sentence = s
            while sentence.count > maximum {
                let head = String(sentence.prefix(maximum))
                let cut = head.lastIndex(of: " ").map { head.distance(from: head.startIndex, to: $0) } ?? maximum
                let n = cut > maximum / 2 ? cut : maximum
                if !current.isEmpty {
                    out.append(current)
                    current = ""
                }
                out.append(String(sentence.prefix(n)).trimmingCharacters(in: .whitespaces))
                sentence = String(sentence.dropFirst(n)).trimmingCharacters(in: .whitespaces)
            }
            if current.count + 1 + sentence.count > target, !current.isEmpty {
                out.append(current)
                current = ""
            }
            current = current.isEmpty ? sentence : current + " " + sentence
        }
        if !current.isEmpty { out.append(current) }
        return out
    }

    /// Sentences: text up to ". ", "! ", "? " (or line ends), trimmed.
    static func sentences(_ text: String) -> [String] {
        var out: [String] = []
        var current = ""
        var previous: Character = " "
        for ch in text {
            if (ch == " " || ch == "\n") && (previous == "." || previous == "!" || previous == "?" || ch == "\n") {
                let s = current.trimmingCharacters(in: .whitespaces)
                if !s.isEmpty { out.append(s) }
                current = ""
            } else {
                current.append(ch)
            }
            previous = ch
        }
        let s = current.trimmingCharacters(in: .whitespaces)
        if !s.isEmpty { out.append(s) }
        return out
    }
}

/// Turns a file into text: Markdown and plain text as they are, HTML with tags stripped
/// (headings kept as Markdown headings so the chunker sees sections), PDF through poppler's
/// `pdftotext` when it is installed.
public enum TextExtraction {
    /// An uploaded file's name, checked: a plain file name (no folders, not hidden, no control
    /// characters, at most 200 bytes) of a supported type.
    public static func uploadName(_ raw: String) throws(KianaAIError) -> String {
        let name = raw.trimmingCharacters(in: .whitespaces)
        // No control characters and no invisible format characters (a right-to-left override
        // shows "\u{202E}gnp.md" as "dm.png"; a zero-width space makes a look-alike), except
        // the two joiners Persian names and emoji sequences need.
        guard !name.isEmpty, name.utf8.count <= 200, !name.hasPrefix("."), !name.contains("/"), !name.contains("\\"),
            !name.unicodeScalars.contains(where: {
                $0.properties.generalCategory == .control || ($0.properties.generalCategory == .format && ![0x200C, 0x200D].contains($0.value))
            })
        else {
            throw KianaAIError(
                .invalidInput,
                "\(raw.prefix(80).debugDescription): a file name must be a plain name (no folders, not hidden, no control or invisible characters, at most 200 bytes)")
        }
        guard isSupported(name) else {
            throw KianaAIError(.invalidInput, "\(name): unsupported file type (supported: \(supportedExtensions.sorted().joined(separator: ", ")))")
        }
        return name
    }

    public static let supportedExtensions: Set<String> = ["md", "markdown", "txt", "text", "html", "htm", "pdf"]
    /// Files above this size are refused (a text file that big is almost certainly not notes).
    public static let maxFileBytes = 64 * 1024 * 1024

    public static func isSupported(_ path: String) -> Bool {
        supportedExtensions.contains((path as NSString).pathExtension.lowercased())
    }

    public static func text(of path: String, data: Data) throws(KianaAIError) -> String {
        let ext = (path as NSString).pathExtension.lowercased()
        if ext == "pdf" { return try pdfText(path) }
        let text = decode(data)
        if let share = binaryShare(text) {
            throw KianaAIError(
                .ingest, "does not read as text (\(share) % of its first characters are control codes or undecodable bytes): a binary file named .\(ext)?")
        }
        return ext == "html" || ext == "htm" ? htmlText(text) : text
    }

    /// The percentage of control characters (other than tab, line feed, form feed and
    /// carriage return) and U+FFFD among the first 64 Ki characters of decoded text, when it
    /// is 5 % or more: random or compressed bytes give about 13 %, text in any encoding
    /// `decode` reads gives none.
    static func binaryShare(_ text: String) -> Int? {
        var total = 0
        var odd = 0
        for scalar in text.unicodeScalars.prefix(65_536) {
            total += 1
            let v = scalar.value
            if (v < 0x20 && v != 0x09 && v != 0x0A && v != 0x0C && v != 0x0D) || v == 0x7F || (0x80...0x9F).contains(v) || v == 0xFFFD { odd += 1 }
        }
        guard total >= 16, odd * 20 >= total else { return nil }
        return odd * 100 / total
    }

    /// Text without a byte-order mark, with \r\n → \n: UTF-16 when it starts with a UTF-16
    /// byte-order mark, else UTF-8 in which each byte that is not part of a valid UTF-8 sequence
    /// is read as Windows-1252 (what Latin-1 files and older editors on Windows hold), so
    /// "Schl\u{FC}ssel" keeps its umlaut, and one stray byte in a UTF-8 file stays one character.
    static func decode(_ data: Data) -> String {
        let bytes = [UInt8](data)
        var s: String
        // UTF-32's little-endian mark starts with UTF-16's, so it is looked for first; it is taken
        // when the first unit after it is a character (UTF-16 text whose first character is
        // U+0000 reads as a value beyond Unicode there). A bad unit later is one U+FFFD.
        let le32 = bytes.count >= 8 && bytes.prefix(4).elementsEqual([0xFF, 0xFE, 0, 0])
            && Unicode.Scalar(UInt32(bytes[4]) | UInt32(bytes[5]) << 8 | UInt32(bytes[6]) << 16 | UInt32(bytes[7]) << 24) != nil
        if le32 || (bytes.count >= 4 && bytes.prefix(4).elementsEqual([0, 0, 0xFE, 0xFF])) {
            s = utf32(bytes.dropFirst(4), bigEndian: bytes[0] == 0)
        } else if bytes.count >= 2, (bytes[0], bytes[1]) == (0xFF, 0xFE) || (bytes[0], bytes[1]) == (0xFE, 0xFF) {
            s = utf16(bytes.dropFirst(2), bigEndian: bytes[0] == 0xFE)
        } else {
            s = String(validating: bytes, as: UTF8.self) ?? utf8OrWindows1252(bytes)
        }
        if s.hasPrefix("\u{FEFF}") { s.removeFirst() }
        return s.replacingOccurrences(of: "\r\n", with: "\n")
    }

    /// UTF-16 code units (lone surrogates and a trailing odd byte become U+FFFD).
    static func utf16(_ bytes: ArraySlice<UInt8>, bigEndian: Bool) -> String {
        var units: [UInt16] = []
        units.reserveCapacity(bytes.count / 2)
        var i = bytes.startIndex
        while i + 1 < bytes.endIndex {
            let (a, b) = (UInt16(bytes[i]), UInt16(bytes[i + 1]))
            units.append(bigEndian ? a << 8 | b : b << 8 | a)
            i += 2
        }
        var s = String(decoding: units, as: UTF16.self)
        if bytes.count % 2 == 1 { s.append("\u{FFFD}") }
        return s
    }

    /// UTF-32 code units (a value that is not a scalar, and trailing bytes short of a unit,
    /// become U+FFFD).
    static func utf32(_ bytes: ArraySlice<UInt8>, bigEndian: Bool) -> String {
        var out = String.UnicodeScalarView()
        var i = bytes.startIndex
        while i + 3 < bytes.endIndex {
            let b = (UInt32(bytes[i]), UInt32(bytes[i + 1]), UInt32(bytes[i + 2]), UInt32(bytes[i + 3]))
            let v = bigEndian ? b.0 << 24 | b.1 << 16 | b.2 << 8 | b.3 : b.3 << 24 | b.2 << 16 | b.1 << 8 | b.0
            out.append(Unicode.Scalar(v) ?? "\u{FFFD}")
            i += 4
        }
        if bytes.count % 4 != 0 { out.append("\u{FFFD}") }
        return String(out)
    }

    /// UTF-8, with every byte outside a valid UTF-8 sequence read as Windows-1252.
    static func utf8OrWindows1252(_ bytes: [UInt8]) -> String {
        var out = String.UnicodeScalarView()
        var i = 0
        while i < bytes.count {
            let b = bytes[i]
            let length = b < 0x80 ? 1 : b >= 0xC2 && b <= 0xDF ? 2 : b >= 0xE0 && b <= 0xEF ? 3 : b >= 0xF0 && b <= 0xF4 ? 4 : 0
            if length == 1 {
                out.append(Unicode.Scalar(b))
                i += 1
                continue
            }
            if length > 1, i + length <= bytes.count,
                let scalar = String(validating: bytes[i..<(i + length)], as: UTF8.self)?.unicodeScalars.first
            {
                out.append(scalar)
                i += length
                continue
            }
            out.append(windows1252(b))
            i += 1
        }
        return String(out)
    }

    /// Windows-1252 to a string (the five bytes it leaves undefined become U+FFFD).
    static func windows1252(_ data: Data) -> String {
        var out = String.UnicodeScalarView()
        out.append(contentsOf: data.map(windows1252))
        return String(out)
    }

    /// One Windows-1252 byte's character.
    static func windows1252(_ byte: UInt8) -> Unicode.Scalar {
        guard (0x80...0x9F).contains(byte) else { return Unicode.Scalar(byte) }
        return Unicode.Scalar(windows1252High[Int(byte) - 0x80]).flatMap { $0.value == 0 ? nil : $0 } ?? "\u{FFFD}"
    }

    /// 0x80–0x9F in Windows-1252; 0 marks the five it leaves undefined.
    static let windows1252High: [UInt32] = [
        0x20AC, 0, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0, 0x017D, 0,
        0, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0, 0x017E, 0x0178,
    ]

    public static func pdftotextPath() -> String? { Executables.find("pdftotext") }

    static func pdfText(_ path: String) throws(KianaAIError) -> String {
        guard let tool = pdftotextPath() else {
            throw KianaAIError(.toolMissing, "cannot read PDF \(path): pdftotext is not installed (apt-get install poppler-utils)")
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: tool)
        p.arguments = ["-enc", "UTF-8", "-q", path, "-"]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        do { try p.run() } catch { throw KianaAIError(.ingest, "cannot run pdftotext on \(path)", cause: error) }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw KianaAIError(.ingest, "pdftotext could not read \(path) (exit \(p.terminationStatus))") }
        // pdftotext separates pages with form feeds
        return decode(data).replacingOccurrences(of: "\u{0C}", with: "\n\n")
    }

    /// Strips tags, drops script/style/head, turns block elements into line breaks and h1–h6 into
    /// Markdown headings, decodes entities.
    public static func htmlText(_ html: String) -> String {
        var out = ""
        var i = html.startIndex
        var skipUntil: String?
        while i < html.endIndex {
            let ch = html[i]
            if ch == "<" {
                guard let close = html[i...].firstIndex(of: ">") else { break }
                let tag = html[html.index(after: i)..<close].lowercased()
                i = html.index(after: close)
                if tag.hasPrefix("!--") {
                    if let end = html.range(of: "-->", range: html.index(i, offsetBy: -1, limitedBy: html.startIndex)!..<html.endIndex) { i = end.upperBound }
                    continue
                }
                let name = String(tag.drop { $0 == "/" }.prefix { $0.isLetter || $0.isNumber })
                let closing = tag.hasPrefix("/")
                if let s = skipUntil {
                    if closing && name == s { skipUntil = nil }
                    continue
                }
                if !closing && ["script", "style", "head", "noscript", "template"].contains(name) {
                    skipUntil = name
                    continue
                }
                if name.count == 2, name.first == "h", let level = Int(String(name.last!)), (1...6).contains(level) {
                    out += closing ? "\n\n" : "\n\n" + String(repeating: "#", count: level) + " "
                } else if ["p", "div", "section", "article", "li", "tr", "table", "ul", "ol", "blockquote", "pre", "header", "footer", "main", "nav", "aside"]
                    .contains(name)
                {
                    out += "\n\n"
                } else if name == "br" {
                    out += "\n"
                } else if name == "td" || name == "th" {
                    out += " "
                }
                continue
            }
            if skipUntil == nil { out.append(ch) }
            i = html.index(after: i)
        }
        // heading lines must be single lines
        let decoded = decodeEntities(out)
        var lines: [String] = []
        for line in decoded.split(separator: "\n", omittingEmptySubsequences: false) {
            let collapsed = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).joined(separator: " ")
            lines.append(collapsed)
        }
        var text = lines.joined(separator: "\n")
        while text.contains("\n\n\n") { text = text.replacingOccurrences(of: "\n\n\n", with: "\n\n") }
        return text.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    static let namedEntities: [String: String] = [
        "amp": "&", "lt": "<", "gt": ">", "quot": "\"", "apos": "'", "nbsp": " ", "ndash": "–", "mdash": "—",
        "hellip": "…", "copy": "©", "reg": "®", "auml": "ä", "ouml": "ö", "uuml": "ü", "Auml": "Ä", "Ouml": "Ö",
        "Uuml": "Ü", "szlig": "ß", "eacute": "é", "egrave": "è", "euro": "€", "laquo": "«", "raquo": "»",
        "lsquo": "‘", "rsquo": "’", "ldquo": "“", "rdquo": "”", "bull": "•", "middot": "·",
    ]

    static func decodeEntities(_ s: String) -> String {
        guard s.contains("&") else { return s }
        var out = ""
        var i = s.startIndex
        while i < s.endIndex {
            if s[i] == "&", let semi = s[i...].prefix(12).firstIndex(of: ";") {
                let name = String(s[s.index(after: i)..<semi])
                var rep: String?
                if name.hasPrefix("#x") || name.hasPrefix("#X") {
                    rep = UInt32(name.dropFirst(2), radix: 16).flatMap(Unicode.Scalar.init).map { String(Character($0)) }
                } else if name.hasPrefix("#") {
                    rep = UInt32(name.dropFirst()).flatMap(Unicode.Scalar.init).map { String(Character($0)) }
                } else {
                    rep = namedEntities[name]
                }
                if let rep {
                    out += rep
                    i = s.index(after: semi)
                    continue
                }
            }
            out.append(s[i])
            i = s.index(after: i)
        }
        return out
    }
}
