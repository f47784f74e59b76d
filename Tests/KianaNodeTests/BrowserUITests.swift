import Foundation
import KianaTestSupport
import Testing

/// The web UI in a real browser: headless Chromium (Debian's `chromium`) driven over the
/// DevTools protocol by Tests/python/webui_browser.py against a real `kiana serve`.
/// Screenshots are kept in .build/test-artifacts/.
@Suite(.needsModels) struct BrowserUITests {
    static let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].first { FileManager.default.isExecutableFile(atPath: $0) }

    @Test("Teach a fact, ask about it, see the answer stream in with a citation that opens the item and its proof")
    func teachAskCiteProve() async throws {
        guard Self.chromium != nil, Models.hasSmolLM && Models.hasMiniLM else {
            if Shared.isCI { Issue.record("chromium (\(Self.chromium ?? "missing")) or the models are missing; `make setup` installs them") }
            return
        }
        let served = try await ServeTests.Served.start(teach: ["The bakery opens at seven."])
        defer { served.close() }
        let (node, port) = (served.node, served.port)
        let shots = Shared.packageRoot.appendingPathComponent(".build/test-artifacts").path
        let script = Shared.packageRoot.appendingPathComponent("Tests/python/webui_browser.py").path
        // A second node with an API token: the script checks that a wrong one is refused with the node's reason.
        let tokenDir = try TempDir()
        defer { tokenDir.cleanup() }
        let tokenNode = try ServeTests.Running(
            ["serve", "--data-dir", tokenDir.path, "--port", "0", "--p2p-port", "0", "--discovery", "off", "--token", "s3cret"])
        defer {
            tokenNode.process.interrupt()
            _ = tokenNode.waitForExit()
        }
        let tokenPort = try #require(await tokenNode.waitForPort(), "\(tokenNode.text)")
        let r = try await runProcess(python3(), [script, "http://127.0.0.1:\(port)", shots, "http://127.0.0.1:\(tokenPort)"])
        let err = String(decoding: r.err, as: UTF8.self)
        #expect(r.status == 0, "\(err)\n\(node.text.suffix(2000))")
        let seen = try #require(try? JSONSerialization.jsonObject(with: r.out) as? [String: Any], "\(err)")
        let item = try #require(seen["item"] as? String, "\(seen)")
        // A grounded answer arrives once, checked; it states the fact and shows the sentence behind it.
        #expect((seen["answer"] as? String ?? "").contains("7319"), "\(seen)")
        #expect((seen["support"] as? [String] ?? []).contains { $0.contains("The garage door code is 7319.") }, "\(seen)")
        #expect((seen["citations"] as? [String])?.first == item, "\(seen)")
        #expect(seen["opened"] as? String == "The garage door code is 7319.", "\(seen)")
        #expect((seen["proof"] as? String ?? "").hasPrefix("✓ verified in this browser"), "\(seen)")
        #expect((seen["verify"] as? String ?? "").hasPrefix("✓ valid"), "\(seen)")
        #expect((seen["block_entries"] as? [String])?.isEmpty == false, "\(seen)")
        let progress = seen["ingest"] as? [String] ?? []
        #expect(progress.contains { $0.hasPrefix("Reading") } && progress.last?.hasPrefix("Done: 1 new") == true, "\(progress)")
        #expect((seen["ingest_bar"] as? [Double]).map { $0[0] == $0[1] } == true, "\(seen)")
        #expect((seen["search"] as? [String] ?? []).contains { $0.contains("ferry to the island") }, "\(seen)")
        #expect(seen["edited"] as? String == "The ferry to the island leaves at 10:15 from pier 3.")
        #expect(seen["row_focused"] as? Bool == true, "a knowledge row cannot take the keyboard focus: \(seen)")
        #expect(seen["switch_locked"] as? Bool == true, "the conversation could be switched under a pending answer: \(seen)")
        // A stale form is not saved over another tab's change, and keeps what was typed.
        #expect((seen["conflict_notice"] as? String ?? "").contains("changed elsewhere"), "\(seen)")
        #expect(seen["conflict_kept"] as? String == "Typed in the stale tab.", "\(seen)")
        #expect(seen["conflict_title"] as? String == "Saved by the other tab | The ferry to the island leaves at 10:15 from pier 3.", "\(seen)")
        // Another trip-notes.md asks first; declined, nothing changed; accepted, it replaced the first.
        let asked = seen["replace_asked"] as? [String] ?? []
        #expect(asked.count == 1 && asked[0].contains("trip-notes.md") && asked[0].contains("Replace"), "\(seen)")
        #expect((seen["replaced"] as? String ?? "").hasPrefix("Done: 0 new, 1 changed"), "\(seen)")
        #expect((seen["latin1"] as? [String] ?? []).contains { $0.contains("Der Schlüssel für den Keller hängt bei Frau Müller.") }, "\(seen)")
        #expect((seen["wrong_type"] as? String ?? "").hasPrefix("Not a Markdown, text, HTML or PDF file: picture.png"), "\(seen)")
        #expect(seen["forgotten_buttons"] as? [String] == ["Proof", "Close"], "\(seen)")
        #expect(seen["failed_proof_hidden"] as? Bool == true, "\(seen)")
        let health = try await runProcess("/usr/bin/curl", ["-s", "http://127.0.0.1:\(port)/health"])
        let deviceID = (try? JSONSerialization.jsonObject(with: health.out) as? [String: Any])?["deviceId"] as? String ?? "?"
        #expect((seen["device"] as? String ?? "").contains(deviceID), "\(seen)")
        #expect((seen["peers"] as? String ?? "").contains("No other devices"), "\(seen)")
        let conversation = (seen["chat_hash"] as? String ?? "").replacingOccurrences(of: "#chat/", with: "")
        #expect(conversation.count == 36, "the address does not name the conversation: \(seen)")
        let reloaded = seen["reload_conversation"] as? [Any] ?? []
        #expect(reloaded.first as? Bool == true && reloaded.dropFirst().compactMap { $0 as? String } == [conversation, "#chat/" + conversation], "\(seen)")
        let opened = seen["reload_item"] as? [Any] ?? []
        #expect(opened.first as? Bool == true && opened.last as? String == "The garage door code is 7319.", "\(seen)")
        #expect(seen["token_forgotten"] as? Bool == true, "\(seen)")
        #expect((seen["malformed_hash_chat"] as? Int ?? 0) >= 2, "the conversations were not listed: \(seen)")
        let paging = seen["paging_kept"] as? [Int] ?? []
        #expect(paging.count == 2 && paging[0] > 100 && paging[1] == paging[0] + 1, "a live change went back to the first page: \(seen)")
        #expect((seen["console_errors"] as? [Any])?.isEmpty == true, "\(seen)")
        // The script checks these itself (and exits non-zero): only edited fields are sent, a cut-off
        // answer is marked, search results follow changes made elsewhere, a wrong token is explained.
        #expect((seen["wrong_token"] as? String ?? "").contains("the bearer token is wrong"), "\(seen)")
        for name in ["webui-chat.png", "webui-item.png", "webui-proof.png", "webui-ingest.png", "webui-device.png"] {
            let png = try #require(FileManager.default.contents(atPath: shots + "/" + name), "no screenshot \(name)")
            #expect(png.count > 5_000 && png.prefix(8) == Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]), "\(name) is not a PNG")
        }
    }

    @Test("Push to talk with Chromium's fake microphone: the recording is transcribed, asked and answered; read-aloud and auto read-aloud fetch speech")
    func pushToTalkAndReadAloud() async throws {
        guard Self.chromium != nil, Models.hasSmolLM && Models.hasMiniLM, voiceInstalled else {
            if Shared.isCI { Issue.record("chromium, the models or the voice engines are missing; `make setup` and `make voice` install them") }
            return
        }
        let served = try await ServeTests.Served.start(teach: ["The bakery opens at seven."])
        defer { served.close() }
        let shots = Shared.packageRoot.appendingPathComponent(".build/test-artifacts").path
        // The spoken question, with a second of quiet before and 2.5 s after (the fake microphone
        // plays it from the start of the recording).
        let spoken = served.dir.path + "/question.wav"
        let said = try await kiana(["say", "--data-dir", served.dir.path + "/v", "--voice-engine", "piper", "-o", spoken, "When does the bakery open?"])
        #expect(said.status == 0, "\(said.err)")
        let padded = served.dir.path + "/question-padded.wav"
        let pad = """
            import sys, wave
            r = wave.open(sys.argv[1]); p = r.getparams(); data = r.readframes(r.getnframes()); q = b'\\0\\0' * p.framerate
            w = wave.open(sys.argv[2], 'wb'); w.setparams(p); w.writeframes(q + data + q + q + q[:len(q) // 2]); w.close()
            """
        #expect(try await runProcess(python3(), ["-c", pad, spoken, padded]).status == 0)
        let script = Shared.packageRoot.appendingPathComponent("Tests/python/webui_voice.py").path
        let r = try await runProcess(python3(), [script, served.url, padded, shots])
        let err = String(decoding: r.err, as: UTF8.self)
        #expect(r.status == 0, "\(err)\n\(served.node.text.suffix(2000))")
        let seen = try #require(try? JSONSerialization.jsonObject(with: r.out) as? [String: Any], "\(err)")
        // The UI sent a 16-bit mono WAV it encoded itself, and the words became the question.
        let upload = ((seen["transcribe_calls"] as? [[String: Any]])?.first?["request"] as? [String: Any]) ?? [:]
        #expect(upload["riff"] as? String == "RIFF" && upload["channels"] as? Int == 1 && upload["bits"] as? Int == 16, "\(seen)")
        let question = (seen["question"] as? String ?? "").lowercased()
        #expect(question.contains("bakery") && question.contains("open"), "\(seen)")
        #expect((seen["answer"] as? String ?? "").contains("seven"), "\(seen)")
        // Read aloud asked for the answer's speech and got audio; auto read-aloud did too.
        let speak = (seen["speak_calls"] as? [[String: Any]]) ?? []
        #expect(speak.contains { $0["status"] as? Int == 200 && $0["type"] as? String == "audio/wav" && ($0["bytes"] as? Int ?? 0) > 1000 }, "\(seen)")
        let auto = (seen["autoread_calls"] as? [[String: Any]]) ?? []
        #expect(!auto.isEmpty && auto.allSatisfy { $0["status"] as? Int == 200 }, "\(seen)")
        #expect((seen["console_errors"] as? [Any])?.isEmpty == true, "\(seen)")
    }

    @Test("kiana bench http drives /health and search with concurrent connections; no errors")
    func benchHTTPRuns() async throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/wrk"), Models.hasMiniLM else {
            if Shared.isCI { Issue.record("wrk or the embedding model is missing; `make setup` installs them") }
            return
        }
        let r = try await kiana(["bench", "http", "--seconds", "1", "--connections", "4", "--items", "40", "--no-reference", "--model-dir", Models.directory])
        #expect(r.status == 0, "\(r.err)")
        for target in ["GET /health", "GET /api/v1/search keyword", "GET /api/v1/search hybrid"] {
            let row = try #require(r.out.split(separator: "\n").first { $0.hasPrefix(target + " ") }, "\(r.out)")
            let cols = row.dropFirst(34).split(separator: " ")
            #expect((Double(cols[0]) ?? 0) > 0 && cols.last == "0", "\(row)")
        }
    }
}
