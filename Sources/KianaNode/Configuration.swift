import Foundation
import KianaCore
import KianaNet
import KianaStore

/// One setting: its key in `config.json` (dotted: `http.port` is `{"http": {"port": …}}`), its
/// environment variable and its flag, what values it takes and its default.
public struct Setting: Sendable {
    /// What values a setting takes.
    public enum Kind: Sendable {
        case text
        /// A name shown to others: 1 to 64 characters, no control characters.
        case name
        /// A whole number in the range.
        case number(ClosedRange<Int>)
        /// One of the words.
        case choice([String])
        /// An http(s) URL.
        case url
        /// A host name or address: not empty, no spaces.
        case host
    }

    public var key: String
    public var environment: String
    public var flag: String
    public var kind: Kind
    /// nil: unset unless given (the code that reads it decides what unset means).
    public var defaultValue: String?
    /// Shown as "(set, hidden)" by `kiana config show`.
    public var secret: Bool
    public var help: String

    /// Checks `text` for this setting; the error names the setting as `origin` gave it.
    func validate(_ text: String, origin: String) throws(KianaNodeError) {
        switch kind {
        case .text:
            return
        case .name:
            // Shown to others as given: what a peer would clean away is refused here.
            guard !text.isEmpty, PeerName.isClean(text) else {
                throw KianaNodeError(
                    .invalidInput, "\(origin) must be 1 to 64 characters (at most 256 bytes) without control or formatting characters (a line break, a tab)")
            }
        case .host:
            guard !text.isEmpty, !text.contains(where: { $0.isWhitespace || $0.asciiValue.map { $0 < 0x20 } == true }) else {
                throw KianaNodeError(.invalidInput, "\(origin) must be a host name or address, not \"\(text)\"")
            }
        case .number(let range):
            guard let n = Int(text), range.contains(n) else {
                throw KianaNodeError(.invalidInput, "\(origin) must be a whole number \(range.lowerBound)…\(range.upperBound), not \"\(text)\"")
            }
        case .choice(let words):
            guard words.contains(text) else {
                throw KianaNodeError(.invalidInput, "\(origin) must be one of \(words.joined(separator: ", ")), not \"\(text)\"")
            }
        case .url:
            guard let u = URL(string: text), let scheme = u.scheme, ["http", "https"].contains(scheme), u.host != nil else {
                throw KianaNodeError(.invalidInput, "\(origin) must be an http(s) URL, not \"\(text)\"")
            }
        }
    }
}

/// The node's settings, each resolved from flag > environment (`KIANA_*`) > the data
/// directory's `config.json` > default, with where each value came from (docs/configuration.md).
public struct KianaConfig: Sendable {
    /// Where a value came from.
    public enum Source: String, Sendable, Codable {
        case flag, environment, file, `default`
    }

    public struct Value: Sendable {
        public var text: String
        public var source: Source
    }

