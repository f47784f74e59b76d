import Foundation
import KianaTestSupport
import Testing

/// espeak-ng and PocketSphinx's English model are installed (`make voice`).
let voiceInstalled =
    FileManager.default.isExecutableFile(atPath: "/usr/bin/espeak-ng") && FileManager.default.fileExists(atPath: "/usr/share/pocketsphinx/model/en-us/en-us/mdef")

/// Offline voice through the real binary: `kiana say` / `listen` / `ask --voice --speak`, and a
/// real `kiana serve` driven by the official `openai` client and raw sockets (curl). Audio is
/// checked with Python's `wave` module, an independent reader.
@Suite(.enabled(if: voiceInstalled || Shared.isCI, "needs espeak-ng and PocketSphinx: run `make voice`"))
struct VoiceTests {
    /// Rate, channels, sample width and seconds of a WAV file, read by Python's `wave`.
    static func described(_ path: String) async throws -> (rate: Int, channels: Int, width: Int, seconds: Double) {
        let code = "import json, sys, wave; w = wave.open(sys.argv[1]); print(json.dumps([w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes() / w.getframerate()]))"
        let r = try await runProcess(python3(), ["-c", code, path])
        let a = try #require(try? JSONSerialization.jsonObject(with: r.out) as? [Any], "\(String(decoding: r.err, as: UTF8.self))")
        return (a[0] as? Int ?? 0, a[1] as? Int ?? 0, a[2] as? Int ?? 0, a[3] as? Double ?? 0)
    }

    static let spoken: [(engine: String, language: String, text: String)] = [
        ("espeak", "en", "The bakery opens at seven on weekdays and at nine on Sundays."),
        ("espeak", "de", "Die Bäckerei öffnet werktags um sieben Uhr und sonntags um neun."),
        ("piper", "en", "The bakery opens at seven on weekdays and at nine on Sundays."),
    ]

    @Test("kiana say writes a 16-bit mono WAV of plausible length", arguments: 0..<spoken.count)
    func sayWritesAPlausibleWAV(_ i: Int) async throws {
        let (engine, language, text) = Self.spoken[i]
        let dir = try TempDir()
        defer { dir.cleanup() }
        let file = dir.path + "/out.wav"
        let r = try await kiana(["say", "--data-dir", dir.path + "/d", "--voice-engine", engine, "--language", language, "-o", file, text])
        #expect(r.status == 0, "\(r.err)")
        #expect(r.err.contains("wrote \(file)") && r.err.contains(engine), "\(r.err)")
        let wav = try await Self.described(file)
        let words = Double(text.split(separator: " ").count)
        #expect(wav.channels == 1 && wav.width == 2 && wav.rate == 22_050, "\(wav)")
        // Speech runs at about 2–4 words a second; allow 1.5–6.
        #expect(wav.seconds > words / 6 && wav.seconds < words / 1.5, "\(wav.seconds) s for \(words) words")
        // Slower speech is longer.
        let slow = try await kiana(["say", "--data-dir", dir.path + "/d", "--voice-engine", engine, "--voice-speed", "50", "--language", language, "-o", file, text])
        #expect(slow.status == 0, "\(slow.err)")
        let slower = try await Self.described(file)
        #expect(slower.seconds > wav.seconds * 1.4, "\(slower.seconds) vs \(wav.seconds)")
    }

    /// espeak's default English voice is hard for PocketSphinx's acoustic model (the benchmark
    /// states the rate); its Klatt voice and Piper are heard well. Key words, not whole sentences.
    static let heard: [(engine: String, voice: String?, text: String, keys: [String])] = [
        ("espeak", "en-us+klatt", "Please turn on the kitchen light.", ["turn", "kitchen"]),
        ("piper", nil, "What time does the bakery open on Sunday?", ["bakery", "sunday"]),
    ]

