import Foundation
import KianaCore

#if canImport(Glibc)
    import Glibc
#endif

/// English speech recognition with CMU PocketSphinx, called in process through Debian's
/// libpocketsphinx (0.8+5prealpha, with the pocketsphinx-en-us acoustic model, language model and
/// dictionary). The library is opened at run time (dlopen), not linked (decision 101): the node
/// builds without the voice packages and says what to install when they are missing. One
/// decoder, made on first use (about half a second) and kept; calls are serialised.
public final class PocketSphinxRecognizer: SpeechRecognizer, @unchecked Sendable {
    public let name = "pocketsphinx"
    public let sampleRate = 16_000
    let model: String
    let lock = NSLock()
    var decoder: OpaquePointer?
    var api: API?

    /// Where Debian's pocketsphinx-en-us puts the model.
    public static let defaultModel = "/usr/share/pocketsphinx/model/en-us"
    static let libraries = ["libpocketsphinx.so.3", "/usr/lib/x86_64-linux-gnu/libpocketsphinx.so.3", "/usr/lib/aarch64-linux-gnu/libpocketsphinx.so.3"]

    typealias ArgsFn = @convention(c) () -> OpaquePointer?
    typealias ParseFn = @convention(c) (OpaquePointer?, OpaquePointer?, Int32, UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?, Int32) -> OpaquePointer?
    typealias InitFn = @convention(c) (OpaquePointer?) -> OpaquePointer?
    typealias UttFn = @convention(c) (OpaquePointer?) -> Int32
    typealias ProcessFn = @convention(c) (OpaquePointer?, UnsafePointer<Int16>?, Int, Int32, Int32) -> Int32
    typealias HypFn = @convention(c) (OpaquePointer?, UnsafeMutablePointer<Int32>?) -> UnsafePointer<CChar>?

    struct API {
        var args: ArgsFn
        var parse: ParseFn
        var initialize: InitFn
        var start: UttFn
        var process: ProcessFn
        var end: UttFn
        var hyp: HypFn
    }

    public init(model: String = PocketSphinxRecognizer.defaultModel) { self.model = model }

    /// The recognizer when the library and the model are installed; nil otherwise.
    public static func installed(model: String = defaultModel) -> PocketSphinxRecognizer? {
        guard FileManager.default.fileExists(atPath: model + "/en-us/mdef"), loadLibrary() != nil else { return nil }
        return PocketSphinxRecognizer(model: model)
    }

    nonisolated(unsafe) static var handle: UnsafeMutableRawPointer?
    static let handleLock = NSLock()

    static func loadLibrary() -> UnsafeMutableRawPointer? {
        handleLock.lock()
        defer { handleLock.unlock() }
        if let handle { return handle }
        for lib in libraries {
            if let h = dlopen(lib, RTLD_NOW | RTLD_LOCAL) {
                handle = h
                return h
            }
        }
        return nil
    }

    static func symbol<T>(_ h: UnsafeMutableRawPointer, _ name: String, as: T.Type) throws(KianaAIError) -> T {
        guard let p = dlsym(h, name) else { throw KianaAIError(.toolMissing, "libpocketsphinx lacks \(name) (a different version?)") }
        return unsafeBitCast(p, to: T.self)
    }

    /// The decoder, made if needed. Caller holds the lock.
    func ready() throws(KianaAIError) -> (OpaquePointer, API) {
        if let decoder, let api { return (decoder, api) }
        guard let h = Self.loadLibrary() else {
            throw KianaAIError(.toolMissing, "speech recognition needs libpocketsphinx3 and pocketsphinx-en-us (./scripts/setup.sh voice)")
        }
        let api = API(
            args: try Self.symbol(h, "ps_args", as: ArgsFn.self), parse: try Self.symbol(h, "cmd_ln_parse_r", as: ParseFn.self),
            initialize: try Self.symbol(h, "ps_init", as: InitFn.self), start: try Self.symbol(h, "ps_start_utt", as: UttFn.self),
            process: try Self.symbol(h, "ps_process_raw", as: ProcessFn.self), end: try Self.symbol(h, "ps_end_utt", as: UttFn.self),
            hyp: try Self.symbol(h, "ps_get_hyp", as: HypFn.self))
        let argv = [
            "pocketsphinx", "-hmm", model + "/en-us", "-lm", model + "/en-us.lm.bin", "-dict", model + "/cmudict-en-us.dict",
            "-samprate", String(sampleRate), "-logfn", "/dev/null",
        ]
        // The decoder keeps pointers into its configuration for its lifetime, which is the
        // process's: the strings are copied once and never freed.
        let cArgs = UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>.allocate(capacity: argv.count + 1)
        for (i, a) in argv.enumerated() { cArgs[i] = strdup(a) }
        cArgs[argv.count] = nil
        guard let config = api.parse(nil, api.args(), Int32(argv.count), cArgs, 0) else {
            throw KianaAIError(.modelCorrupt, "pocketsphinx refused its configuration (model at \(model))")
        }
        guard let d = api.initialize(config) else {
            throw KianaAIError(.modelCorrupt, "pocketsphinx could not load its model from \(model)")
        }
        decoder = d
        self.api = api
        return (d, api)
    }

    public func transcribe(_ audio: PCMAudio) throws(KianaAIError) -> String {
        // Half a second of quiet on each side: the decoder's noise and cepstral-mean estimates
        // need some before the first word (a recording cut right at the voice loses its first
        // word otherwise), and its end-of-speech search some after the last.
        let quiet = [Int16](repeating: 0, count: sampleRate / 2)
        let pcm = PCMAudio(sampleRate: sampleRate, samples: quiet + audio.resampled(to: sampleRate).samples + quiet)
        lock.lock()
        defer { lock.unlock() }
        let (d, api) = try ready()
        guard api.start(d) >= 0 else { throw KianaAIError(.internal, "pocketsphinx could not start an utterance") }
        let processed = pcm.samples.withUnsafeBufferPointer { api.process(d, $0.baseAddress, $0.count, 0, 1) }
        let ended = api.end(d)
        guard processed >= 0, ended >= 0 else { throw KianaAIError(.internal, "pocketsphinx failed on this audio") }
        var score: Int32 = 0
        guard let hyp = api.hyp(d, &score) else { return "" }
        return String(cString: hyp)
    }
}
