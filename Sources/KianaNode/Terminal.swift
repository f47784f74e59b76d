/// Text from the ledger, files and peers is printed as data, never as terminal commands.
public enum Terminal {
    /// `s` with control characters made visible: ESC, BEL, CR, backspace, DEL and the C1 range
    /// become `\u{…}` escapes (so a stored "\u{1b}[2J" cannot clear the screen or fake output).
    /// Newlines and tabs stay when `multiline`; otherwise they are escaped too.
    public static func escape(_ s: String, multiline: Bool = false) -> String {
        guard s.unicodeScalars.contains(where: { needsEscape($0, multiline: multiline) }) else { return s }
        var out = ""
        out.reserveCapacity(s.utf8.count + 8)
        for u in s.unicodeScalars {
            if needsEscape(u, multiline: multiline) {
                out += "\\u{" + String(u.value, radix: 16) + "}"
            } else {
                out.unicodeScalars.append(u)
            }
        }
        return out
    }

    static func needsEscape(_ u: Unicode.Scalar, multiline: Bool) -> Bool {
        if multiline && (u == "\n" || u == "\t") { return false }
        let v = u.value
        // C0 controls, DEL, C1 controls, and the bidirectional overrides that reorder what is shown.
        return v < 0x20 || v == 0x7F || (0x80...0x9F).contains(v) || (0x202A...0x202E).contains(v) || (0x2066...0x2069).contains(v)
    }
}
