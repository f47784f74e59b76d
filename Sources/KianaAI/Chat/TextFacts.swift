import Foundation

/// The languages KI_ana answers in.
public enum Language: String, Sendable, Codable, CaseIterable {
    case en, de

    /// The language of a short text (a question, a sentence): German when its German function
    /// words, question words and umlauts outweigh the English ones; English otherwise.
    public static func detect(_ text: String) -> Language {
        var de = 0
        var en = 0
        for w in Words.tokens(text) {
            if germanMarkers.contains(w) { de += 2 } else if Words.germanStop.contains(w) { de += 1 }
            if englishMarkers.contains(w) { en += 2 } else if Words.englishStop.contains(w) { en += 1 }
            if w.contains(where: { "äöüß".contains($0) }) { de += 1 }
        }
        return de > en ? .de : .en
    }

    static let germanMarkers: Set<String> = [
        "wann", "wie", "wo", "wer", "was", "welche", "welcher", "welches", "wieviel", "wohin", "woher", "warum",
        "ist", "sind", "und", "der", "die", "das", "ich", "mein", "meine", "meiner", "meinem", "unser", "unsere",
        "nicht", "wird", "werden", "haben", "hat", "den", "dem", "ein", "eine", "einen", "für", "mit", "bei", "auf",
    ]
    static let englishMarkers: Set<String> = [
        "when", "how", "where", "who", "what", "which", "why", "is", "are", "and", "the", "my", "our", "does", "do",
        "did", "of", "to", "for", "with", "at", "on", "was", "were", "has", "have", "it", "that",
    ]
}

/// Sentence splitting for English and German prose: ends at `.`, `!`, `?` (or a line break)
/// followed by space and an upper-case letter or digit, except after abbreviations and
/// ordinal numbers ("am 3. März", "z. B.", "Dr.").
public enum Sentences {
    public static func split(_ text: String) -> [String] {
        var out: [String] = []
        var current = ""
        var hasContent = false
        var lineLength = 0
        let chars = Array(text.replacingOccurrences(of: "\r\n", with: "\n").replacingOccurrences(of: "\r", with: "\n"))
        var i = 0
        func flush() {
            if hasContent { out.append(current.trimmingCharacters(in: .whitespacesAndNewlines)) }
            current = ""
            hasContent = false
        }
        while i < chars.count {
            let c = chars[i]
            if c == "\n" {
                // A blank line, a list item or a new short line (a note's "Key: value" lines) ends
                // a sentence; a long line wrapped into a lower-case continuation does not.
                var j = i + 1
                while j < chars.count, chars[j] != "\n", chars[j].isWhitespace { j += 1 }
                let next = j < chars.count ? chars[j] : "\n"
                let startsLine = next == "\n" || "-*#•".contains(next) || ((next.isUppercase || next.isNumber) && lineLength < 80)
                if startsLine || !hasContent { flush() } else { current.append(" ") }
                lineLength = 0
                i += 1
                continue
            }
            current.append(c)
            lineLength += 1
            if !c.isWhitespace { hasContent = true }
            if c == "." || c == "!" || c == "?" {
                // swallow closing quotes/brackets
                while i + 1 < chars.count, "\"'”“»)]".contains(chars[i + 1]) {
                    i += 1
                    current.append(chars[i])
                }
                let atEnd = i + 1 >= chars.count
                let spaceAfter = !atEnd && chars[i + 1].isWhitespace
                if atEnd || (spaceAfter && startsSentence(chars, from: i + 1) && !(c == "." && isAbbreviation(current, next: nextWord(chars, from: i + 1)))) {
                    flush()
                }
            }
            i += 1
        }
        flush()
        return out
    }

    static func nextWord(_ chars: [Character], from: Int) -> String {
        var j = from
        while j < chars.count, chars[j].isWhitespace { j += 1 }
        var w = ""
        while j < chars.count, chars[j].isLetter, w.count < 12 {
            w.append(chars[j])
            j += 1
        }
        return w.lowercased()
    }

    static func startsSentence(_ chars: [Character], from: Int) -> Bool {
        var j = from
        while j < chars.count, chars[j].isWhitespace { j += 1 }
        guard j < chars.count else { return true }
        let c = chars[j]
        return c.isUppercase || c.isNumber || "\"'„“»([".contains(c)
    }

    static let abbreviations: Set<String> = [
        "dr", "mr", "mrs", "ms", "st", "nr", "ca", "bzw", "usw", "vgl", "str", "tel", "z", "b", "d", "h", "e", "g",
        "inkl", "evtl", "ggf", "etc", "vs", "approx", "prof", "hr", "feb", "apr", "aug", "sept", "okt", "dez", "u",
    ]
    static let months: Set<String> = [
        "januar", "februar", "märz", "april", "mai", "juni", "juli", "august", "september", "oktober", "november",
        "dezember", "january", "february", "march", "may", "june", "july", "october", "december", "jan", "feb", "mär",
        "apr", "jun", "jul", "aug", "sep", "okt", "nov", "dez", "dec", "oct",
    ]

    /// True when the period ending `s` belongs to an abbreviation, or to a German ordinal
    /// number before a month or a lower-case word ("am 3. März", "der 2. von").
    static func isAbbreviation(_ s: String, next: String = "") -> Bool {
        let body = s.dropLast()
        var word = ""
        for ch in body.reversed() {
            if ch.isLetter || ch.isNumber { word.insert(ch, at: word.startIndex) } else { break }
        }
        if word.isEmpty { return false }
        if word.allSatisfy(\.isNumber) { return word.count <= 2 && months.contains(next) }  // "3. März"
        return abbreviations.contains(word.lowercased())
    }
}

