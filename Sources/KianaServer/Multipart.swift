import Foundation

/// A `multipart/form-data` body (RFC 7578), as OpenAI clients send audio uploads. Bounded: at
/// most `maxParts` parts with at most 8 KiB of headers each; the body itself is bounded by the
/// route's body limit before it gets here.
struct Multipart {
    struct Part {
        var name: String
        var filename: String?
        var contentType: String?
        var data: ArraySlice<UInt8>
    }

    var parts: [Part]

    static let maxParts = 32

    /// The boundary named by a `multipart/form-data` content type, or nil.
    static func boundary(contentType: String) -> String? {
        let pieces = contentType.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces) }
        guard pieces.first?.lowercased() == "multipart/form-data" else { return nil }
        for p in pieces.dropFirst() {
            guard let eq = p.firstIndex(of: "="), p[..<eq].trimmingCharacters(in: .whitespaces).lowercased() == "boundary" else { continue }
            var b = p[p.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            if b.hasPrefix("\""), b.hasSuffix("\""), b.count >= 2 { b = String(b.dropFirst().dropLast()) }
            // RFC 2046: 1–70 characters.
            guard (1...70).contains(b.utf8.count), b.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) else { return nil }
            return b
        }
        return nil
    }

    enum Failure: Error, Equatable {
        case malformed(String)
    }

    /// Splits `body` at the boundary and reads each part's Content-Disposition and Content-Type.
    static func parse(_ body: [UInt8], boundary: String) throws(Failure) -> Multipart {
        let delimiter = Array("--\(boundary)".utf8)
        guard var at = find(delimiter, in: body, from: 0) else { throw .malformed("the multipart body has no boundary line") }
        var parts: [Part] = []
        while true {
            at += delimiter.count
            // "--" after a delimiter closes the body.
            if at + 2 <= body.count, body[at] == 0x2D, body[at + 1] == 0x2D { break }
            // Transport padding, then CRLF.
            while at < body.count, body[at] == 0x20 || body[at] == 0x09 { at += 1 }
            guard at + 2 <= body.count, body[at] == 0x0D, body[at + 1] == 0x0A else { throw .malformed("a multipart boundary line does not end in CRLF") }
            at += 2
            guard let headerEnd = find([0x0D, 0x0A, 0x0D, 0x0A], in: body, from: at, limit: 8192) else {
                throw .malformed("a multipart part's headers do not end (or exceed 8 KiB)")
            }
            let headers = String(decoding: body[at..<headerEnd], as: UTF8.self)
            let dataStart = headerEnd + 4
            guard let next = find([0x0D, 0x0A] + delimiter, in: body, from: dataStart) else { throw .malformed("a multipart part is not closed by the boundary") }
            var part = Part(name: "", filename: nil, contentType: nil, data: body[dataStart..<next])
            for line in headers.components(separatedBy: "\r\n") {
                guard let colon = line.firstIndex(of: ":") else { continue }
                let key = line[..<colon].trimmingCharacters(in: .whitespaces).lowercased()
                let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
                if key == "content-type" { part.contentType = value }
                if key == "content-disposition" {
                    let params = Self.parameters(value)
                    part.name = params["name"] ?? ""
                    part.filename = params["filename"]
                }
            }
            guard !part.name.isEmpty else { throw .malformed("a multipart part has no name (Content-Disposition: form-data; name=…)") }
            parts.append(part)
            guard parts.count <= maxParts else { throw .malformed("the multipart body has more than \(maxParts) parts") }
            at = next + 2
        }
        return Multipart(parts: parts)
    }

    /// `form-data; name="file"; filename="a.wav"` → ["name": "file", "filename": "a.wav"].
    static func parameters(_ value: String) -> [String: String] {
        var out: [String: String] = [:]
        var chars = Substring(value)
        // Skip the disposition type.
        if let semi = chars.firstIndex(of: ";") { chars = chars[chars.index(after: semi)...] } else { return out }
        while !chars.isEmpty {
            chars = chars.drop { $0 == " " || $0 == ";" || $0 == "\t" }
            guard let eq = chars.firstIndex(of: "=") else { break }
            let key = chars[..<eq].trimmingCharacters(in: .whitespaces).lowercased()
            chars = chars[chars.index(after: eq)...]
            var val = ""
            if chars.first == "\"" {
                chars = chars.dropFirst()
                while let c = chars.first, c != "\"" {
                    if c == "\\", chars.count > 1 {
                        chars = chars.dropFirst()
                    }
                    val.append(chars.first!)
                    chars = chars.dropFirst()
                }
                chars = chars.dropFirst()
            } else {
                let end = chars.firstIndex(of: ";") ?? chars.endIndex
                val = chars[..<end].trimmingCharacters(in: .whitespaces)
                chars = chars[end...]
            }
            if out[key] == nil { out[key] = val }
        }
        return out
    }

    func field(_ name: String) -> Part? { parts.first { $0.name == name } }

    func text(_ name: String) -> String? { field(name).map { String(decoding: $0.data, as: UTF8.self) } }

    /// The first index of `needle` in `hay` at or after `from` (and before `from + limit`).
    static func find(_ needle: [UInt8], in hay: [UInt8], from: Int, limit: Int = .max) -> Int? {
        guard let first = needle.first, !needle.isEmpty else { return nil }
        let last = min(hay.count - needle.count, from > Int.max - limit ? Int.max : from + limit)
        guard from <= last else { return nil }
        return hay.withUnsafeBufferPointer { h -> Int? in
            var i = from
            while i <= last {
                if h[i] == first {
                    var k = 1
                    while k < needle.count, h[i + k] == needle[k] { k += 1 }
                    if k == needle.count { return i }
                }
                i += 1
            }
            return nil
        }
    }
}
