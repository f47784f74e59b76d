import Foundation
import Synchronization
#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// A streaming HTTP client for the remote backends: POSTs JSON and yields the response body
/// line by line (NDJSON for Ollama, SSE for OpenAI). Lines and whole bodies are size-limited.
struct HTTPLines: Sendable {
    let baseURL: URL
    let apiKey: String?
    let timeout: TimeInterval
    static let maxLine = 4 << 20
    static let maxBody = 256 << 20

    func url(_ path: String) -> URL { baseURL.appendingPathComponent(path) }

    func request(_ path: String, json: Any?) throws(KianaAIError) -> URLRequest {
        var r = URLRequest(url: url(path), timeoutInterval: timeout)
        if let json {
            r.httpMethod = "POST"
            do { r.httpBody = try JSONSerialization.data(withJSONObject: json) } catch {
                throw KianaAIError(.invalidInput, "cannot encode the request: \(error)")
            }
            r.setValue("application/json", forHTTPHeaderField: "Content-Type")
        }
        if let apiKey, !apiKey.isEmpty { r.setValue("Bearer \(apiKey)", forHTTPHeaderField: "Authorization") }
        return r
    }

    func unreachable(_ error: Error) -> KianaAIError {
        KianaAIError(
            .backend, "\(baseURL.absoluteString) is not reachable (\((error as NSError).localizedDescription)); start the server or choose another backend")
    }

    /// The whole response (for small replies): status and body.
    func fetch(_ path: String, json: Any?) async throws(KianaAIError) -> (Int, Data) {
        let req = try request(path, json: json)
        do {
            let (data, resp) = try await URLSession.shared.data(for: req)
            guard data.count <= Self.maxBody else { throw KianaAIError(.backend, "reply from \(baseURL) is too large") }
            return ((resp as? HTTPURLResponse)?.statusCode ?? 0, data)
        } catch let e as KianaAIError { throw e } catch { throw unreachable(error) }
    }

    /// Streams response lines to `onLine` (return false to stop early). Non-2xx statuses
    /// throw with the server's message.
    func stream(_ path: String, json: Any, onLine: @escaping @Sendable (String) throws -> Bool) async throws {
        let req = try request(path, json: json)
        let delegate = LineDelegate(onLine: onLine)
        let session = URLSession(configuration: .ephemeral, delegate: delegate, delegateQueue: nil)
        defer { session.finishTasksAndInvalidate() }
        let task = session.dataTask(with: req)
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, Error>) in
                delegate.start(c)
                task.resume()
            }
        } onCancel: {
            task.cancel()
        }
        if let status = delegate.status, !(200..<300).contains(status) {
            throw KianaAIError(.backend, "\(baseURL.absoluteString)\(path) answered HTTP \(status): \(Self.errorMessage(delegate.errorBody))")
        }
    }

    /// The message of an error body ({"error": "…"} or {"error": {"message": "…"}}), or the text.
    static func errorMessage(_ body: Data) -> String {
        if let o = try? JSONSerialization.jsonObject(with: body) as? [String: Any] {
            if let e = o["error"] as? String { return e }
            if let e = o["error"] as? [String: Any], let m = e["message"] as? String { return m }
        }
        let s = String(decoding: body.prefix(300), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return s.isEmpty ? "no message" : s
    }

    /// `@unchecked`: URLSession calls a delegate on its own queue; its state is guarded by `lock`.
    final class LineDelegate: NSObject, URLSessionDataDelegate, @unchecked Sendable {
        let onLine: @Sendable (String) throws -> Bool
        let lock = NSLock()
        var continuation: CheckedContinuation<Void, Error>?
        var buffer = Data()
        var total = 0
        var status: Int?
        var errorBody = Data()
        var failure: Error?
        var stopped = false

        init(onLine: @escaping @Sendable (String) throws -> Bool) { self.onLine = onLine }

        func start(_ c: CheckedContinuation<Void, Error>) {
            lock.lock()
            continuation = c
            lock.unlock()
        }

        func urlSession(
            _ session: URLSession, dataTask: URLSessionDataTask, didReceive response: URLResponse,
            completionHandler: @escaping (URLSession.ResponseDisposition) -> Void
        ) {
            lock.lock()
            status = (response as? HTTPURLResponse)?.statusCode
            lock.unlock()
            completionHandler(.allow)
        }

        func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive data: Data) {
            lock.lock()
            defer { lock.unlock() }
            guard !stopped else { return }
            total += data.count
            if total > HTTPLines.maxBody {
                fail(KianaAIError(.backend, "the reply is larger than \(HTTPLines.maxBody >> 20) MiB"), dataTask)
                return
            }
            if let s = status, !(200..<300).contains(s) {
                errorBody.append(data.prefix(65536 - errorBody.count))
                return
            }
            buffer.append(data)
            while let nl = buffer.firstIndex(of: 0x0A) {
                let line = String(decoding: buffer[buffer.startIndex..<nl], as: UTF8.self)
                buffer.removeSubrange(buffer.startIndex...nl)
                do {
                    if try !onLine(line.hasSuffix("\r") ? String(line.dropLast()) : line) {
                        stopped = true
                        dataTask.cancel()
                        return
                    }
                } catch {
                    fail(error, dataTask)
                    return
                }
            }
            if buffer.count > HTTPLines.maxLine { fail(KianaAIError(.backend, "a reply line is longer than \(HTTPLines.maxLine >> 20) MiB"), dataTask) }
        }

        private func fail(_ e: Error, _ task: URLSessionTask) {
            failure = e
            stopped = true
            task.cancel()
        }

        func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: Error?) {
            lock.lock()
            let c = continuation
            continuation = nil
            var result: Result<Void, Error> = .success(())
            if let failure {
                result = .failure(failure)
            } else if let error, !stopped {
                result = .failure(
                    KianaAIError(
                        .backend,
                        "\(task.originalRequest?.url?.absoluteString ?? "the server") failed: \((error as NSError).localizedDescription); is it running?"))
            } else if !buffer.isEmpty, status.map({ (200..<300).contains($0) }) ?? false, !stopped {
                let line = String(decoding: buffer, as: UTF8.self)
                buffer = Data()
                do { _ = try onLine(line) } catch { result = .failure(error) }
            }
            lock.unlock()
            c?.resume(with: result)
        }
    }
}

