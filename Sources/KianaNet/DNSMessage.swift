/// DNS messages as multicast DNS uses them (RFC 1035 wire format, RFC 6762 class bits).
/// Dependency-free and defensive: every length is checked, compression pointers may only point
/// backwards, names are at most 255 bytes. The fuzz target compiles this file alone.
public struct DNSMessage: Sendable, Equatable {
    public var id: UInt16 = 0
    public var flags: UInt16 = 0
    public var questions: [DNSQuestion] = []
    public var answers: [DNSRecord] = []
    public var authorities: [DNSRecord] = []
    public var additionals: [DNSRecord] = []

    public init(
        id: UInt16 = 0, flags: UInt16 = 0, questions: [DNSQuestion] = [], answers: [DNSRecord] = [], authorities: [DNSRecord] = [],
        additionals: [DNSRecord] = []
    ) {
        self.id = id
        self.flags = flags
        self.questions = questions
        self.answers = answers
        self.authorities = authorities
        self.additionals = additionals
    }

    /// QR bit: a response.
    public var isResponse: Bool { flags & 0x8000 != 0 }
    /// mDNS responses carry QR and AA.
    public static let responseFlags: UInt16 = 0x8400
    /// The largest message we send or accept (RFC 6762 §17: 9000 bytes incl. IP/UDP headers).
    public static let maxSize = 9000
}

/// A DNS name as lower-case-insensitive labels.
public struct DNSName: Sendable, Hashable, CustomStringConvertible {
    public let labels: [String]

    public init(labels: [String]) { self.labels = labels }

    /// Parses dotted text ("_kiana._tcp.local"); a trailing dot is allowed. Instance labels with
    /// dots are built with `init(labels:)` instead.
    public init(_ text: String) {
        labels = text.split(separator: ".", omittingEmptySubsequences: true).map(String.init)
    }

    public var description: String { labels.joined(separator: ".") + "." }

    /// Names compare case-insensitively for ASCII (RFC 6762 §16).
    public static func == (a: DNSName, b: DNSName) -> Bool {
        a.labels.count == b.labels.count && zip(a.labels, b.labels).allSatisfy { $0.lowercased() == $1.lowercased() }
    }

    public func hash(into hasher: inout Hasher) {
        for l in labels { hasher.combine(l.lowercased()) }
    }

    /// `labels` prefixed with one more label.
    public func prepending(_ label: String) -> DNSName { DNSName(labels: [label] + labels) }
}

public enum DNSType: Sendable {
    public static let a: UInt16 = 1
    public static let ptr: UInt16 = 12
    public static let txt: UInt16 = 16
    public static let aaaa: UInt16 = 28
    public static let srv: UInt16 = 33
    public static let nsec: UInt16 = 47
    public static let any: UInt16 = 255
}

public struct DNSQuestion: Sendable, Hashable {
    public var name: DNSName
    public var type: UInt16
    /// The QU bit: the asker prefers a unicast reply.
    public var unicastResponse: Bool

    public init(name: DNSName, type: UInt16, unicastResponse: Bool = false) {
        self.name = name
        self.type = type
        self.unicastResponse = unicastResponse
    }
}

public enum DNSRData: Sendable, Equatable {
    case a([UInt8])
    case aaaa([UInt8])
    case ptr(DNSName)
    case srv(priority: UInt16, weight: UInt16, port: UInt16, target: DNSName)
    /// Character strings, each at most 255 bytes.
    case txt([[UInt8]])
    case nsec(next: DNSName, types: [UInt16])
    case other([UInt8])
}

public struct DNSRecord: Sendable, Equatable {
    public var name: DNSName
    public var type: UInt16
    /// The cache-flush bit: this record set is unique to its owner (RFC 6762 §10.2).
    public var cacheFlush: Bool
    public var ttl: UInt32
    public var data: DNSRData

    public init(name: DNSName, type: UInt16, cacheFlush: Bool = false, ttl: UInt32, data: DNSRData) {
        self.name = name
        self.type = type
        self.cacheFlush = cacheFlush
        self.ttl = ttl
        self.data = data
    }

    /// TXT strings as key=value pairs (RFC 6763 §6); a key without "=" maps to "".
    public var txtPairs: [String: String] {
        guard case .txt(let strings) = data else { return [:] }
        var out: [String: String] = [:]
        for s in strings {
            guard let text = String(validating: s, as: UTF8.self), !text.isEmpty else { continue }
            if let eq = text.firstIndex(of: "=") {
                let key = text[..<eq].lowercased()
                if out[key] == nil { out[key] = String(text[text.index(after: eq)...]) }
            } else if out[text.lowercased()] == nil {
                out[text.lowercased()] = ""
            }
        }
        return out
    }
}

// MARK: - Decoding

extension DNSMessage {
    static func fail(_ why: String) -> KianaNetError { KianaNetError(.malformedEncoding, "malformed DNS message: \(why)") }

