import Foundation
import KianaCore
import KianaNode
import KianaTestSupport
import Testing

/// Settings: flag > KIANA_* environment > <data dir>/config.json > default, every bad input one
/// clear error naming the key; and `kiana serve` / `kiana config` honouring them as processes.
@Suite struct ConfigurationTests {
    /// A data directory (not initialised: configuration needs none) with `json` as config.json.
    static func directory(_ json: String?) throws -> (TempDir, DataDirectory) {
        let dir = try TempDir()
        if let json { try Data(json.utf8).write(to: URL(fileURLWithPath: dir.path + "/config.json")) }
        return (dir, DataDirectory(path: dir.path))
    }

    struct Layer: Sendable, CustomTestStringConvertible {
        var flag: String?, env: String?, file: String?
        var expected: String, source: KianaConfig.Source
        var testDescription: String { "flag \(flag ?? "-") env \(env ?? "-") file \(file ?? "-") → \(expected) from \(source)" }
    }

    @Test(arguments: [
        Layer(flag: "1001", env: "1002", file: "1003", expected: "1001", source: .flag),
        Layer(flag: nil, env: "1002", file: "1003", expected: "1002", source: .environment),
        Layer(flag: nil, env: "", file: "1003", expected: "1003", source: .file),  // an empty variable counts as unset
        Layer(flag: nil, env: nil, file: "1003", expected: "1003", source: .file),
        Layer(flag: nil, env: nil, file: nil, expected: "8000", source: .default),
        Layer(flag: "1001", env: nil, file: nil, expected: "1001", source: .flag),
    ])
    func precedenceIsFlagThenEnvironmentThenFileThenDefault(_ l: Layer) throws {
        let (dir, data) = try Self.directory(l.file.map { #"{"http": {"port": \#($0)}}"# })
        defer { dir.cleanup() }
        let c = try KianaConfig.resolve(
            flags: l.flag.map { ["http.port": $0] } ?? [:], environment: l.env.map { ["KIANA_PORT": $0] } ?? [:], directory: data)
        #expect(c.text("http.port") == l.expected)
        #expect(c.values["http.port"]?.source == l.source)
        #expect(c.rows.first { $0.key == "http.port" }?.source == l.source)
    }

    @Test func sectionsAndDottedKeysMeanTheSameAndSwitchesTakeBooleans() throws {
        let nested = try KianaConfig.parse(Data(#"{"http": {"port": 9000, "host": "::1"}, "discovery": {"enabled": false}}"#.utf8), name: "a")
        let dotted = try KianaConfig.parse(Data(#"{"http.port": "9000", "http.host": "::1", "discovery.enabled": "off"}"#.utf8), name: "b")
        #expect(nested == dotted)
        #expect(nested == ["http.port": "9000", "http.host": "::1", "discovery.enabled": "off"])
        // null is as if the key were absent.
        #expect(try KianaConfig.parse(Data(#"{"llm": {"model": null}}"#.utf8), name: "c").isEmpty)
        #expect(try KianaConfig.parse(Data(#"{"http": null, "llm": null}"#.utf8), name: "c").isEmpty, "a whole section as null")
        // A device name is shown to others: bounded, one line.
        #expect(throws: KianaNodeError.self) {
            try KianaConfig.resolve(environment: ["KIANA_DEVICE_NAME": "a\nb"], directory: DataDirectory(path: "/nonexistent-kiana-dir"))
        }
        #expect(throws: KianaNodeError.self) { try KianaConfig.checkDeviceName(String(repeating: "x", count: 65), origin: "--name") }
        #expect(throws: KianaNodeError.self) { try KianaConfig.checkDeviceName("", origin: "--name") }
        try KianaConfig.checkDeviceName("Küchen-Pi 🍳", origin: "--name")
    }

    struct Bad: Sendable, CustomTestStringConvertible {
        var json: String
        var mentions: [String]
        var testDescription: String { json }
    }

    @Test(arguments: [
        Bad(json: #"{"http": {"prot": 8000}}"#, mentions: ["unknown key \"http.prot\"", "did you mean http.port?"]),
        Bad(json: #"{"colour": "blue"}"#, mentions: ["unknown key \"colour\""]),
        Bad(json: #"{"http": {"port": "eighty"}}"#, mentions: ["http.port", "0…65535", "\"eighty\""]),
        Bad(json: #"{"http": {"port": 70000}}"#, mentions: ["http.port", "\"70000\""]),
        Bad(json: #"{"http": {"port": 80.5}}"#, mentions: ["http.port", "whole number"]),
        Bad(json: #"{"http": {"port": true}}"#, mentions: ["http.port", "not a switch"]),
        Bad(json: #"{"http": ["port"]}"#, mentions: ["http must be"]),
        Bad(json: #"{"log": {"level": "loud"}}"#, mentions: ["log.level", "notice", "\"loud\""]),
        Bad(json: #"{"llm": {"url": "ftp://x"}}"#, mentions: ["llm.url", "http(s) URL"]),
        Bad(json: #"{"http": {"host": ""}}"#, mentions: ["http.host", "host name or address"]),
        Bad(json: #"{"p2p": {"host": "0.0.0.0 evil"}}"#, mentions: ["p2p.host"]),
        Bad(json: #"{"http.port": 1, "http": {"port": 2}}"#, mentions: ["http.port is given twice"]),
        Bad(json: #"[1, 2]"#, mentions: ["one JSON object"]),
        Bad(json: "null", mentions: ["one JSON object"]),
        Bad(json: #""settings""#, mentions: ["one JSON object"]),
        Bad(json: #"{"http": {"port": 80"#, mentions: ["not valid JSON", "config.json:1:21:"]),
        Bad(json: "{\n  \"http.port\": 8001,\n}", mentions: ["config.json:3:1:", "trailing comma"]),
        Bad(json: "{\n  \"http\": {\n    \"host\": localhost\n  }\n}", mentions: ["config.json:3:13:", "double quotes"]),
        Bad(json: "{\"log.level\": \"debug\" \"http.port\": 1}", mentions: ["config.json:1:23:", "',' or '}'"]),
        Bad(json: #"{"http.port": 01}"#, mentions: ["config.json:1:16:"]),
        Bad(json: #"{"http.port": True}"#, mentions: ["config.json:1:15:", "lower case"]),
    ])
    func badFilesAreOneErrorNamingTheKey(_ bad: Bad) throws {
        try checkBad(bad)
    }

    /// The strict syntax check lets every shape of valid JSON through.
    @Test(arguments: [
        " \r\n\t{ \"http\" : { \"port\" : 8001 , \"host\":\"127.0.0.1\"} } \n",
        #"{"log.level": "\u0064ebug", "device.name": "K\u00fcche \"oben\" \/ \ud83c\udfe0 ✓"}"#,
        #"{"http": {}, "llm": {"model": null}, "discovery.enabled": false}"#,
        "{}",
        "\u{FEFF}{\"http.port\": 8001}",  // a UTF-8 byte-order mark, as some editors write
    ])
    func validJSONOfEveryShapeIsRead(_ json: String) throws {
        #expect(throws: Never.self) { _ = try KianaConfig.parse(Data(json.utf8), name: "config.json") }
    }

    func checkBad(_ bad: Bad) throws {
        let (dir, data) = try Self.directory(bad.json)
        defer { dir.cleanup() }
        do {
            _ = try KianaConfig.resolve(environment: [:], directory: data)
            Issue.record("\(bad.json) was accepted")
        } catch {
            #expect(error.code == .invalidInput)
            #expect(error.message.contains(dir.path + "/config.json"), "\(error.message)")
            for m in bad.mentions { #expect(error.message.contains(m), "\(error.message) lacks \(m)") }
        }
    }

    @Test func badEnvironmentAndFlagValuesNameTheirOrigin() throws {
        let (dir, data) = try Self.directory(nil)
        defer { dir.cleanup() }
        #expect(throws: KianaNodeError.self) { try KianaConfig.resolve(environment: ["KIANA_P2P_PORT": "-1"], directory: data) }
        do { _ = try KianaConfig.resolve(environment: ["KIANA_DISCOVERY": "maybe"], directory: data) } catch {
            #expect(error.message.hasPrefix("KIANA_DISCOVERY must be one of on, off"))
        }
        do { _ = try KianaConfig.resolve(flags: ["sync.cutoffSeconds": "0"], environment: [:], directory: data) } catch {
            #expect(error.message.hasPrefix("--peer-cutoff-seconds must be a whole number 1…86400"))
        }
    }

    @Test func oversizedFilesAreRefusedBeforeParsing() throws {
        let padding = String(repeating: " ", count: KianaConfig.maxFileBytes)
        let (dir, data) = try Self.directory("{" + padding + "}")
        defer { dir.cleanup() }
        do { _ = try KianaConfig.resolve(environment: [:], directory: data) } catch {
            #expect(error.message.contains("at most \(KianaConfig.maxFileBytes)"))
        }
    }

    @Test func secretsAreHiddenAndTheBackendReadsItsSection() throws {
        let (dir, data) = try Self.directory(#"{"http": {"token": "t0ps3cret"}, "llm": {"backend": "openai", "model": "m", "url": "http://127.0.0.1:1/v1"}}"#)
        defer { dir.cleanup() }
        let c = try KianaConfig.resolve(environment: ["KIANA_LLM_API_KEY": "sk-abc"], directory: data)
        let rows = c.rows
        #expect(rows.first { $0.key == "http.token" }?.value == "(set, hidden)")
        #expect(rows.first { $0.key == "llm.apiKey" }?.value == "(set, hidden)")
        #expect(!String(describing: rows).contains("t0ps3cret") && !String(describing: rows).contains("sk-abc"))
        // Credentials inside a URL are not shown either.
        let (d3, data3) = try Self.directory(#"{"llm": {"url": "http://me:pw0rd@127.0.0.1:1/v1"}}"#)
        defer { d3.cleanup() }
        let shown = try KianaConfig.resolve(environment: [:], directory: data3).rows.first { $0.key == "llm.url" }?.value ?? ""
        #expect(!shown.contains("pw0rd") && !shown.contains("me:") && shown.hasSuffix("127.0.0.1:1/v1"), "\(shown)")
        let b = try BackendConfig(c)
        #expect(b.backend == .openai && b.model == "m" && b.apiKey == "sk-abc" && b.url == "http://127.0.0.1:1/v1")
        // The backend's own rule: a remote backend needs a model.
        let (d2, data2) = try Self.directory(#"{"llm": {"backend": "ollama"}}"#)
        defer { d2.cleanup() }
        #expect(throws: KianaNodeError.self) { try BackendConfig(KianaConfig.resolve(environment: [:], directory: data2)).validated() }
    }

    // MARK: processes

    @Test func serveListensWhereTheFileSaysUnlessTheEnvironmentOrAFlagOverrides() async throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        #expect(try await kiana(["init", "--data-dir", dir.path]).status == 0)
        let (filePort, envPort) = (LLMCLITests.freePort(), LLMCLITests.freePort())
        let json = #"{"http": {"port": \#(filePort)}, "p2p": {"port": 0, "host": "127.0.0.1"}, "discovery": {"enabled": false}}"#
        try Data(json.utf8).write(to: URL(fileURLWithPath: dir.path + "/config.json"))

        // `kiana config show --json`: each value and its source.
        let shown = try await runProcess(kianaBinary(), ["config", "show", "--json", "--data-dir", dir.path], environment: ProcessInfo.processInfo.environment.merging(["KIANA_LOG_LEVEL": "info"]) { $1 })
        #expect(shown.status == 0, "\(String(decoding: shown.err, as: UTF8.self))")
        let view = try JSONSerialization.jsonObject(with: shown.out) as? [String: Any]
        let settings = Dictionary(
            uniqueKeysWithValues: (view?["settings"] as? [[String: Any]] ?? []).map { ($0["key"] as? String ?? "", $0) })
        #expect(settings["http.port"]?["value"] as? String == String(filePort))
        #expect(settings["http.port"]?["source"] as? String == "file")
        #expect(settings["log.level"]?["source"] as? String == "environment")
        #expect(settings["http.host"]?["source"] as? String == "default")
        #expect(view?["fileExists"] as? Bool == true)

        // The file's port.
        let fromFile = try ServeTests.Running(["serve", "--data-dir", dir.path])
        let p1 = await fromFile.waitForPort()
        #expect(p1 == filePort, "\(fromFile.text)")
        fromFile.process.interrupt()
        #expect(fromFile.waitForExit())

        // The environment over the file.
        var env = ProcessInfo.processInfo.environment
        env["KIANA_PORT"] = String(envPort)
        let fromEnv = try ServeTests.Running(["serve", "--data-dir", dir.path], environment: env)
        let p2 = await fromEnv.waitForPort()
        #expect(p2 == envPort, "\(fromEnv.text)")
        if let p2 {
            let health = try await runProcess("/usr/bin/curl", ["-s", "-m", "10", "http://127.0.0.1:\(p2)/health"])
            #expect(String(decoding: health.out, as: UTF8.self).contains("\"status\":\"ok\""))
        }
        fromEnv.process.interrupt()
        #expect(fromEnv.waitForExit())

        // A flag over both.
        let fromFlag = try ServeTests.Running(["serve", "--data-dir", dir.path, "--port", "0"], environment: env)
        let p3 = await fromFlag.waitForPort()
        #expect(p3 != nil && p3 != envPort && p3 != filePort, "\(fromFlag.text)")
        fromFlag.process.interrupt()
        #expect(fromFlag.waitForExit())
    }

    @Test func aBadFileStopsServeAndCheckWithTheKeyNamed() async throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        #expect(try await kiana(["init", "--data-dir", dir.path]).status == 0)
        try Data(#"{"p2p": {"prot": 1}}"#.utf8).write(to: URL(fileURLWithPath: dir.path + "/config.json"))
        for args in [["config", "check"], ["serve", "--port", "0"], ["config", "show"]] {
            let r = try await kiana(args + ["--data-dir", dir.path])
            #expect(r.status != 0, "\(args) accepted a bad file")
            #expect(r.err.contains("unknown key \"p2p.prot\" (did you mean p2p.port?)"), "\(args): \(r.err)")
        }
        try Data(#"{"p2p": {"port": 0}}"#.utf8).write(to: URL(fileURLWithPath: dir.path + "/config.json"))
        let ok = try await kiana(["config", "check", "--data-dir", dir.path])
        #expect(ok.status == 0 && ok.out.contains("OK"), "\(ok.err)")
        // A misspelled variable is named, with the one it was probably meant to be.
        var env = ProcessInfo.processInfo.environment
        env["KIANA_PROT"] = "9000"
        let typo = try await kiana(["config", "check", "--data-dir", dir.path], environment: env)
        #expect(typo.status == 0 && typo.err.contains("KIANA_PROT is not a variable kiana reads; did you mean KIANA_PORT?"), "\(typo.err)")
        // `kiana token` prints the token in effect: a configured one replaces api.token.
        let own = try await kiana(["token", "--data-dir", dir.path])
        #expect(own.status == 0 && own.out.trimmingCharacters(in: .whitespacesAndNewlines).count == 64)
        try Data(#"{"http": {"token": "configured-token-1234"}}"#.utf8).write(to: URL(fileURLWithPath: dir.path + "/config.json"))
        let configured = try await kiana(["token", "--data-dir", dir.path])
        #expect(configured.out == "configured-token-1234\n" && configured.err.contains("config.json"), "\(configured)")
    }
}
