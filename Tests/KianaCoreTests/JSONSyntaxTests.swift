import Foundation
import KianaCore
import PropertyBased
import Testing

/// The strict JSON syntax check behind config files and request-body errors.
@Suite struct JSONSyntaxTests {
    @Test(arguments: [
        ("{\"a\": [1, -2.5e3, true, false, null, \"x\\u00e9\\ud83c\\udfe0\\n\"], \"b\": {}}", nil),
        ("{\"a\": 1,}", "1:9 a comma before '}'"),
        ("[1 2]", "1:4 ',' or ']'"),
        ("{\"a\": 01}", "1:8 ',' or '}'"),
        ("{\"a\": \"\\ud800\"}", "1:8 a lone UTF-16 high surrogate"),
        ("{\"a\": \"\\udc00\"}", "1:8 a lone UTF-16 low surrogate"),
        ("{\n  \"a\": tru\n}", "2:8 not a JSON value"),
        ("{\"a\": \"line\nbreak\"}", "1:12 a control character"),
        ("\"ok\" x", "1:6 more text"),
        ("", "1:1 the file ends"),
    ] as [(String, String?)])
    func knownInputs(_ text: String, _ expected: String?) {
        let f = JSONSyntax.firstError(in: Data(text.utf8))
        guard let expected else { return #expect(f == nil, "\(f.map { "\($0.line):\($0.column) \($0.message)" } ?? "")") }
        let got = f.map { "\($0.line):\($0.column) \($0.message)" } ?? "accepted"
        #expect(got.hasPrefix(expected.split(separator: " ")[0] + " ") && got.contains(expected.split(separator: " ").dropFirst().joined(separator: " ")), "\(got)")
    }

    @Test func invalidUTF8IsNamedWithItsPlace() {
        let f = JSONSyntax.firstError(in: Data([0x7B, 0x22, 0x61, 0x22, 0x3A, 0x22, 0xC3, 0x28, 0x22, 0x7D]))
        #expect(f?.message == "not valid UTF-8" && f?.column == 7)
    }

    /// A JSON value from seed numbers: objects, arrays, strings with escapes, small numbers.
    static func tree(_ seed: inout ArraySlice<UInt64>, depth: Int = 0) -> Any {
        guard let n = seed.popFirst() else { return NSNull() }
        switch depth > 3 ? n % 4 : n % 6 {
        case 0: return Int(n % 100) - 50
        case 1: return ["plain", "é ✓", "quote \" and \\", "tab\tnew\nline", "🏠", ""][Int(n / 7 % 6)]
        case 2: return n % 2 == 0
        case 3: return NSNull()
        case 4: return (0..<Int(n / 11 % 4)).map { _ in tree(&seed, depth: depth + 1) }
        default:
            var o: [String: Any] = [:]
            for i in 0..<Int(n / 13 % 4) { o["k\(i)"] = tree(&seed, depth: depth + 1) }
            return o
        }
    }

    /// Whatever Foundation writes passes; and after any one-byte change, the check never accepts
    /// what Foundation's parser refuses (it is the stricter of the two).
    @Test func neverLaxerThanFoundation() async {
        await propertyCheck(count: 400, input: Gen.uint64(in: 0...UInt64.max).array(of: 1...40), Gen.int(in: 0...100_000), Gen.uint8(in: 1...255)) {
            numbers, pos, flip in
            var seed = numbers[...]
            let value = ["v": Self.tree(&seed)]
            guard let data = try? JSONSerialization.data(withJSONObject: value) else { return }
            #expect(JSONSyntax.firstError(in: data) == nil, "\(String(decoding: data, as: UTF8.self))")
            var bytes = [UInt8](data)
            bytes[pos % bytes.count] ^= flip
            let mutated = Data(bytes)
            if JSONSyntax.firstError(in: mutated) == nil {
                #expect((try? JSONSerialization.jsonObject(with: mutated, options: [.fragmentsAllowed])) != nil, "\(bytes)")
            }
        }
    }
}
