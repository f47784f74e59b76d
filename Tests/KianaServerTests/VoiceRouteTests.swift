import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import KianaAI
import Testing

@testable import KianaServer

/// The voice routes' handling of what clients send, in process (no engine is reached: every
/// request here is refused before one would run), and the multipart reader.
@Suite struct VoiceRouteTests {
    func withApp(_ body: @Sendable (any TestClientProtocol) async throws -> Void) async throws {
        let app = Application(router: KianaHTTP.router(config: HTTPConfig(), node: try FakeNode()))
        try await app.test(.router) { client in try await body(client) }
    }

    static func wav(rate: UInt32 = 16_000, bytes: Int = 3200) -> [UInt8] {
        var h = WAV.header(sampleRate: Int(rate), dataBytes: bytes)
        h += [UInt8](repeating: 0, count: bytes)
        return h
    }

    static func multipart(_ fields: [(String, String?, [UInt8])], boundary: String = "b0und4ry") -> (HTTPFields, ByteBuffer) {
        var body: [UInt8] = []
        for (name, file, data) in fields {
            body += Array("--\(boundary)\r\nContent-Disposition: form-data; name=\"\(name)\"\(file.map { "; filename=\"\($0)\"" } ?? "")\r\n".utf8)
            if file != nil { body += Array("Content-Type: audio/wav\r\n".utf8) }
            body += Array("\r\n".utf8) + data + Array("\r\n".utf8)
        }
        body += Array("--\(boundary)--\r\n".utf8)
        return ([.contentType: "multipart/form-data; boundary=\(boundary)"], ByteBuffer(bytes: body))
    }

    static let uploads: [(String, String, HTTPFields, [UInt8], HTTPResponse.Status, String)] = [
        ("not WAV", "/api/v1/voice/transcribe", [.contentType: "audio/wav"], Array("ID3 this is an mp3 file".utf8), .unsupportedMediaType, "not a WAV"),
        ("a text body", "/api/v1/voice/transcribe", [.contentType: "text/plain"], Array("hello".utf8), .unsupportedMediaType, "send the recording as a WAV"),
        (
            "a form from another site", "/api/v1/voice/transcribe",
            [.contentType: "multipart/form-data; boundary=x", HTTPField.Name("Origin")!: "https://evil.example"], Array("--x--".utf8), .forbidden,
            "another site"
        ),
        (
            "a form from another port on localhost", "/api/v1/voice/transcribe",
            [.contentType: "multipart/form-data; boundary=x", HTTPField.Name("Origin")!: "http://localhost:9999"], Array("--x--".utf8), .forbidden,
            "another site"
        ),
        (
            "a form without a boundary", "/api/v1/voice/transcribe", [.contentType: "multipart/form-data"], Array("--x--".utf8), .badRequest,
            "boundary is missing"
        ),
        (
            "a cross-site form (fetch metadata)", "/v1/audio/transcriptions",
            [.contentType: "multipart/form-data; boundary=x", HTTPField.Name("Sec-Fetch-Site")!: "cross-site"], Array("--x--".utf8), .forbidden,
            "another site"
        ),
        ("zero length", "/api/v1/voice/transcribe", [.contentType: "audio/wav"], [], .badRequest, "empty"),
        ("no samples", "/api/v1/voice/transcribe", [.contentType: "audio/wav"], wav(bytes: 0), .badRequest, "zero length"),
        ("4 kHz", "/api/v1/voice/transcribe", [.contentType: "audio/wav"], wav(rate: 4_000), .badRequest, "4000 Hz is not supported"),
        ("384 kHz", "/api/v1/voice/transcribe", [.contentType: "audio/wav"], wav(rate: 384_000), .badRequest, "384000 Hz"),
        ("over 4 MiB", "/api/v1/voice/transcribe", [.contentType: "audio/wav"], wav(bytes: 5 << 20), .contentTooLarge, "larger than"),
        ("over 30 s", "/api/v1/voice/transcribe", [.contentType: "audio/wav"], wav(bytes: 16_000 * 2 * 31), .contentTooLarge, "31 s long"),
        ("raw body to OpenAI", "/v1/audio/transcriptions", [.contentType: "audio/wav"], wav(), .unsupportedMediaType, "multipart"),
    ]

    @Test("Bad uploads get a clear 4xx", arguments: 0..<uploads.count)
    func badUploads(_ i: Int) async throws {
        let (name, uri, headers, body, status, message) = Self.uploads[i]
        try await withApp { c in
            let r = try await c.execute(uri: uri, method: .post, headers: headers, body: ByteBuffer(bytes: body))
            #expect(r.status == status, "\(name): \(String(buffer: r.body))")
            #expect(String(buffer: r.body).contains(message), "\(name): \(String(buffer: r.body))")
        }
    }

    @Test func badFormsGetA400() async throws {
        try await withApp { c in
            // A form without a file field, a form whose boundary never closes, a German request.
            var (h, b) = Self.multipart([("model", nil, Array("whisper-1".utf8))])
            var r = try await c.execute(uri: "/v1/audio/transcriptions", method: .post, headers: h, body: b)
            #expect(r.status == .badRequest && String(buffer: r.body).contains("no file field"))
            h = [.contentType: "multipart/form-data; boundary=xyz"]
            r = try await c.execute(uri: "/v1/audio/transcriptions", method: .post, headers: h, body: ByteBuffer(string: "--xyz\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nRIFF"))
            #expect(r.status == .badRequest && String(buffer: r.body).contains("not closed"))
            (h, b) = Self.multipart([("file", "q.wav", Self.wav()), ("language", nil, Array("de".utf8))])
            r = try await c.execute(uri: "/v1/audio/transcriptions", method: .post, headers: h, body: b)
            #expect(r.status == .badRequest && String(buffer: r.body).contains("German"))
            (h, b) = Self.multipart([("file", "q.wav", Self.wav()), ("response_format", nil, Array("srt".utf8))])
            r = try await c.execute(uri: "/v1/audio/transcriptions", method: .post, headers: h, body: b)
            #expect(r.status == .badRequest && String(buffer: r.body).contains("response_format srt"))
        }
    }

    static let speechRequests: [(String, String, String)] = [
        ("/api/v1/voice/speak", #"{"text":""}"#, "no text"),
        ("/api/v1/voice/speak", #"{}"#, "text is required"),
        ("/api/v1/voice/speak", #"{"text":"hi","speed":9}"#, "speed"),
        ("/api/v1/voice/speak", #"{"text":"hi","voice":"--help"}"#, "voice must be"),
        ("/api/v1/voice/speak", #"{"text":"hi","engine":"sam"}"#, "engine sam"),
        ("/api/v1/voice/speak", #"{"text":"hi","language":"fr"}"#, "language fr"),
        ("/api/v1/voice/speak", #"{"text":"Hallo Welt","language":"de","engine":"piper"}"#, "piper voice speaks English"),
        ("/api/v1/voice/speak", "{\"text\":\"\(String(repeating: "x", count: 5000))\"}", "at most 4096"),
        ("/v1/audio/speech", #"{"model":"tts-1","input":"hi","response_format":"mp3"}"#, "response_format mp3"),
        ("/v1/audio/speech", #"{"model":"tts-1","input":"hi","stream_format":"sse"}"#, "stream_format sse"),
        ("/v1/audio/speech", #"{"model":"tts-1","voice":"alloy"}"#, "input is required"),
    ]

    @Test("Bad speech requests get a 400 or 413 naming the problem", arguments: 0..<speechRequests.count)
    func badSpeechRequests(_ i: Int) async throws {
        let (uri, body, message) = Self.speechRequests[i]
        try await withApp { c in
            let r = try await c.execute(uri: uri, method: .post, headers: [.contentType: "application/json"], body: ByteBuffer(string: body))
            #expect([.badRequest, .contentTooLarge].contains(r.status), "\(body): \(r.status) \(String(buffer: r.body))")
            #expect(String(buffer: r.body).contains(message), "\(body): \(String(buffer: r.body))")
        }
    }

    // MARK: multipart

    @Test func multipartPartsAreReadWithTheirNamesAndBytes() throws {
        let (headers, buffer) = Self.multipart([("file", "a \"b\".wav", [0, 13, 10, 45, 45, 1]), ("model", nil, Array("whisper-1".utf8))])
        let boundary = try #require(Multipart.boundary(contentType: headers[.contentType]!))
        let form = try Multipart.parse([UInt8](buffer.readableBytesView), boundary: boundary)
        #expect(form.parts.count == 2)
        #expect(form.field("file").map { Array($0.data) } == [0, 13, 10, 45, 45, 1])
        #expect(form.text("model") == "whisper-1")
        #expect(Multipart.boundary(contentType: #"multipart/form-data; charset=utf-8; boundary="a b""#) == "a b")
        #expect(Multipart.boundary(contentType: "application/json") == nil)
        #expect(Multipart.boundary(contentType: "multipart/form-data; boundary=" + String(repeating: "x", count: 71)) == nil)
        #expect(Multipart.parameters(#"form-data; name="a\"b"; filename=x.wav"#) == ["name": "a\"b", "filename": "x.wav"])
    }

    @Test func malformedFormsAreRefusedNotCrashedOn() throws {
        let (_, buffer) = Self.multipart([("file", "a.wav", Array(repeating: 7, count: 300)), ("x", nil, [1])])
        let good = [UInt8](buffer.readableBytesView)
        for cut in 0..<good.count { _ = try? Multipart.parse(Array(good.prefix(cut)), boundary: "b0und4ry") }
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<300 {
            var b = good
            for _ in 0..<3 { b[Int.random(in: 0..<b.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng) }
            _ = try? Multipart.parse(b, boundary: "b0und4ry")
        }
        // More parts than allowed, and headers that never end.
        let many = Self.multipart((0..<40).map { ("f\($0)", nil, [1]) }).1
        #expect(throws: Multipart.Failure.self) { try Multipart.parse([UInt8](many.readableBytesView), boundary: "b0und4ry") }
        let endless = Array("--b\r\n".utf8) + [UInt8](repeating: 65, count: 10_000)
        #expect(throws: Multipart.Failure.self) { try Multipart.parse(endless, boundary: "b") }
    }
}