    @Test("kiana listen hears the key words of a recorded utterance, at 22.05 kHz, as 44.1 kHz stereo float and as 48 kHz", arguments: 0..<heard.count)
    func listenHearsKeyWords(_ i: Int) async throws {
        let (engine, voice, text, keys) = Self.heard[i]
        let dir = try TempDir()
        defer { dir.cleanup() }
        let file = dir.path + "/q.wav"
        var args = ["say", "--data-dir", dir.path + "/d", "--voice-engine", engine, "-o", file, text]
        if let voice { args += ["--espeak-voice", voice] }
        let said = try await kiana(args)
        #expect(said.status == 0, "\(said.err)")
        // The same recording as 44.1 kHz stereo float and as 48 kHz 16-bit, written by Python (numpy-free;
        // upsampled by repeating samples, which the recognizer's own resampling filters out).
        let convert = """
            import array, sys, wave
            src = wave.open(sys.argv[1]); rate = src.getframerate(); x = array.array('h', src.readframes(src.getnframes()))
            def write(path, new_rate, stereo_float):
                n = int(len(x) * new_rate / rate); y = [x[min(len(x) - 1, int(k * rate / new_rate))] for k in range(n)]
                if stereo_float:
                    import struct
                    data = b''.join(struct.pack('<ff', v / 32768, v / 32768) for v in y)
                    fmt = struct.pack('<HHIIHH', 3, 2, new_rate, new_rate * 8, 8, 32)
                    body = b'WAVE' + b'fmt ' + struct.pack('<I', len(fmt)) + fmt + b'data' + struct.pack('<I', len(data)) + data
                    open(path, 'wb').write(b'RIFF' + struct.pack('<I', len(body)) + body)
                else:
                    w = wave.open(path, 'wb'); w.setnchannels(1); w.setsampwidth(2); w.setframerate(new_rate); w.writeframes(array.array('h', y).tobytes()); w.close()
            write(sys.argv[2], 44100, True); write(sys.argv[3], 48000, False)
            """
        let c = try await runProcess(python3(), ["-c", convert, file, dir.path + "/q44.wav", dir.path + "/q48.wav"])
        #expect(c.status == 0, "\(String(decoding: c.err, as: UTF8.self))")
        for f in [file, dir.path + "/q44.wav", dir.path + "/q48.wav"] {
            let r = try await kiana(["listen", "--data-dir", dir.path + "/d", "--json", f])
            #expect(r.status == 0, "\(f): \(r.err)")
            let o = try #require(try? JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any], "\(r.out)")
            let got = (o["text"] as? String ?? "").lowercased()
            #expect(keys.allSatisfy { got.contains($0) }, "\(f): heard “\(got)” for “\(text)”")
            #expect((o["duration"] as? Double ?? 0) > 1 && o["engine"] as? String == "pocketsphinx", "\(o)")
        }
        // Clear refusals on the command line too.
        let missing = try await kiana(["listen", "--data-dir", dir.path + "/d", dir.path + "/nope.wav"])
        #expect(missing.status == 1 && missing.err.contains("no such file"), "\(missing.err)")
        try Data("not audio".utf8).write(to: URL(fileURLWithPath: dir.path + "/x.wav"))
        let bad = try await kiana(["listen", "--data-dir", dir.path + "/d", dir.path + "/x.wav"])
        #expect(bad.status == 1 && bad.err.contains("not a WAV file"), "\(bad.err)")
        let german = try await kiana(["listen", "--data-dir", dir.path + "/d", "--language", "de", file])
        #expect(german.status == 1 && german.err.contains("German speech cannot be recognised"), "\(german.err)")
    }

