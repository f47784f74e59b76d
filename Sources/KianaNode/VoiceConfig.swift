import Foundation
import KianaAI

extension VoiceSettings {
    /// The voice settings (`voice.*`) of a resolved configuration.
    public init(_ config: KianaConfig) {
        self.init(
            engine: config.text("voice.engine") ?? "auto", speed: Double(config.number("voice.speed") ?? 100) / 100,
            espeakVoice: config.text("voice.espeakVoice"), piperModel: config.text("voice.piperModel"),
            limits: AudioLimits(maxSeconds: Double(config.number("voice.maxSeconds") ?? 120)))
    }
}

/// Voice for the CLI (`kiana say`, `listen`, `ask --voice`): the engines in this process, with
/// the data directory's settings (when it exists) under the flags given.
public enum LocalVoice {
    public typealias Engine = Voice
    public typealias Audio = PCMAudio
    public typealias Info = SpeechInfo
    public typealias Heard = Transcript
    public typealias Sentences = SentenceStream

    public static func open(directory: DataDirectory?, flags: [String: String]) throws -> Voice {
        let config: KianaConfig
        if let directory, FileManager.default.fileExists(atPath: directory.path) {
            config = try KianaConfig.resolve(flags: flags, directory: directory)
        } else {
            // No data directory yet: defaults, environment and flags.
            config = try KianaConfig.resolve(flags: flags, directory: DataDirectory(path: "/nonexistent-kiana-\(getpid())"))
        }
        return Voice(settings: VoiceSettings(config))
    }

    /// A WAV file's audio, checked against `limits`.
    public static func read(_ path: String, limits: AudioLimits) throws -> PCMAudio {
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path) else {
            throw KianaNodeError(.notFound, "\(path): no such file")
        }
        if let size = attributes[.size] as? Int, size > limits.maxBytes {
            throw KianaNodeError(.tooLarge, "\(path) is \(size) bytes; at most \(limits.maxBytes) are taken")
        }
        guard let data = FileManager.default.contents(atPath: path) else { throw KianaNodeError(.io, "cannot read \(path)") }
        do { return try WAV.decode([UInt8](data), limits: limits) } catch { throw KianaNodeError(error.code, "\(path): \(error.message)") }
    }

    /// A 16-bit WAV file of `audio`, written to a temporary name and renamed (a failed write
    /// leaves no half file).
    public static func write(_ audio: PCMAudio, to path: String) throws {
        let tmp = path + ".part-\(getpid())"
        guard FileManager.default.createFile(atPath: tmp, contents: Data(WAV.encode(audio))) else {
            throw KianaNodeError(.io, "cannot write \(path)")
        }
        if rename(tmp, path) != 0 {
            unlink(tmp)
            throw KianaNodeError(.io, "cannot write \(path): \(String(cString: strerror(errno)))")
        }
    }

    /// The header of a WAV stream of unknown length, and samples as bytes.
    public static func streamHeader(sampleRate: Int) -> [UInt8] { WAV.header(sampleRate: sampleRate, dataBytes: nil) }
    public static func bytes(_ samples: [Int16]) -> [UInt8] {
        var out: [UInt8] = []
        WAV.appendSamples(samples, to: &out)
        return out
    }

    /// An audio player on PATH that reads WAV from standard input, with its arguments.
    public static func player() -> [String]? {
        let candidates: [[String]] = [["aplay", "-q", "-"], ["paplay"], ["pw-play", "-"], ["ffplay", "-nodisp", "-autoexit", "-loglevel", "quiet", "-"]]
        for c in candidates {
            for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
                let p = "\(dir)/\(c[0])"
                if FileManager.default.isExecutableFile(atPath: p) { return [p] + c.dropFirst() }
            }
        }
        return nil
    }
}