    /// Parses a message; throws on anything malformed or over `maxSize`.
    public init(decoding bytes: [UInt8]) throws(KianaNetError) {
        guard bytes.count <= Self.maxSize else { throw Self.fail("\(bytes.count) bytes is over the limit") }
        var r = DNSReader(bytes: bytes)
        id = try r.u16()
        flags = try r.u16()
        let qd = Int(try r.u16())
        let an = Int(try r.u16())
        let ns = Int(try r.u16())
        let ar = Int(try r.u16())
        // Each question takes at least 5 bytes and each record 11: reject impossible counts early.
        guard qd * 5 + (an + ns + ar) * 11 <= bytes.count - 12 else { throw Self.fail("section counts exceed the message") }
        for _ in 0..<qd {
            let name = try r.readName()
            let type = try r.u16()
            let cls = try r.u16()
            questions.append(DNSQuestion(name: name, type: type, unicastResponse: cls & 0x8000 != 0))
        }
        for _ in 0..<an { answers.append(try r.record()) }
        for _ in 0..<ns { authorities.append(try r.record()) }
        for _ in 0..<ar { additionals.append(try r.record()) }
    }
}

struct DNSReader {
    let bytes: [UInt8]
    var pos = 0

    mutating func u8() throws(KianaNetError) -> UInt8 {
        guard pos < bytes.count else { throw DNSMessage.fail("truncated") }
        defer { pos += 1 }
        return bytes[pos]
    }

    mutating func u16() throws(KianaNetError) -> UInt16 {
        guard pos + 2 <= bytes.count else { throw DNSMessage.fail("truncated") }
        defer { pos += 2 }
        return UInt16(bytes[pos]) << 8 | UInt16(bytes[pos + 1])
    }

    mutating func u32() throws(KianaNetError) -> UInt32 {
        UInt32(try u16()) << 16 | UInt32(try u16())
    }

    mutating func take(_ n: Int) throws(KianaNetError) -> [UInt8] {
        guard n >= 0, pos + n <= bytes.count else { throw DNSMessage.fail("truncated") }
        defer { pos += n }
        return Array(bytes[pos..<(pos + n)])
    }

    /// Reads a possibly compressed name at the cursor.
    mutating func readName() throws(KianaNetError) -> DNSName {
        var labels: [String] = []
        var total = 1  // the wire form counts the final zero: at most 255 bytes (RFC 1035 §3.1)
        var cursor = pos
        var jumped = false
        var lowestTarget = pos  // pointers must go strictly backwards from here
        while true {
            guard cursor < bytes.count else { throw DNSMessage.fail("truncated name") }
            let len = Int(bytes[cursor])
            if len == 0 {
                if !jumped { pos = cursor + 1 }
                break
            }
            switch len & 0xC0 {
            case 0xC0:
                guard cursor + 1 < bytes.count else { throw DNSMessage.fail("truncated name pointer") }
                let target = (len & 0x3F) << 8 | Int(bytes[cursor + 1])
                guard target < lowestTarget else { throw DNSMessage.fail("name pointer does not point backwards") }
                if !jumped { pos = cursor + 2 }
                jumped = true
                lowestTarget = target
                cursor = target
            case 0x00:
                guard cursor + 1 + len <= bytes.count else { throw DNSMessage.fail("truncated label") }
                total += len + 1
                guard total <= 255 else { throw DNSMessage.fail("name longer than 255 bytes") }
                // Names are UTF-8 (RFC 6762 §16); repairing bad bytes would change the label's
                // length, so a name that is not valid UTF-8 is refused (found by the fuzz target).
                guard let label = String(validating: bytes[(cursor + 1)...(cursor + len)], as: UTF8.self) else {
                    throw DNSMessage.fail("label is not UTF-8")
                }
                labels.append(label)
                cursor += 1 + len
            default:
                throw DNSMessage.fail("unsupported label type")
            }
        }
        return DNSName(labels: labels)
    }

    mutating func record() throws(KianaNetError) -> DNSRecord {
        let name = try readName()
        let type = try u16()
        let cls = try u16()
        let ttl = try u32()
        let rdlength = Int(try u16())
        guard pos + rdlength <= bytes.count else { throw DNSMessage.fail("record data runs past the end") }
        let end = pos + rdlength
        let data: DNSRData
        switch type {
        case DNSType.a:
            guard rdlength == 4 else { throw DNSMessage.fail("A record of \(rdlength) bytes") }
            data = .a(try take(4))
        case DNSType.aaaa:
            guard rdlength == 16 else { throw DNSMessage.fail("AAAA record of \(rdlength) bytes") }
            data = .aaaa(try take(16))
        case DNSType.ptr:
            data = .ptr(try readName())
        case DNSType.srv:
            guard rdlength >= 7 else { throw DNSMessage.fail("short SRV record") }
            let p = try u16()
            let w = try u16()
            let port = try u16()
            data = .srv(priority: p, weight: w, port: port, target: try readName())
        case DNSType.txt:
            var strings: [[UInt8]] = []
            while pos < end {
                let n = Int(try u8())
                guard pos + n <= end else { throw DNSMessage.fail("TXT string runs past its record") }
                strings.append(try take(n))
            }
            // Empty rdata is read as the one empty string it must be written as (RFC 6763 §6.1),
            // so decoding and re-encoding agree (found by the fuzz target).
            data = .txt(strings.isEmpty ? [[]] : strings)
        case DNSType.nsec:
            let next = try readName()
            var types: [UInt16] = []
            var lastWindow = -1
            while pos < end {
                let window = Int(try u8())
                let len = Int(try u8())
                guard len >= 1, len <= 32, pos + len <= end else { throw DNSMessage.fail("bad NSEC bitmap") }
                // Each window at most once, in increasing order (RFC 4034 §4.1.2).
                guard window > lastWindow else { throw DNSMessage.fail("NSEC bitmap windows out of order") }
                lastWindow = window
                let map = try take(len)
                for (i, byte) in map.enumerated() {
                    for bit in 0..<8 where byte & (0x80 >> UInt8(bit)) != 0 {
                        types.append(UInt16(window * 256 + i * 8 + bit))
                    }
                }
            }
            data = .nsec(next: next, types: types)
        default:
            data = .other(try take(rdlength))
        }
        guard pos == end else { throw DNSMessage.fail("record data length does not match its content") }
        return DNSRecord(name: name, type: type, cacheFlush: cls & 0x8000 != 0, ttl: ttl, data: data)
    }
}