    @Test("The OpenAI audio endpoints round-trip with the official openai client; /api/v1/voice/speak streams sentence by sentence")
    func openAIClientRoundTrip() async throws {
        let served = try await ServeTests.Served.start()
        defer { served.close() }
        let out = served.dir.path + "/voice"
        let script = Shared.packageRoot.appendingPathComponent("Tests/python/voice_clients.py").path
        let r = try await runProcess(python3(), [script, served.url, out])
        let err = String(decoding: r.err, as: UTF8.self)
        #expect(r.status == 0, "\(err)\n\(served.node.text.suffix(2000))")
        let o = try #require(try? JSONSerialization.jsonObject(with: r.out) as? [String: Any], "\(err)")
        let speech = o["speech"] as? [String: Any] ?? [:]
        #expect(speech["rate"] as? Int == 22_050 && speech["channels"] as? Int == 1 && speech["width"] as? Int == 2, "\(speech)")
        #expect((speech["seconds"] as? Double ?? 0) > 1 && (speech["seconds"] as? Double ?? 0) < 5, "\(speech)")
        #expect((o["pcm_seconds"] as? Double ?? 0) > 1 && (o["pcm_seconds"] as? Double ?? 0) < 5, "\(o)")
        for key in ["transcription", "transcription_text"] {
            let text = (o[key] as? String ?? "").lowercased()
            #expect(text.contains("bakery") && text.contains("sunday"), "\(key): \(text)")
        }
        let verbose = o["verbose"] as? [String: Any] ?? [:]
        #expect((verbose["duration"] as? Double ?? 0) > 1 && verbose["language"] as? String == "english", "\(verbose)")
        let notAudio = o["not_audio"] as? [String: Any] ?? [:]
        #expect(notAudio["status"] as? Int == 415 && (notAudio["message"] as? String ?? "").contains("not a WAV"), "\(o)")
        #expect(o["mp3"] as? Int == 400, "\(o)")
        // Streamed: the first audio arrives well before the last sentence is made, in a WAV
        // whose size field is left open.
        let stream = o["stream"] as? [String: Any] ?? [:]
        let first = stream["first_seconds"] as? Double ?? 1
        let all = stream["all_seconds"] as? Double ?? 0
        #expect(first < all * 0.6, "first audio after \(first) s of \(all) s")
        #expect(stream["size_field"] as? Int == 0xFFFF_FFFF && stream["engine"] as? String == "piper" && stream["type"] as? String == "audio/wav", "\(stream)")
        #expect((stream["bytes"] as? Int ?? 0) > 22_050 * 2 * 5, "\(stream)")
    }

    /// Bad uploads over a real socket, then a flood of concurrent transcriptions: every answer is
    /// a clear 4xx, a 200 or a 503 "busy", never a 500 or a hang, and the node keeps serving.
    @Test func badUploadsAndAFloodLeaveTheNodeServing() async throws {
        let served = try await ServeTests.Served.start()
        defer { served.close() }
        let dir = served.dir.path
        let good = dir + "/good.wav"
        #expect(try await kiana(["say", "--data-dir", dir + "/d", "--voice-engine", "piper", "-o", good, "Turn the music down."]).status == 0)
        // 26 MiB (over the 25 MiB limit), a text file, an empty body, 4 kHz and 200 kHz headers.
        var bodies: [(String, Data, Int, String)] = []
        var big = Data("RIFF".utf8)
        big.append(Data(count: 26 << 20))
        bodies.append(("oversized", big, 413, "larger than 25 MiB"))
        bodies.append(("text", Data("hello, this is not audio".utf8), 415, "not a WAV"))
        bodies.append(("empty", Data(), 400, "empty"))
        for rate in [4_000, 200_000] {
            var h = Data("RIFF".utf8) + Self.le32(36 + 3200) + Data("WAVEfmt ".utf8) + Self.le32(16)
            h += Data([1, 0, 1, 0]) + Self.le32(UInt32(rate)) + Self.le32(UInt32(rate * 2)) + Data([2, 0, 16, 0]) + Data("data".utf8) + Self.le32(3200)
            bodies.append(("\(rate) Hz", h + Data(count: 3200), 400, "\(rate) Hz is not supported"))
        }
        for (name, body, status, message) in bodies {
            let path = dir + "/body.bin"
            try body.write(to: URL(fileURLWithPath: path))
            let r = try await runProcess(
                "/usr/bin/curl",
                ["-s", "-o", "-", "-w", "\n%{http_code}", "-H", "Content-Type: audio/wav", "--data-binary", "@" + path, served.url + "/api/v1/voice/transcribe"])
            let text = String(decoding: r.out, as: UTF8.self)
            #expect(text.hasSuffix("\n\(status)") && text.contains(message), "\(name): \(text.suffix(300))")
        }
        // 12 transcriptions at once (the node runs at most 4 voice requests, the rest are told to
        // come back), while /health keeps answering.
        let results = try await withThrowingTaskGroup(of: String.self) { group in
            for _ in 0..<12 {
                group.addTask {
                    let r = try await runProcess(
                        "/usr/bin/curl", ["-s", "-m", "60", "-o", "/dev/null", "-w", "%{http_code}", "-F", "file=@" + good, "-F", "model=whisper-1", served.url + "/v1/audio/transcriptions"])
                    return String(decoding: r.out, as: UTF8.self)
                }
            }
            group.addTask {
                let r = try await runProcess("/usr/bin/curl", ["-s", "-m", "10", "-o", "/dev/null", "-w", "health:%{http_code}", served.url + "/health"])
                return String(decoding: r.out, as: UTF8.self)
            }
            var all: [String] = []
            for try await s in group { all.append(s) }
            return all
        }
        #expect(results.contains("health:200"), "\(results)")
        let codes = results.filter { !$0.hasPrefix("health") }
        #expect(codes.allSatisfy { $0 == "200" || $0 == "503" } && codes.contains("200"), "\(codes)")
        // Afterwards: a transcription works and the node answers, word for word what `kiana listen`
        // hears in the same file (Piper's prosody is random, so the words themselves can vary
        // from one rendering to the next; the recogniser is deterministic).
        let after = try await runProcess("/usr/bin/curl", ["-s", "-F", "file=@" + good, served.url + "/v1/audio/transcriptions"])
        let local = try await kiana(["listen", "--data-dir", dir + "/d", good])
        let heard = (try? JSONSerialization.jsonObject(with: after.out) as? [String: Any])?["text"] as? String
        let localText = local.out.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(local.status == 0 && !localText.isEmpty && heard == localText, "\(String(decoding: after.out, as: UTF8.self)) vs \(local.out)")
        let status = try await runProcess("/usr/bin/curl", ["-s", served.url + "/api/v1/voice"])
        let s = try #require(try? JSONSerialization.jsonObject(with: status.out) as? [String: Any])
        #expect((s["engines"] as? [[String: Any]] ?? []).allSatisfy { $0["installed"] as? Bool == true }, "\(s)")
    }

