import Foundation
import KianaTestSupport
import Testing

/// The OpenAI- and Ollama-compatible endpoints of a real `kiana serve`, driven by the official
/// Python clients from PyPI (`openai`, `ollama`), unmodified: only the base URL points at us.
@Suite(.needsModels) struct CompatAPITests {
    @Test("openai and ollama clients: models, chat (streamed and not), generate, embeddings; grounded answers cite")
    func officialClients() async throws {
        guard Models.hasSmolLM && Models.hasMiniLM else {
            if Shared.isCI { Issue.record("the models are missing from \(Models.directory)") }
            return
        }
        let tmp = try TempDir()
        defer { tmp.cleanup() }
        let d = tmp.path
        #expect(try await kiana(["init", "--data-dir", d]).status == 0)
        let taught = try await kiana(["remember", "The spare key is under the third flower pot by the back door.", "--data-dir", d])
        let id = try #require(taught.out.split(whereSeparator: { !$0.isHexDigit }).first { $0.count == 32 }.map(String.init))
        _ = try await kiana(["remember", "Our wifi password is Sunflower42.", "--data-dir", d])
        let node = try ServeTests.Running.loopback(d)
        defer {
            node.process.interrupt()
            _ = node.waitForExit()
        }
        let port = try #require(await node.waitForPort(), "\(node.text)")
        let script = Shared.packageRoot.appendingPathComponent("Tests/python/compat_clients.py").path
        let r = try await runProcess(python3(), [script, "http://127.0.0.1:\(port)", "Where is the spare key?"])
        let err = String(decoding: r.err, as: UTF8.self)
        #expect(r.status == 0, "\(err)")
        let o = try #require(try? JSONSerialization.jsonObject(with: r.out) as? [String: Any], "\(err)")
        #expect((o["openai_models"] as? [String])?.first == "kiana")
        #expect((o["ollama_models"] as? [String])?.first == "kiana")
        for key in ["openai_chat", "openai_stream", "ollama_chat", "ollama_stream", "ollama_generate"] {
            #expect(!((o[key] as? String) ?? "").isEmpty, "\(key) is empty: \(o)")
        }
        #expect(o["openai_citations"] as? [String] == [id], "\(o)")
        // A whole answer ends with "stop"; max_tokens holds for what is delivered, cut at a word ("length").
        #expect(o["openai_finish"] as? String == "stop", "\(o)")
        let short = o["openai_short"] as? [String] ?? []
        let whole = o["openai_chat"] as? String ?? ""
        #expect(
            short.count == 2 && short[1] == "length" && !short[0].isEmpty && short[0].count < whole.count && whole.hasPrefix(short[0])
                && short[0].split(separator: " ").count <= 3, "\(short) of \(whole)")
        // Grounded answers arrive checked and whole; raw models stream token by token.
        #expect((o["openai_stream_pieces"] as? Int ?? 0) >= 1 && (o["ollama_stream_pieces"] as? Int ?? 0) >= 1, "\(o)")
        #expect((o["openai_raw_stream_pieces"] as? Int ?? 0) > 1, "the raw model did not stream: \(o)")
        #expect(o["openai_stream"] as? String == o["openai_chat"] as? String, "greedy stream and non-stream differ")
        // Every surface answers the same way: the compatible APIs give REST ask's answer.
        let rest = try await RestAPITests.call(
            "http://127.0.0.1:\(port)/api/v1/ask", method: "POST", body: #"{"question":"Where is the spare key?","stream":false}"#, seconds: 240)
        let restAnswer = try #require(rest.json["answer"] as? String, "\(rest.body)")
        for key in ["openai_chat", "ollama_chat", "ollama_generate"] { #expect(o[key] as? String == restAnswer, "\(key): \(o)") }
        #expect((o["openai_support"] as? [String]) == ["The spare key is under the third flower pot by the back door."], "\(o)")
        #expect(o["openai_unknown_model"] as? Int == 404 && o["ollama_unknown_model"] as? Int == 404, "\(o)")
        #expect(o["ollama_show_unknown"] as? Int == 404, "\(o)")
        // A plain message, not `{'code': …}` printed as a dict.
        let ollamaError = o["ollama_error_text"] as? String ?? ""
        #expect(ollamaError.contains("gpt-4o") && !ollamaError.contains("{"), "\(ollamaError)")
        #expect(o["ollama_show"] as? [String] == ["kiana", "kiana"], "\(o)")
        #expect(o["ollama_show_raw"] as? [String] == ["gguf", "Q4_1", "134M"] || (o["ollama_show_raw"] as? [String])?.first == "gguf", "\(o)")
        #expect((o["ollama_ps"] as? [String])?.contains("kiana") == true, "\(o)")
        #expect(o["ollama_legacy_embedding"] as? Int == 384 && o["ollama_legacy_same"] as? Bool == true, "\(o)")
        #expect(o["openai_raw_model"] as? String == "smollm2-135m-instruct")
        #expect(o["openai_embeddings"] as? [Int] == [384, 384] && o["ollama_embeddings"] as? [Int] == [384, 384])
        #expect(abs((o["openai_embedding_norm"] as? Double ?? 0) - 1) < 1e-4)
        // stop: the same greedy answer, cut before its first space, the space not returned.
        let full = o["openai_full"] as? String ?? ""
        let firstWord = String(full.prefix { $0 != " " })
        #expect(full.contains(" ") && !firstWord.isEmpty, "the uncut answer has no space to stop at: \(full)")
        #expect(o["openai_stop"] as? [String] == [firstWord, "stop"], "\(o)")
        #expect(o["openai_stop_stream"] as? [String] == [firstWord, "stop"], "\(o)")
        #expect((o["ollama_stop"] as? [String])?.last == "stop" && !((o["ollama_stop"] as? [String])?.first ?? " ").contains(" "), "\(o)")
        #expect(o["openai_model_retrieve"] as? String == "kiana")
        let refused = o["refused"] as? [String: Any] ?? [:]
        for name in ["n", "tools", "json", "logprobs", "image", "dimensions", "ollama_format", "ollama_images"] {
            #expect(refused[name] as? Int == 400, "\(name) was not refused: \(refused)")
        }
        #expect(o["ollama_load"] as? [String] == ["", "load"], "\(o)")
    }

    @Test("Malformed, oversized and incomplete requests get JSON errors; the node keeps serving")
    func badRequests() async throws {
        let served = try await ServeTests.Served.start()
        defer { served.close() }
        let url = served.url
        func post(_ path: String, _ body: String) async throws -> (code: String, body: String) {
            let r = try await runProcess(
                "/usr/bin/curl",
                [
                    "-s", "-m", "20", "-w", "\n%{http_code}", "-H", "Content-Type: application/json",
                    "--data-binary", "@-", url + path,
                ], input: Data(body.utf8))
            let text = String(decoding: r.out, as: UTF8.self)
            let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
            return (String(lines.last ?? ""), lines.dropLast().joined(separator: "\n"))
        }
        let cases: [(String, String, String, String)] = [
            ("/v1/chat/completions", "not json", "400", "not a JSON object"),
            ("/v1/chat/completions", #"{"model":"kiana"}"#, "400", "messages must be"),
            ("/v1/chat/completions", #"{"messages":[{"role":"user","content":"hi"}]}"#, "400", "model is required"),
            ("/v1/chat/completions", #"{"model":"kiana","messages":[{"role":"robot","content":"hi"}]}"#, "400", "unsupported role"),
            ("/v1/chat/completions", #"{"model":"kiana","messages":[{"role":"user","content":"hi"}],"temperature":-1}"#, "400", "temperature"),
            ("/v1/chat/completions", #"{"model":"kiana","messages":[{"role":"user","content":"hi"}],"max_tokens":0}"#, "400", "max_tokens"),
            ("/api/generate", #"{"model":"kiana","prompt":"hi","raw":true}"#, "400", "raw prompts"),
            ("/v1/chat/completions", #"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#, "404", "is not served here"),
            ("/api/chat", #"{"model":"llama3","messages":[{"role":"user","content":"hi"}]}"#, "404", "is not served here"),
            ("/api/show", #"{"model":"gpt-4o"}"#, "404", "is not served here"),
            ("/api/embeddings", #"{"model":"m"}"#, "400", "prompt is required"),
            ("/v1/embeddings", #"{"model":"m","input":[]}"#, "400", "input must be"),
            ("/v1/embeddings", #"{"model":"m","input":""# + String(repeating: "x", count: 1_100_000) + #""}"#, "413", "larger than"),
            // A grounded answer's question is checked before the stream starts: a 400, not an
            // error event in a 200.
            ("/v1/chat/completions", #"{"model":"kiana","stream":true,"messages":[{"role":"user","content":"a\u0000b"}]}"#, "400", "NUL"),
            (
                "/v1/chat/completions", #"{"model":"kiana","stream":true,"messages":[{"role":"user","content":""# + String(repeating: "x ", count: 40_000) + #""}]}"#,
                "400", "longer than 64 KiB"
            ),
        ]
        for (path, body, code, words) in cases {
            let r = try await post(path, body)
            #expect(r.code == code, "\(path) \(body.prefix(60)): \(r.code) \(r.body)")
            // OpenAI's error is an object with a message; Ollama's is the message itself.
            let error = (try? JSONSerialization.jsonObject(with: Data(r.body.utf8)) as? [String: Any])?["error"]
            let message = path.hasPrefix("/api/") ? error as? String : (error as? [String: Any])?["message"] as? String
            #expect(message?.contains(words) == true, "\(path): \(r.body.prefix(200))")
        }
        for body in [#"{"question":"a\u0000b"}"#, #"{"question":""# + String(repeating: "x ", count: 40_000) + #""}"#] {
            #expect(try await post("/api/v1/ask", body).code == "400", "\(body.prefix(40))")
        }
        let health = try await runProcess("/usr/bin/curl", ["-s", url + "/health"])
        #expect(String(decoding: health.out, as: UTF8.self).contains("\"status\":\"ok\""))
    }
}
