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
        let chars = Array(text)
        var i = 0
        func flush() {
            let s = current.trimmingCharacters(in: .whitespacesAndNewlines)
            if !s.isEmpty { out.append(s) }
            current = ""
        }
        while i < chars.count {
            let c = chars[i]
            if c == "\n" {
                // a blank line or a list item ends a sentence; a wrapped line does not
                let next = chars[(i + 1)...].first { !$0.isWhitespace || $0 == "\n" }
                if next == "\n" || next == "-" || next == "*" || next == "#" || current.trimmingCharacters(in: .whitespaces).isEmpty {
                    flush()
                } else {
                    current.append(" ")
                }
                i += 1
                continue
            }
            current.append(c)
            if c == "." || c == "!" || c == "?" {
                // swallow closing quotes/brackets
                while i + 1 < chars.count, "\"'”“»)]".contains(chars[i + 1]) {
                    i += 1
                    current.append(chars[i])
                }
                let atEnd = i + 1 >= chars.count
                let spaceAfter = !atEnd && chars[i + 1].isWhitespace
                if atEnd || (spaceAfter && startsSentence(chars, from: i + 1) && !(c == "." && isAbbreviation(current))) {
                    flush()
                }
            }
            i += 1
        }
        flush()
        return out
    }

    static func startsSentence(_ chars: [Character], from: Int) -> Bool {
        var j = from
        while j < chars.count, chars[j].isWhitespace { j += 1 }
        guard j < chars.count else { return true }
        let c = chars[j]
        return c.isUppercase || c.isNumber || "\"'„“»([".contains(c)
    }

    static let abbreviations: Set<String> = [
        "dr", "mr", "mrs", "ms", "st", "nr", "no", "ca", "bzw", "usw", "vgl", "str", "tel", "z", "b", "d", "h", "e", "g", "i",
        "inkl", "evtl", "ggf", "etc", "vs", "approx", "prof", "hr", "fr", "jan", "feb", "mar", "apr", "jun", "jul", "aug",
        "sep", "sept", "oct", "okt", "nov", "dec", "dez", "mo", "di", "mi", "do", "sa", "so", "min", "max", "u", "a",
    ]

    /// True when the period ending `s` belongs to an abbreviation or a German ordinal number.
    static func isAbbreviation(_ s: String) -> Bool {
        let body = s.dropLast()
        var word = ""
        for ch in body.reversed() {
            if ch.isLetter || ch.isNumber { word.insert(ch, at: word.startIndex) } else { break }
        }
        if word.isEmpty { return false }
        if word.allSatisfy(\.isNumber) { return word.count <= 2 }  // "3. März", "1. Stock"
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
        var out: [String] = []
        var cur = ""
        var pendingSeparator = false
        for ch in s {
            if ch.isASCII && ch.isNumber {
                cur.append(ch)
                pendingSeparator = false
            } else if !cur.isEmpty && !pendingSeparator && (ch == " " || ch == "." || ch == "-" || ch == "/" || ch == ":" || ch == "\u{00A0}") {
                pendingSeparator = true
            } else {
                if !cur.isEmpty { out.append(cur) }
                cur = ""
                pendingSeparator = false
            }
        }
        if !cur.isEmpty { out.append(cur) }
        return out
    }

    /// Same word up to inflection: equal, or sharing a prefix of at least four characters that
    /// covers all but the last two characters of the shorter word ("keypad"/"keypads",
    /// "opens"/"open", "Ersatzschlüssel"/"Ersatzschlüssels"); digits must match exactly.
    public static func sameWord(_ a: String, _ b: String) -> Bool {
        if a == b { return true }
        if a.contains(where: \.isNumber) || b.contains(where: \.isNumber) { return false }
        let x = Array(a)
        let y = Array(b)
        var p = 0
        while p < x.count, p < y.count, x[p] == y[p] { p += 1 }
        let shorter = min(x.count, y.count)
        if shorter == p && shorter >= 3 { return max(x.count, y.count) - p <= 3 }
        return p >= 4 && p >= shorter - 2 && max(x.count, y.count) - p <= 3
    }

    static let englishStop: Set<String> = [
        "a", "an", "the", "and", "or", "but", "if", "of", "to", "in", "on", "at", "by", "for", "with", "from", "as", "into",
        "about", "over", "after", "before", "than", "then", "so", "too", "very", "also", "just", "only", "not", "no", "yes",
        "is", "are", "was", "were", "be", "been", "being", "am", "has", "have", "had", "do", "does", "did", "can", "could",
        "will", "would", "shall", "should", "may", "might", "must", "it", "its", "it's", "this", "that", "these", "those",
        "there", "here", "i", "me", "my", "mine", "we", "us", "our", "ours", "you", "your", "yours", "he", "him", "his",
        "she", "her", "hers", "they", "them", "their", "theirs", "what", "which", "who", "whom", "whose", "when", "where",
        "why", "how", "s", "t", "all", "any", "some", "each", "every", "one", "ones", "get", "gets", "got",
    ]
    static let germanStop: Set<String> = [
        "der", "die", "das", "den", "dem", "des", "ein", "eine", "einen", "einem", "einer", "eines", "und", "oder", "aber",
        "wenn", "dann", "als", "wie", "so", "auch", "nur", "noch", "schon", "sehr", "nicht", "kein", "keine", "ja", "nein",
        "ist", "sind", "war", "waren", "sein", "bin", "bist", "hat", "haben", "hatte", "hatten", "wird", "werden", "wurde",
        "kann", "können", "muss", "müssen", "soll", "sollen", "darf", "ich", "mich", "mir", "mein", "meine", "meinen",
        "meinem", "meiner", "meines", "wir", "uns", "unser", "unsere", "unseren", "unserem", "unserer", "du", "dich", "dir",
        "dein", "deine", "er", "sie", "es", "ihm", "ihn", "ihr", "ihre", "ihren", "ihrem", "man", "sich", "was", "wer", "wen",
        "wem", "wo", "wann", "warum", "welche", "welcher", "welches", "welchen", "im", "in", "an", "am", "auf", "aus", "bei",
        "mit", "nach", "von", "vom", "zu", "zum", "zur", "für", "über", "unter", "vor", "um", "bis", "durch", "gegen",
        "ohne", "da", "dort", "hier", "dass", "daß", "es", "gibt",
    ]
}