    /// What a hostile review found, each done again: files behind symlinks and "-", a reader that
    /// goes away, stdin as the recording, a Piper request on a node set to espeak (no worker may
    /// leak), speech requests past the limit refused at once while /health stays fast, and a
    /// streamed speech that fails after its header cut off rather than ended as if complete.
    @Test func outputPathsPipesWorkersAndLimits() async throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let d = dir.path + "/d"
        // -o through a symlink writes its target and keeps the link; -o - is standard output.
        let target = dir.path + "/target.wav"
        try Data(count: 500_000).write(to: URL(fileURLWithPath: target))
        try FileManager.default.createSymbolicLink(atPath: dir.path + "/link.wav", withDestinationPath: target)
        #expect(try await kiana(["say", "--data-dir", d, "--voice-engine", "espeak", "-o", dir.path + "/link.wav", "Hello there."]).status == 0)
        #expect((try? FileManager.default.destinationOfSymbolicLink(atPath: dir.path + "/link.wav")) == target)
        #expect(try await Self.described(target).seconds > 0.3)
        // The old, longer content is gone (the WAV is the whole file).
        let size = (try FileManager.default.attributesOfItem(atPath: target)[.size] as? Int) ?? 0
        let seconds = try await Self.described(target).seconds
        #expect(size < 200_000 && size == 44 + Int(seconds * 22_050 * 2 + 0.5), "\(size) bytes")
        // Standard output redirected to a file gets exact sizes, not a stream's open ones.
        let redirected = try await runProcess("/bin/sh", ["-c", "'\(kianaBinary())' say --data-dir '\(d)' --voice-engine espeak Hello > '\(dir.path)/r.wav'"])
        #expect(redirected.status == 0)
        let r = try Data(contentsOf: URL(fileURLWithPath: dir.path + "/r.wav"))
        #expect(r.count > 44 && r[40..<44].elementsEqual(Self.le32(UInt32(r.count - 44))), "\(r.count) bytes")
        let toStdout = try await runProcess(kianaBinary(), ["say", "--data-dir", d, "--voice-engine", "piper", "-o", "-", "Hello there."])
        #expect(toStdout.out.prefix(4) == Data("RIFF".utf8) && toStdout.out.count > 10_000, "\(toStdout.out.count) bytes")
        // A folder or a path that cannot be written fails before anything is spoken.
        let folder = try await kiana(["say", "--data-dir", d, "-o", dir.path, "Hello."])
        #expect(folder.status == 1 && folder.err.contains("is a folder"), "\(folder.err)")
        let nowhere = try await kiana(["say", "--data-dir", d, "-o", "/nonexistent/x.wav", "Hello."])
        #expect(nowhere.status == 1 && nowhere.err.contains("cannot write"), "\(nowhere.err)")
        // The recording on standard input is heard exactly as the same bytes in a file.
        let heard = try await runProcess(kianaBinary(), ["listen", "--data-dir", d, "-"], input: toStdout.out)
        try toStdout.out.write(to: URL(fileURLWithPath: dir.path + "/hello.wav"))
        let fromFile = try await kiana(["listen", "--data-dir", d, dir.path + "/hello.wav"])
        let stdinText = String(decoding: heard.out, as: UTF8.self)
        #expect(heard.status == 0 && fromFile.status == 0 && !fromFile.out.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty && stdinText == fromFile.out, "\(stdinText) vs \(fromFile.out) \(String(decoding: heard.err, as: UTF8.self))")
        // And those bytes are Piper's voice: 22.05 kHz mono 16-bit PCM, about a second of it (the
        // length from the bytes: a WAV written to a pipe states no data size in its header).
        let wav = try await Self.described(dir.path + "/hello.wav")
        let spokenSeconds = Double(toStdout.out.count - 44) / 2 / 22_050
        #expect(wav.rate == 22_050 && wav.channels == 1 && wav.width == 2 && spokenSeconds > 0.4 && spokenSeconds < 4, "\(wav), \(spokenSeconds) s")
        // A reader that goes away stops a long speech: the speech cut off after 100 bytes takes
        // well under the time of the whole (Piper's worker would otherwise speak the rest; both
        // include its start, so the comparison holds on a busy machine too).
        let long = String(repeating: "This sentence is here to make the speech long. ", count: 30)
        let fullStart = Date()
        let full = try await kiana(["say", "--data-dir", d, "--voice-engine", "piper", "-o", dir.path + "/long.wav", long])
        let fullTime = Date().timeIntervalSince(fullStart)
        #expect(full.status == 0, "\(full.err)")
        let cutStart = Date()
        let cut = try await runProcess("/bin/sh", ["-c", "'\(kianaBinary())' say --data-dir '\(d)' --voice-engine piper \"$0\" | head -c 100 > /dev/null", long])
        let cutTime = Date().timeIntervalSince(cutStart)
        #expect(cut.status == 0 && cutTime < fullTime * 0.6, "cut off after \(cutTime) s, whole \(fullTime) s")
        let espeakCut = try await runProcess("/bin/sh", ["-c", "'\(kianaBinary())' say --data-dir '\(d)' --voice-engine espeak \"$0\" | head -c 100 > /dev/null", long])
        #expect(espeakCut.status == 0)