    /// Every setting the node reads, in the order `kiana config show` lists them.
    public static let settings: [Setting] = [
        Setting(key: "http.host", environment: "KIANA_HOST", flag: "--host", kind: .host, defaultValue: "127.0.0.1", secret: false,
                help: "Address the web UI and API listen on; off loopback a token is required."),
        Setting(key: "http.port", environment: "KIANA_PORT", flag: "--port", kind: .number(0...65535), defaultValue: "8000", secret: false,
                help: "Port of the web UI and API; 0 picks a free port."),
        Setting(key: "http.token", environment: "KIANA_TOKEN", flag: "--token", kind: .text, defaultValue: nil, secret: true,
                help: "Bearer token clients must send; off loopback the data directory's api.token when unset."),
        Setting(key: "http.headTimeoutSeconds", environment: "KIANA_HTTP_HEAD_TIMEOUT", flag: "--http-head-timeout", kind: .number(1...600),
                defaultValue: "10", secret: false, help: "Seconds a connection has to send a whole request head (nginx: client_header_timeout)."),
        Setting(key: "http.idleTimeoutSeconds", environment: "KIANA_HTTP_IDLE_TIMEOUT", flag: "--http-idle-timeout", kind: .number(1...3600),
                defaultValue: "60", secret: false, help: "Seconds a kept-alive connection may wait for its next request."),
        Setting(key: "http.minBodyRate", environment: "KIANA_HTTP_MIN_BODY_RATE", flag: "--http-min-body-rate", kind: .number(1...1 << 30),
                defaultValue: "500", secret: false, help: "Bytes per second a request body must arrive at, over 10 s windows; slower gets 408."),
        Setting(key: "http.writeStallSeconds", environment: "KIANA_HTTP_WRITE_STALL_TIMEOUT", flag: "--http-write-stall-timeout",
                kind: .number(1...3600), defaultValue: "30", secret: false,
                help: "Seconds a response (event stream, streamed answer) may wait for a client that reads nothing before it is closed."),
        Setting(key: "http.maxConnections", environment: "KIANA_HTTP_MAX_CONNECTIONS", flag: "--http-max-connections", kind: .number(16...1 << 20),
                defaultValue: "1024", secret: false, help: "HTTP connections open at once at most (lowered to the descriptor budget's share)."),
        Setting(key: "http.maxPerSource", environment: "KIANA_HTTP_MAX_PER_SOURCE", flag: "--http-max-per-source", kind: .number(1...1 << 20),
                defaultValue: "64", secret: false, help: "HTTP connections open at once from one address at most."),
        Setting(key: "p2p.host", environment: "KIANA_P2P_HOST", flag: "--p2p-host", kind: .host, defaultValue: "0.0.0.0", secret: false,
                help: "Address the device-link listener binds."),
        Setting(key: "p2p.port", environment: "KIANA_P2P_PORT", flag: "--p2p-port", kind: .number(0...65535), defaultValue: "8470", secret: false,
                help: "Port of device links; 0 picks a free port."),
        Setting(key: "discovery.enabled", environment: "KIANA_DISCOVERY", flag: "--discovery", kind: .choice(["on", "off"]), defaultValue: "on",
                secret: false, help: "Multicast DNS discovery of the owner's other devices."),
        Setting(key: "discovery.interface", environment: "KIANA_DISCOVERY_INTERFACE", flag: "--discovery-interface", kind: .text,
                defaultValue: nil, secret: false, help: "Limit discovery to this network interface."),
        Setting(key: "device.name", environment: "KIANA_DEVICE_NAME", flag: "--name", kind: .name, defaultValue: nil, secret: false,
                help: "A name for this device, shown to peers."),
        Setting(key: "log.level", environment: "KIANA_LOG_LEVEL", flag: "--log-level",
                kind: .choice(["trace", "debug", "info", "notice", "warning", "error", "critical"]), defaultValue: "notice", secret: false,
                help: "Lowest level logged."),
        Setting(key: "log.format", environment: "KIANA_LOG_FORMAT", flag: "--log-format", kind: .choice(["logfmt", "json"]), defaultValue: "logfmt",
                secret: false, help: "Log lines as logfmt (key=value) or JSON, one per line on standard error."),
        Setting(key: "sync.cutoffSeconds", environment: "KIANA_PEER_CUTOFF_SECONDS", flag: "--peer-cutoff-seconds", kind: .number(1...86_400),
                defaultValue: "60", secret: false, help: "How long a member whose blocks were refused stays cut off."),
        Setting(key: "sync.maxGrowth", environment: "KIANA_SYNC_MAX_GROWTH", flag: "--sync-max-growth", kind: .number(1...10_000_000),
                defaultValue: "10000", secret: false, help: "How many blocks past its stated head a peer may stream."),
        Setting(key: "llm.backend", environment: "KIANA_LLM_BACKEND", flag: "--backend", kind: .choice(["embedded", "ollama", "openai"]),
                defaultValue: "embedded", secret: false, help: "Which language model answers."),
        Setting(key: "llm.model", environment: "KIANA_LLM_MODEL", flag: "--model", kind: .text, defaultValue: nil, secret: false,
                help: "Embedded: a registered name or GGUF path (smollm2-135m-instruct when unset); remote: the server's model."),
        Setting(key: "llm.url", environment: "KIANA_LLM_URL", flag: "--backend-url", kind: .url, defaultValue: nil, secret: false,
                help: "Base URL of the Ollama (http://127.0.0.1:11434 when unset) or OpenAI-compatible (…/v1) server."),
        Setting(key: "llm.apiKey", environment: "KIANA_LLM_API_KEY", flag: "--api-key", kind: .text, defaultValue: nil, secret: true,
                help: "Bearer token for an OpenAI-compatible server (prefer the environment or the file: flags show in `ps`)."),
        Setting(key: "llm.context", environment: "KIANA_LLM_CONTEXT", flag: "--context", kind: .number(16...1 << 20), defaultValue: nil,
                secret: false, help: "Context window in tokens (2048 embedded, 8192 remote when unset)."),
        Setting(key: "llm.threads", environment: "KIANA_LLM_THREADS", flag: "--threads", kind: .number(1...256), defaultValue: nil,
                secret: false, help: "Worker threads of the embedded engine (all cores when unset)."),
        Setting(key: "models.preload", environment: "KIANA_MODELS_PRELOAD", flag: "--preload-models", kind: .choice(["on", "off"]),
                defaultValue: "off", secret: false, help: "Load the models at start, so /ready is true without a first question (services, containers)."),
        Setting(key: "vector.backend", environment: "KIANA_VECTOR_BACKEND", flag: "--vector-backend", kind: .choice(["builtin", "chroma"]),
                defaultValue: "builtin", secret: false, help: "Where item vectors are searched: the in-process index, or a Chroma server."),
        Setting(key: "vector.url", environment: "KIANA_VECTOR_URL", flag: "--vector-url", kind: .url, defaultValue: "http://127.0.0.1:8200",
                secret: false, help: "The Chroma server (`chroma run --port 8200`), when vector.backend is chroma."),
        Setting(key: "voice.engine", environment: "KIANA_VOICE_ENGINE", flag: "--voice-engine", kind: .choice(["auto", "espeak", "piper"]),
                defaultValue: "auto", secret: false, help: "Text to speech: Piper for English when installed and espeak-ng otherwise (auto), or one of them."),
        Setting(key: "voice.speed", environment: "KIANA_VOICE_SPEED", flag: "--voice-speed", kind: .number(25...400), defaultValue: "100",
                secret: false, help: "Speaking rate in percent of the voice's normal rate."),
        Setting(key: "voice.espeakVoice", environment: "KIANA_VOICE_ESPEAK", flag: "--espeak-voice", kind: .text, defaultValue: nil, secret: false,
                help: "An espeak-ng voice instead of the language's default (en-us, de), e.g. en-gb or de+f3 (`espeak-ng --voices`)."),
        Setting(key: "voice.piperModel", environment: "KIANA_VOICE_PIPER_MODEL", flag: "--piper-model", kind: .text, defaultValue: nil, secret: false,
                help: "A Piper voice (.onnx with its .onnx.json) instead of the packaged en_US-joe-medium."),
        Setting(key: "voice.maxSeconds", environment: "KIANA_VOICE_MAX_SECONDS", flag: "--voice-max-seconds", kind: .number(1...600),
                defaultValue: "120", secret: false, help: "The longest recording transcribed (uploads are also limited to 25 MiB)."),
        Setting(key: "models.dir", environment: "KIANA_MODEL_DIR", flag: "--model-dir", kind: .text, defaultValue: nil, secret: false,
                help: "Where the embedded models live (<data dir>/models, or ~/.kiana/models, when unset)."),
    ]