/// Word-level facts of a text: content words, numbers and codes, compared the way the trust
/// checks compare them.
public enum Words {
    /// Lower-cased runs of letters and digits (a hyphen or apostrophe inside a word splits it).
    public static func tokens(_ s: String) -> [String] {
        var out: [String] = []
        var cur = ""
        for ch in s.lowercased() {
            if ch.isLetter || ch.isNumber {
                cur.append(ch)
            } else if !cur.isEmpty {
                out.append(cur)
                cur = ""
            }
        }
        if !cur.isEmpty { out.append(cur) }
        return out
    }

    /// Tokens that carry meaning: not function words, at least two characters, or any token
    /// with a digit.
    public static func content(_ s: String) -> [String] {
        tokens(s).filter { t in
            t.contains(where: \.isNumber) || (t.count >= 2 && !englishStop.contains(t) && !germanStop.contains(t))
        }
    }

    /// Runs of digits ("0731", "602", "2026", "5813", "e24" gives "24").
    public static func digitRuns(_ s: String) -> [String] {
        var out: [String] = []
        var cur = ""
        for ch in s {
            if ch.isASCII && ch.isNumber { cur.append(ch) } else if !cur.isEmpty {
                out.append(cur)
                cur = ""
            }
        }
        if !cur.isEmpty { out.append(cur) }
        return out
    }

    /// Number groups as written: digit runs joined by single spaces, dots, dashes, slashes or
    /// colons ("0731 602 118", "12.06.2026", "7:30"), reduced to their digits.
    public static func numberGroups(_ s: String) -> [String] {
        NumberGroup.parse(s).map { $0.runs.joined() }
    }

    /// Same word up to inflection: equal; or one is the other plus an inflection ending
    /// ("keypad"/"keypads", "open"/"opens", "Woche"/"Wochen", "empty"/"emptied"); or they share
    /// a prefix of at least six letters and differ in at most two letters after it. Words with
    /// digits must be equal, and number words are never relaxed ("vier" is not "vierzig").
    public static func sameWord(_ a: String, _ b: String) -> Bool {
        if a == b { return true }
        if a.contains(where: \.isNumber) || b.contains(where: \.isNumber) { return false }
        if AnswerType.numberWords.contains(a) || AnswerType.numberWords.contains(b) { return false }
        let (short, long) = a.count <= b.count ? (a, b) : (b, a)
        guard short.count >= 3 else { return false }
        if long.hasPrefix(short), endings.contains(String(long.dropFirst(short.count))) { return true }
        if short.hasSuffix("y"), long.hasSuffix("ied") || long.hasSuffix("ies"), long.dropLast(3) == short.dropLast() { return true }
        let x = Array(short)
        let y = Array(long)
        var p = 0
        while p < x.count, x[p] == y[p] { p += 1 }
        return p >= 6 && x.count - p <= 2 && y.count - p <= 2
    }

    static let endings: Set<String> = [
        "s", "es", "d", "ed", "ing", "er", "ers", "e", "en", "n", "ern", "st", "t", "te", "ten", "est", "ly",
    ]

    static let englishStop: Set<String> = [
        "a", "an", "the", "and", "or", "but", "if", "of", "to", "in", "on", "at", "by", "for", "with", "from", "as", "into",
        "about", "over", "after", "before", "than", "then", "so", "too", "very", "also", "just", "only", "yes",
        "is", "are", "was", "were", "be", "been", "being", "am", "has", "have", "had", "do", "does", "did", "can", "could",
        "will", "would", "shall", "should", "may", "might", "must", "it", "its", "this", "that", "these", "those",
        "there", "here", "i", "me", "my", "mine", "we", "us", "our", "ours", "you", "your", "yours", "he", "him", "his",
        "she", "her", "hers", "they", "them", "their", "theirs", "what", "which", "who", "whom", "whose", "when", "where",
        "why", "how", "s", "t", "all", "any", "some", "each", "every", "one", "ones", "get", "gets", "got",
    ]
    static let germanStop: Set<String> = [
        "der", "die", "das", "den", "dem", "des", "ein", "eine", "einen", "einem", "einer", "eines", "und", "oder", "aber",
        "wenn", "dann", "als", "wie", "so", "auch", "nur", "noch", "schon", "sehr", "ja",
        "ist", "sind", "war", "waren", "sein", "bin", "bist", "hat", "haben", "hatte", "hatten", "wird", "werden", "wurde",
        "kann", "können", "muss", "müssen", "soll", "sollen", "darf", "ich", "mich", "mir", "mein", "meine", "meinen",
        "meinem", "meiner", "meines", "wir", "uns", "unser", "unsere", "unseren", "unserem", "unserer", "du", "dich", "dir",
        "dein", "deine", "er", "sie", "es", "ihm", "ihn", "ihr", "ihre", "ihren", "ihrem", "man", "sich", "was", "wer", "wen",
        "wem", "wo", "wann", "warum", "welche", "welcher", "welches", "welchen", "im", "in", "an", "am", "auf", "aus", "bei",
        "mit", "nach", "von", "vom", "zu", "zum", "zur", "für", "über", "unter", "vor", "um", "bis", "durch", "gegen",
        "ohne", "da", "dort", "hier", "dass", "daß", "es", "gibt",
    ]
}