        // A node set to espeak asked for Piper: one worker, kept, not one per request.
        let node = try ServeTests.Running(["serve", "--data-dir", d, "--port", "0", "--p2p-port", "0", "--discovery", "off", "--voice-engine", "espeak"])
        defer { node.process.terminate() }
        let port = try #require(await node.waitForPort(), "\(node.text)")
        let url = "http://127.0.0.1:\(port)"
        // The status and curl's own time (connect to last byte, not the time to start curl on a
        // busy machine).
        func curl(_ args: [String]) async throws -> (code: String, seconds: Double) {
            let r = try await runProcess("/usr/bin/curl", ["-s", "-m", "60", "-o", "/dev/null", "-w", "%{http_code} %{time_total}"] + args)
            let f = String(decoding: r.out, as: UTF8.self).split(separator: " ")
            return (f.first.map(String.init) ?? "", f.count > 1 ? Double(f[1]) ?? 99 : 99)
        }
        func post(_ body: String) async throws -> (code: String, seconds: Double) {
            try await curl(["-H", "Content-Type: application/json", "-d", body, url + "/api/v1/voice/speak"])
        }
        // First requests to a fresh node, at once, streamed: each gets a whole answer or a 503
        // before its header (never a cut-off 200), and they share one worker.
        let burst = try await withThrowingTaskGroup(of: String.self) { group in
            for _ in 0..<10 {
                group.addTask {
                    let r = try await runProcess(
                        "/usr/bin/curl", ["-s", "-m", "60", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", "-H", "Content-Type: application/json",
                            "-d", #"{"text":"Hello there. How are you?","engine":"piper","stream":true}"#, url + "/api/v1/voice/speak"])
                    return "\(r.status) " + String(decoding: r.out, as: UTF8.self)
                }
            }
            var all: [String] = []
            for try await x in group { all.append(x) }
            return all
        }
        #expect(burst.allSatisfy { $0.hasPrefix("0 503") || ($0.hasPrefix("0 200") && (Int($0.split(separator: " ").last ?? "") ?? 0) > 10_000) }, "\(burst)")
        for _ in 0..<3 { #expect(try await post(#"{"text":"Hello there.","engine":"piper"}"#).code == "200") }
        let workers = try await runProcess("/usr/bin/pgrep", ["-f", "-P", String(node.process.processIdentifier), "python3"])
        #expect(String(decoding: workers.out, as: UTF8.self).split(separator: "\n").count == 1, "\(String(decoding: workers.out, as: UTF8.self))")
        let zombies = try await runProcess("/bin/ps", ["-o", "stat=", "--ppid", String(node.process.processIdentifier)])
        #expect(!String(decoding: zombies.out, as: UTF8.self).contains("Z"), "\(String(decoding: zombies.out, as: UTF8.self))")
        // A named espeak voice that does not exist is a 400 before any audio, streamed or not.
        #expect(try await post(#"{"text":"Hello.","voice":"zz","engine":"espeak","stream":true}"#).code == "400")
        // One long speech holds the worker; of 12 more at once, those past the limit are refused
        // at once, and /health answers meanwhile.
        let text = String(repeating: "This is a fairly long sentence that takes the voice a while to say. ", count: 20)
        let results = try await withThrowingTaskGroup(of: (String, Double).self) { group in
            group.addTask { (try await post("{\"text\":\"\(text)\",\"engine\":\"piper\"}").code, 0) }
            try await Task.sleep(for: .milliseconds(300))
            for _ in 0..<12 {
                group.addTask { try await post(#"{"text":"Hi there.","engine":"piper"}"#) }
            }
            group.addTask {
                let (code, seconds) = try await curl([url + "/health"])
                return ("health:" + code, seconds)
            }
            var all: [(String, Double)] = []
            for try await x in group { all.append(x) }
            return all
        }
        let health = try #require(results.first { $0.0.hasPrefix("health") })
        #expect(health.0 == "health:200" && health.1 < 2, "\(health)")
        let refused = results.filter { $0.0 == "503" }
        #expect(!refused.isEmpty && refused.allSatisfy { $0.1 < 2 }, "\(results)")
        #expect(results.allSatisfy { ["200", "503"].contains($0.0) || $0.0.hasPrefix("health") }, "\(results)")
    }

    static func le32(_ v: UInt32) -> Data { Data([UInt8(v & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v >> 16 & 0xFF), UInt8(v >> 24)]) }

    @Test("kiana ask --voice hears the question and --speak writes the spoken answer", .needsModels)
    func askByVoice() async throws {
        guard Models.hasSmolLM && Models.hasMiniLM else {
            Issue.record("the models are missing; `make setup` installs them")
            return
        }
        let dir = try TempDir()
        defer { dir.cleanup() }
        let data = dir.path + "/d"
        #expect(try await kiana(["init", "--data-dir", data]).status == 0)
        #expect(try await kiana(["remember", "--data-dir", data, "The bakery opens at seven on Sunday."]).status == 0)
        let question = dir.path + "/q.wav"
        #expect(try await kiana(["say", "--data-dir", data, "--voice-engine", "piper", "-o", question, "What time does the bakery open on Sunday?"]).status == 0)
        let answer = dir.path + "/a.wav"
        let r = try await kiana(["ask", "--data-dir", data, "--model-dir", Models.directory, "--voice", question, "--speak", "--audio-out", answer])
        #expect(r.status == 0, "\(r.err)")
        #expect(r.err.lowercased().contains("heard") && r.err.lowercased().contains("bakery"), "\(r.err)")
        #expect(!r.out.isEmpty, "no answer text")
        let wav = try await Self.described(answer)
        #expect(wav.rate > 0 && wav.seconds > 0.5, "\(wav)")
        // Both or neither: a question and a recording together are refused before anything runs.
        let both = try await kiana(["ask", "--data-dir", data, "--voice", question, "a typed question"])
        #expect(both.status != 0 && both.err.contains("one of them"), "\(both.err)")
    }
}