    /// The most a config file may hold (bytes).
    public static let maxFileBytes = 64 * 1024

    /// The resolved value of each setting that has one.
    public var values: [String: Value]
    /// The config file read (nil when there is none).
    public var filePath: String?

    /// The value of `key` (nil when unset).
    public func text(_ key: String) -> String? { values[key]?.text }
    /// The value of a numeric setting (validated when resolved).
    public func number(_ key: String) -> Int? { values[key].flatMap { Int($0.text) } }

    /// Resolves every setting. `flags` are keyed by setting key (only those given); an empty
    /// environment value counts as unset. Unknown keys and bad values are one error naming the key.
    public static func resolve(
        flags: [String: String] = [:], environment: [String: String] = ProcessInfo.processInfo.environment, directory: DataDirectory
    ) throws(KianaNodeError) -> KianaConfig {
        let path = directory.path + "/config.json"
        let file = try readFile(path)
        var values: [String: Value] = [:]
        for s in settings {
            if let v = flags[s.key] {
                try s.validate(v, origin: s.flag)
                values[s.key] = Value(text: v, source: .flag)
            } else if let v = environment[s.environment], !v.isEmpty {
                try s.validate(v, origin: s.environment)
                values[s.key] = Value(text: v, source: .environment)
            } else if let v = file?[s.key] {
                try s.validate(v, origin: "\(path): \(s.key)")
                values[s.key] = Value(text: v, source: .file)
            } else if let v = s.defaultValue {
                values[s.key] = Value(text: v, source: .default)
            }
        }
        return KianaConfig(values: values, filePath: file == nil ? nil : path)
    }

