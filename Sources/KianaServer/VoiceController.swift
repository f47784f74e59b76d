import Foundation
import HTTPTypes
import Hummingbird
import KianaAI
import NIOCore

/// Speech in and out: /api/v1/voice (status), /api/v1/voice/speak (text → WAV, optionally
/// streamed sentence by sentence), /api/v1/voice/transcribe (WAV → text), and OpenAI's
/// /v1/audio/speech and /v1/audio/transcriptions so existing clients work.
struct VoiceController<Context: RequestContext>: Sendable {
    let node: any NodeAPI

    var routes: RouteCollection<Context> {
        let r = RouteCollection(context: Context.self)
        r.get("api/v1/voice", use: status)
        r.post("api/v1/voice/speak", use: speak)
        r.post("api/v1/voice/transcribe", use: transcribe)
        r.post("v1/audio/speech", use: openAISpeech)
        r.post("v1/audio/transcriptions", use: openAITranscription)
        return r
    }

    @Sendable func status(_ req: Request, _ ctx: Context) async throws -> VoiceStatus { await node.voiceStatus() }

    // MARK: speech

    @Sendable func speak(_ req: Request, _ ctx: Context) async throws -> Response {
        let body = try await RequestBodies.decode(SpeakRequestDTO.self, from: req, limit: 64 << 10)
        guard let text = body.text else { throw HTTPError(.badRequest, message: "text is required") }
        return try await speech(text, language: body.language, voice: body.voice, speed: body.speed, engine: body.engine, stream: body.stream ?? false, format: .wav)
    }

    enum Format: String { case wav, pcm }

    /// The audio of `text`: one WAV (or raw PCM) body with exact sizes, or, streamed, a WAV whose
    /// header leaves the length open followed by each sentence as it is made.
    func speech(_ text: String, language: String?, voice: String?, speed: Double?, engine: String?, stream: Bool, format: Format, rate: Int? = nil) async throws -> Response {
        let node = self.node
        // A slot first (busy is a 503 at once), then checked (and the engine started) before any
        // header is sent: a bad request is a 4xx, not a short 200. The slot is held until the
        // speech is done, so a request that got its header will run.
        let slot = try node.reserveVoice()
        let info = try await node.speechFormat(text, language: language, voice: voice, speed: speed, engine: engine)
        let outRate = rate ?? info.sampleRate
        var headers: HTTPFields = [
            .contentType: format == .wav ? "audio/wav" : "audio/pcm", .cacheControl: "no-store",
        ]
        headers[HTTPField.Name("X-Voice-Engine")!] = info.engine
        headers[HTTPField.Name("X-Voice-Name")!] = info.voice
        headers[HTTPField.Name("X-Voice-Language")!] = info.language
        headers[HTTPField.Name("X-Sample-Rate")!] = String(outRate)
        let convert: @Sendable (PCMAudio) -> [Int16] = { $0.sampleRate == outRate ? $0.samples : $0.resampled(to: outRate).samples }
        if !stream {
            let all = SampleBox()
            defer { slot.release() }
            _ = try await node.speak(text, language: language, voice: voice, speed: speed, engine: engine, slot: slot) { piece in
                all.append(convert(piece))
                return true
            }
            let samples = all.take()
            var bytes = format == .wav ? WAV.header(sampleRate: outRate, dataBytes: samples.count * 2) : []
            WAV.appendSamples(samples, to: &bytes)
            return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
        }
        // A failure after the header cuts the transfer off (failure: nil).
        return Streaming.bytes(headers: headers, failure: { _ in nil }) { emit in
            defer { slot.release() }
            if format == .wav, !emit(ByteBuffer(bytes: WAV.header(sampleRate: outRate, dataBytes: nil))) { return }
            _ = try await node.speak(text, language: language, voice: voice, speed: speed, engine: engine, slot: slot) { piece in
                var bytes: [UInt8] = []
                WAV.appendSamples(convert(piece), to: &bytes)
                return emit(ByteBuffer(bytes: bytes))
            }
        }
    }

    /// OpenAI's speech endpoint: `model` picks the engine when it names one (espeak, piper),
    /// OpenAI's voice names mean the default voice, `response_format` is wav (also when absent)
    /// or pcm (16-bit mono at 24 kHz, as OpenAI's is).
    @Sendable func openAISpeech(_ req: Request, _ ctx: Context) async throws -> Response {
        let body = try await RequestBodies.decode(OpenAISpeechDTO.self, from: req, limit: 64 << 10)
        guard let input = body.input else { throw HTTPError(.badRequest, message: "input is required") }
        let format: Format
        switch body.response_format?.lowercased() {
        case nil, "wav": format = .wav
        case "pcm": format = .pcm
        case let f?: throw HTTPError(.badRequest, message: "response_format \(f.prefix(20)) is not produced here (wav or pcm)")
        }
        if let sf = body.stream_format, sf != "audio" { throw HTTPError(.badRequest, message: "stream_format \(sf.prefix(20)) is not supported (audio)") }
        let engine = ["espeak", "piper"].contains(body.model ?? "") ? body.model : nil
        let voice = body.voice.flatMap { Self.openAIVoices.contains($0.lowercased()) ? nil : $0 }
        return try await speech(
            input, language: body.language, voice: voice, speed: body.speed, engine: engine, stream: body.stream_format == "audio", format: format,
            rate: format == .pcm ? 24_000 : nil)
    }