// MARK: - Encoding

extension DNSMessage {
    /// Wire bytes with name compression.
    public func encoded() throws(KianaNetError) -> [UInt8] {
        var w = DNSWriter()
        w.u16(id)
        w.u16(flags)
        w.u16(UInt16(questions.count))
        w.u16(UInt16(answers.count))
        w.u16(UInt16(authorities.count))
        w.u16(UInt16(additionals.count))
        for q in questions {
            try w.name(q.name)
            w.u16(q.type)
            w.u16(1 | (q.unicastResponse ? 0x8000 : 0))
        }
        for rr in answers + authorities + additionals { try w.record(rr) }
        guard w.bytes.count <= Self.maxSize else { throw KianaNetError(.malformedEncoding, "DNS message of \(w.bytes.count) bytes is too large") }
        return w.bytes
    }
}

struct DNSWriter {
    var bytes: [UInt8] = []
    /// Offsets of names already written, keyed by their lower-cased label suffix.
    var offsets: [[String]: Int] = [:]

    mutating func u16(_ v: UInt16) { bytes += [UInt8(v >> 8), UInt8(v & 0xFF)] }
    mutating func u32(_ v: UInt32) {
        u16(UInt16(v >> 16))
        u16(UInt16(v & 0xFFFF))
    }

    mutating func name(_ n: DNSName) throws(KianaNetError) {
        var total = 1
        for i in 0..<n.labels.count {
            let suffix = n.labels[i...].map { $0.lowercased() }
            if let off = offsets[Array(suffix)] {
                u16(0xC000 | UInt16(off))
                return
            }
            let raw = Array(n.labels[i].utf8)
            guard !raw.isEmpty, raw.count <= 63 else { throw KianaNetError(.malformedEncoding, "DNS label of \(raw.count) bytes") }
            total += raw.count + 1
            guard total <= 255 else { throw KianaNetError(.malformedEncoding, "DNS name longer than 255 bytes") }
            if bytes.count < 0x3FFF { offsets[Array(suffix)] = bytes.count }
            bytes.append(UInt8(raw.count))
            bytes += raw
        }
        bytes.append(0)
    }

    mutating func record(_ rr: DNSRecord) throws(KianaNetError) {
        try name(rr.name)
        u16(rr.type)
        u16(1 | (rr.cacheFlush ? 0x8000 : 0))
        u32(rr.ttl)
        let lengthAt = bytes.count
        u16(0)
        switch rr.data {
        case .a(let b), .aaaa(let b), .other(let b):
            bytes += b
        case .ptr(let n):
            try name(n)
        case .srv(let p, let w, let port, let target):
            u16(p)
            u16(w)
            u16(port)
            try name(target)
        case .txt(let strings):
            if strings.isEmpty { bytes.append(0) }
            for s in strings {
                guard s.count <= 255 else { throw KianaNetError(.malformedEncoding, "TXT string over 255 bytes") }
                bytes.append(UInt8(s.count))
                bytes += s
            }
        case .nsec(let next, let types):
            // RFC 6762 §6.1: the next-domain name is not compressed.
            for l in next.labels {
                let raw = Array(l.utf8)
                bytes.append(UInt8(raw.count))
                bytes += raw
            }
            bytes.append(0)
            let windows = Dictionary(grouping: types, by: { Int($0) >> 8 })
            for window in windows.keys.sorted() {
                let inWindow = windows[window]!.map { Int($0) & 0xFF }
                let len = inWindow.max()! / 8 + 1
                var map = [UInt8](repeating: 0, count: len)
                for t in inWindow { map[t / 8] |= 0x80 >> UInt8(t % 8) }
                bytes.append(UInt8(window))
                bytes.append(UInt8(len))
                bytes += map
            }
        }
        let len = bytes.count - lengthAt - 2
        guard len <= 0xFFFF else { throw KianaNetError(.malformedEncoding, "record data too long") }
        bytes[lengthAt] = UInt8(len >> 8)
        bytes[lengthAt + 1] = UInt8(len & 0xFF)
    }
}