    /// Throws unless `name` is a valid `device.name`.
    public static func checkDeviceName(_ name: String, origin: String) throws(KianaNodeError) {
        try settings.first { $0.key == "device.name" }?.validate(name, origin: origin)
    }

    /// Keeps `name` as `device.name` in the data directory's config.json when there is no such
    /// file yet (`kiana join --name`); true if it was written. An existing file is the owner's
    /// and is not rewritten.
    public static func keepDeviceName(_ name: String, directory: DataDirectory) throws(KianaNodeError) -> Bool {
        try checkDeviceName(name, origin: "--name")
        let path = directory.path + "/config.json"
        guard !FileManager.default.fileExists(atPath: path) else { return false }
        let data: Data
        do {
            data = try JSONSerialization.data(withJSONObject: ["device": ["name": name]], options: [.prettyPrinted, .sortedKeys])
        } catch {
            throw KianaNodeError(.internal, "cannot encode config.json", cause: error)
        }
        // Written whole under a temporary name (0600, synced) and linked into place, which fails
        // if the owner made the file meanwhile: a kill or power loss never leaves half a file.
        let tmp = path + ".tmp"
        try DataDirectory.writeSecret([UInt8](data + Data("\n".utf8)), to: tmp)
        defer { unlink(tmp) }
        let placed = FilePlacement.placeWithoutReplacing(tmp, at: path)
        if placed == EEXIST { return false }
        guard placed == 0 else { throw KianaNodeError(.io, "cannot write \(path): \(String(cString: strerror(placed)))") }
        FilePlacement.syncFolder(directory.path)
        return true
    }

    /// The file's settings by key (nested objects flattened with "."), nil when there is no file.
    static func readFile(_ path: String) throws(KianaNodeError) -> [String: String]? {
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        let attributes = try? FileManager.default.attributesOfItem(atPath: path)
        if let size = attributes?[.size] as? Int, size > maxFileBytes {
            throw KianaNodeError(.invalidInput, "\(path) is \(size) bytes; a config file may hold at most \(maxFileBytes)")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw KianaNodeError(.io, "\(path) cannot be read")
        }
        return try parse(data, name: path)
    }

    /// Parses a config file's JSON: an object whose keys are sections (`"http": {"port": 8000}`)
    /// or dotted keys (`"http.port": 8000`); values are strings, numbers or booleans (true/false
    /// stand for on/off). Unknown keys are refused by name.
    public static func parse(_ data: Data, name: String) throws(KianaNodeError) -> [String: String] {
        // A UTF-8 byte-order mark (some Windows editors write one) is not part of the JSON.
        let data = data.starts(with: [0xEF, 0xBB, 0xBF]) ? data.dropFirst(3) : data
        if let bad = JSONSyntax.firstError(in: data) {
            throw KianaNodeError(.invalidInput, "\(name):\(bad.line):\(bad.column): not valid JSON: \(bad.message)")
        }
        let top: [String: JSONValue]
        do { top = try JSONDecoder().decode([String: JSONValue].self, from: data) } catch let e as KianaNodeError {
            throw KianaNodeError(.invalidInput, "\(name): \(e.message)")
        } catch DecodingError.typeMismatch, DecodingError.valueNotFound {
            // `[1]`, `"x"`, `null`: valid JSON, but not an object of settings.
            throw KianaNodeError(.invalidInput, "\(name) must hold one JSON object of settings")
        } catch DecodingError.dataCorrupted(let context) {
            let detail = (context.underlyingError as? NSError)?.userInfo[NSDebugDescriptionErrorKey] as? String ?? context.debugDescription
            throw KianaNodeError(.invalidInput, "\(name) is not valid JSON: \(detail)")
        } catch {
            throw KianaNodeError(.invalidInput, "\(name) is not valid JSON: \(error)")
        }
        let known = Dictionary(uniqueKeysWithValues: settings.map { ($0.key, $0) })
        var out: [String: String] = [:]
        func walk(_ dict: [String: JSONValue], prefix: String) throws(KianaNodeError) {
            for (k, v) in dict.sorted(by: { $0.key < $1.key }) {
                let key = prefix.isEmpty ? k : prefix + "." + k
                if case .object(let nested) = v {
                    try walk(nested, prefix: key)
                    continue
                }
                // A whole section given as null is absent, as a null value is.
                if case .null = v, known.keys.contains(where: { $0.hasPrefix(key + ".") }) { continue }
                guard let setting = known[key] else {
                    let hint = closest(to: key, among: Array(known.keys)).map { " (did you mean \($0)?)" } ?? ""
                    throw KianaNodeError(.invalidInput, "\(name): unknown key \"\(key)\"\(hint); `kiana config show` lists the settings")
                }
                guard out[key] == nil else { throw KianaNodeError(.invalidInput, "\(name): \(key) is given twice") }
                switch v {
                case .string(let text): out[key] = text
                case .number(let n): out[key] = String(n)
                case .bool(let b):
                    guard case .choice(let words) = setting.kind, words == ["on", "off"] else {
                        throw KianaNodeError(.invalidInput, "\(name): \(key) is not a switch (true/false)")
                    }
                    out[key] = b ? "on" : "off"
                case .null: continue  // as if absent
                case .object: continue  // walked above
                }
            }
        }
        try walk(top, prefix: "")
        return out
    }