    /// OpenAI's built-in voice names; they select this node's default voice.
    static var openAIVoices: Set<String> { ["alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse", "marin", "cedar"] }

    // MARK: recognition

    /// A recording as the raw body (audio/wav) or the `file` field of a multipart form.
    @Sendable func transcribe(_ req: Request, _ ctx: Context) async throws -> Transcript {
        let slot = try node.reserveVoice()
        defer { slot.release() }
        let (audio, fields) = try await upload(req)
        return try await node.transcribe(audio, language: fields["language"] ?? Query.string(req, "language"), slot: slot)
    }

    @Sendable func openAITranscription(_ req: Request, _ ctx: Context) async throws -> Response {
        let slot = try node.reserveVoice()
        defer { slot.release() }
        let (audio, fields) = try await upload(req, multipartOnly: true)
        let format = fields["response_format"] ?? "json"
        guard ["json", "text", "verbose_json"].contains(format) else {
            throw HTTPError(.badRequest, message: "response_format \(format.prefix(20)) is not produced here (json, text or verbose_json)")
        }
        let t = try await node.transcribe(audio, language: fields["language"], slot: slot)
        switch format {
        case "text":
            return Response(status: .ok, headers: [.contentType: "text/plain; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: t.text + "\n")))
        case "verbose_json":
            return try VerboseTranscriptionDTO(task: "transcribe", language: "english", duration: t.duration, text: t.text).response(from: req, context: ctx)
        default:
            return try TranscriptionDTO(text: t.text).response(from: req, context: ctx)
        }
    }

    /// Reads an uploaded recording (bounded by the voice limits) and decodes it; the other form
    /// fields come back as text.
    func upload(_ req: Request, multipartOnly: Bool = false) async throws -> (PCMAudio, [String: String]) {
        let limits = node.audioLimits
        let type = req.headers[.contentType] ?? ""
        let boundary = Multipart.boundary(contentType: type)
        if boundary == nil, type.lowercased().hasPrefix("multipart/form-data") {
            throw HTTPError(.badRequest, message: "the multipart form's boundary is missing or invalid (1-70 characters)")
        }
        if multipartOnly && boundary == nil {
            throw HTTPError(.unsupportedMediaType, message: "send the recording as multipart/form-data with a file field")
        }
        let body = try await RequestBodies.collect(req, limit: limits.maxBytes + (boundary == nil ? 0 : 64 << 10))
        var bytes = [UInt8](body.readableBytesView)
        var fields: [String: String] = [:]
        if let boundary {
            let form: Multipart
            do { form = try Multipart.parse(bytes, boundary: boundary) } catch {
                if case .malformed(let why) = error { throw HTTPError(.badRequest, message: why) }
                throw error
            }
            guard let file = form.field("file") else { throw HTTPError(.badRequest, message: "the form has no file field") }
            bytes = Array(file.data)
            for p in form.parts where p.name != "file" && p.data.count <= 1024 { fields[p.name] = String(decoding: p.data, as: UTF8.self) }
        } else {
            let base = type.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() } ?? ""
            guard ["", "audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave", "application/octet-stream"].contains(base) else {
                throw HTTPError(.unsupportedMediaType, message: "send a WAV file (audio/wav) or a multipart form, not \(base.prefix(40))")
            }
        }
        guard !bytes.isEmpty else { throw HTTPError(.badRequest, message: "the recording is empty (zero length)") }
        return (try WAV.decode(bytes, limits: limits), fields)
    }
}

/// Samples gathered from the engine's thread.
final class SampleBox: @unchecked Sendable {
    private let lock = NSLock()
    private var samples: [Int16] = []
    func append(_ s: [Int16]) { lock.withLock { samples += s } }
    func take() -> [Int16] { lock.withLock { samples } }
}

struct SpeakRequestDTO: Decodable {
    var text: String?
    var language: String?
    var voice: String?
    var speed: Double?
    var engine: String?
    var stream: Bool?
}

struct OpenAISpeechDTO: Decodable {
    var model: String?
    var input: String?
    var voice: String?
    var response_format: String?
    var speed: Double?
    var stream_format: String?
    var instructions: String?
    /// Not OpenAI's: the text's language (en, de) when detection should not decide.
    var language: String?
}

struct TranscriptionDTO: ResponseEncodable {
    var text: String
}

struct VerboseTranscriptionDTO: ResponseEncodable {
    var task: String
    var language: String
    var duration: Double
    var text: String
}

extension VoiceStatus: ResponseEncodable {}
extension Transcript: ResponseEncodable {}