/// Accumulates streamed text and applies stop strings and the caller's cancel.
final class StreamState: Sendable {
    struct Counts {
        var text = ""
        var cancelled = false
        var promptTokens = 0
        var completionTokens = 0
        var reason: StopReason = .endOfGeneration
    }
    let counts = Mutex(Counts())
    let onText: @Sendable (String) -> Bool
    init(onText: @escaping @Sendable (String) -> Bool) { self.onText = onText }

    func push(_ piece: String) -> Bool {
        counts.withLock { $0.text += piece }
        if !onText(piece) {
            counts.withLock {
                $0.cancelled = true
                $0.reason = .cancelled
            }
            return false
        }
        return true
    }

    var text: String { counts.withLock { $0.text } }
    var promptTokens: Int { counts.withLock { $0.promptTokens } }
    var completionTokens: Int { counts.withLock { $0.completionTokens } }
    var reason: StopReason { counts.withLock { $0.reason } }
}

/// Ollama's native API: /api/chat (NDJSON stream), /api/embed, /api/tags. Every request sends
/// `num_ctx` (Ollama's default window is small and silently truncates the prompt otherwise).
public struct OllamaBackend: ChatBackend {
    public let model: String
    public let contextSize: Int
    let http: HTTPLines

    public init(baseURL: URL, model: String, contextSize: Int = 8192, timeout: TimeInterval = 300) {
        self.model = model
        self.contextSize = contextSize
        http = HTTPLines(baseURL: baseURL, apiKey: nil, timeout: timeout)
    }

    public var label: String { "ollama \(model) at \(http.baseURL.absoluteString)" }
    public func countTokens(_ text: String) -> Int { text.utf8.count / 3 + 1 }

    func options(_ r: ChatRequest) -> [String: Any] {
        var o: [String: Any] = [
            "num_ctx": contextSize, "num_predict": r.maxTokens,
            "temperature": r.sampling.temperature, "top_k": r.sampling.topK, "top_p": r.sampling.topP,
            "min_p": r.sampling.minP, "repeat_penalty": r.sampling.repeatPenalty, "repeat_last_n": r.sampling.repeatLastN,
        ]
        if let s = r.sampling.seed { o["seed"] = s }
        if !r.stop.isEmpty { o["stop"] = r.stop }
        return o
    }

    public func chat(_ request: ChatRequest, onText: @escaping @Sendable (String) -> Bool) async throws -> ChatReply {
        let body: [String: Any] = [
            "model": model, "stream": true, "options": options(request),
            "messages": request.messages.map { ["role": $0.role.rawValue, "content": $0.content] },
        ]
        let state = StreamState(onText: onText)
        let start = Date()
        try await http.stream("api/chat", json: body) { line in
            guard !line.trimmingCharacters(in: .whitespaces).isEmpty else { return true }
            guard let o = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
                throw KianaAIError(.backend, "Ollama sent a line that is not JSON")
            }
            if let e = o["error"] as? String { throw KianaAIError(.backend, "Ollama reported an error mid-answer: \(e)") }
            if let m = o["message"] as? [String: Any], let c = m["content"] as? String, !c.isEmpty {
                if !state.push(c) { return false }
            }
            if o["done"] as? Bool == true {
                state.counts.withLock { c in
                    c.promptTokens = o["prompt_eval_count"] as? Int ?? 0
                    c.completionTokens = o["eval_count"] as? Int ?? 0
                    if o["done_reason"] as? String == "length" { c.reason = .length }
                }
                return false
            }
            return true
        }
        return ChatReply(
            text: state.text, promptTokens: state.promptTokens, completionTokens: state.completionTokens,
            stopReason: state.reason, seconds: Date().timeIntervalSince(start))
    }

    public func embed(_ texts: [String]) async throws -> [[Float]] {
        let (status, data) = try await http.fetch("api/embed", json: ["model": model, "input": texts, "options": ["num_ctx": contextSize]])
        guard (200..<300).contains(status) else { throw KianaAIError(.backend, "Ollama /api/embed answered HTTP \(status): \(HTTPLines.errorMessage(data))") }
        guard let o = try? JSONSerialization.jsonObject(with: data) as? [String: Any], let e = o["embeddings"] as? [[Double]], e.count == texts.count else {
            throw KianaAIError(.backend, "Ollama /api/embed sent no embeddings")
        }
        return e.map { $0.map(Float.init) }
    }

    public func models() async throws -> [String] {
        let (status, data) = try await http.fetch("api/tags", json: nil)
        guard (200..<300).contains(status), let o = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
            let list = o["models"] as? [[String: Any]]
        else { throw KianaAIError(.backend, "Ollama /api/tags answered HTTP \(status)") }
        return list.compactMap { $0["name"] as? String }
    }
}