    /// A config file's JSON values: strings, whole numbers, booleans, null and objects.
    enum JSONValue: Decodable {
        case string(String), number(Int), bool(Bool), null
        case object([String: JSONValue])

        init(from decoder: any Decoder) throws {
            let c = try decoder.singleValueContainer()
            if c.decodeNil() {
                self = .null
            } else if let b = try? c.decode(Bool.self) {
                self = .bool(b)
            } else if let n = try? c.decode(Int.self) {
                self = .number(n)
            } else if let t = try? c.decode(String.self) {
                self = .string(t)
            } else {
                let path = decoder.codingPath.map(\.stringValue).joined(separator: ".")
                do { self = .object(try c.decode([String: JSONValue].self)) } catch DecodingError.typeMismatch {
                    throw KianaNodeError(.invalidInput, "\(path) must be a string, a whole number, true/false or a section")
                }
            }
        }
    }

    /// KIANA_* variables in `environment` that kiana does not read but that are one typo away
    /// from a setting's variable, with that variable (`KIANA_PROT` → `KIANA_PORT`).
    public static func misspelledEnvironment(_ environment: [String: String]) -> [(name: String, meant: String)] {
        let known = settings.map(\.environment)
        let read = Set(known + ["KIANA_DATA_DIR", "KIANA_LLAMA_CPP_DIR", "KIANA_BENCH_DEBUG"])
        return environment.keys.sorted().filter { $0.hasPrefix("KIANA_") && !read.contains($0) }.compactMap { name in
            closest(to: name, among: known).map { (name, $0) }
        }
    }

    /// The known key nearest `key` by edit distance, when it is near enough to be a typo.
    static func closest(to key: String, among keys: [String]) -> String? {
        func distance(_ a: [Character], _ b: [Character]) -> Int {
            var row = Array(0...b.count)
            for i in 1...max(a.count, 1) where !a.isEmpty {
                var prev = row[0]
                row[0] = i
                for j in 1...max(b.count, 1) where !b.isEmpty {
                    let cur = row[j]
                    row[j] = min(row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] == b[j - 1] ? 0 : 1))
                    prev = cur
                }
            }
            return row[b.count]
        }
        let a = Array(key.lowercased())
        var best: (key: String, distance: Int)?
        for k in keys.sorted() {
            let d: Int = distance(a, Array(k.lowercased()))
            if best == nil || d < best!.distance { best = (k, d) }
        }
        guard let best, best.distance <= max(2, key.count / 4) else { return nil }
        return best.key
    }

    /// A URL's user and password replaced, so `config show` does not print them.
    static func withoutCredentials(_ text: String, _ kind: Setting.Kind) -> String {
        guard case .url = kind, var c = URLComponents(string: text), c.user != nil || c.password != nil else { return text }
        c.user = "(hidden)"
        c.password = nil
        return c.string ?? "(set, hidden)"
    }

    /// One row of `kiana config show`.
    public struct Row: Codable, Sendable, Equatable {
        public var key: String
        /// nil: unset. Secrets read "(set, hidden)".
        public var value: String?
        /// flag, environment, file, default; nil when unset.
        public var source: Source?
        public var environment: String
        public var flag: String
        public var help: String
    }

    /// Every setting with its effective value (secrets hidden) and where it came from.
    public var rows: [Row] {
        Self.settings.map { s in
            let v = values[s.key]
            return Row(
                key: s.key, value: v.map { s.secret ? "(set, hidden)" : Self.withoutCredentials($0.text, s.kind) }, source: v?.source,
                environment: s.environment, flag: s.flag, help: s.help)
        }
    }
}