/// Any OpenAI-compatible server: /v1/chat/completions (SSE stream), /v1/embeddings, /v1/models.
public struct OpenAIBackend: ChatBackend {
    public let model: String
    public let contextSize: Int
    let http: HTTPLines

    /// `baseURL` ends in /v1 (as the official clients take it).
    public init(baseURL: URL, model: String, apiKey: String? = nil, contextSize: Int = 8192, timeout: TimeInterval = 300) {
        self.model = model
        self.contextSize = contextSize
        http = HTTPLines(baseURL: baseURL, apiKey: apiKey, timeout: timeout)
    }

    public var label: String { "openai-compatible \(model) at \(http.baseURL.absoluteString)" }
    public func countTokens(_ text: String) -> Int { text.utf8.count / 3 + 1 }

    public func chat(_ request: ChatRequest, onText: @escaping @Sendable (String) -> Bool) async throws -> ChatReply {
        var body: [String: Any] = [
            "model": model, "stream": true, "max_tokens": request.maxTokens,
            "temperature": request.sampling.temperature, "top_p": request.sampling.topP,
            "stream_options": ["include_usage": true],
            "messages": request.messages.map { ["role": $0.role.rawValue, "content": $0.content] },
        ]
        if let s = request.sampling.seed { body["seed"] = s }
        if !request.stop.isEmpty { body["stop"] = Array(request.stop.prefix(4)) }
        let state = StreamState(onText: onText)
        let start = Date()
        try await http.stream("chat/completions", json: body) { line in
            guard line.hasPrefix("data:") else { return true }
            let payload = line.dropFirst(5).trimmingCharacters(in: .whitespaces)
            if payload == "[DONE]" { return false }
            guard let o = try? JSONSerialization.jsonObject(with: Data(payload.utf8)) as? [String: Any] else {
                throw KianaAIError(.backend, "the server sent an event that is not JSON")
            }
            if let e = o["error"] {
                throw KianaAIError(
                    .backend,
                    "the server reported an error mid-answer: \(HTTPLines.errorMessage((try? JSONSerialization.data(withJSONObject: ["error": e])) ?? Data()))")
            }
            if let u = o["usage"] as? [String: Any] {
                state.counts.withLock { c in
                    c.promptTokens = u["prompt_tokens"] as? Int ?? 0
                    c.completionTokens = u["completion_tokens"] as? Int ?? 0
                }
            }
            if let choice = (o["choices"] as? [[String: Any]])?.first {
                if let d = choice["delta"] as? [String: Any], let c = d["content"] as? String, !c.isEmpty {
                    if !state.push(c) { return false }
                }
                if choice["finish_reason"] as? String == "length" { state.counts.withLock { $0.reason = .length } }
            }
            return true
        }
        return ChatReply(
            text: state.text, promptTokens: state.promptTokens, completionTokens: state.completionTokens,
            stopReason: state.reason, seconds: Date().timeIntervalSince(start))
    }

    public func embed(_ texts: [String]) async throws -> [[Float]] {
        let (status, data) = try await http.fetch("embeddings", json: ["model": model, "input": texts])
        guard (200..<300).contains(status) else { throw KianaAIError(.backend, "/v1/embeddings answered HTTP \(status): \(HTTPLines.errorMessage(data))") }
        guard let o = try? JSONSerialization.jsonObject(with: data) as? [String: Any], let list = o["data"] as? [[String: Any]] else {
            throw KianaAIError(.backend, "/v1/embeddings sent no data")
        }
        let sorted = list.sorted { ($0["index"] as? Int ?? 0) < ($1["index"] as? Int ?? 0) }
        let out = sorted.compactMap { ($0["embedding"] as? [Double])?.map(Float.init) }
        guard out.count == texts.count else { throw KianaAIError(.backend, "/v1/embeddings sent \(out.count) embeddings for \(texts.count) inputs") }
        return out
    }

    public func models() async throws -> [String] {
        let (status, data) = try await http.fetch("models", json: nil)
        guard (200..<300).contains(status), let o = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
            let list = o["data"] as? [[String: Any]]
        else { throw KianaAIError(.backend, "/v1/models answered HTTP \(status): \(HTTPLines.errorMessage(data))") }
        return list.compactMap { $0["id"] as? String }
    }
}
