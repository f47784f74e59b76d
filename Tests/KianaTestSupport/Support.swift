import Foundation
import KianaStore

/// The posix_spawn child (KianaStore), for the tests that start processes.
public typealias Spawned = KianaStore.Spawned

import Testing

/// Locates ../shared (DESIGN.md, vectors, data) beside the checkout, or `$KIANA_SHARED`.
/// Under CI (CI=true) a missing file is a failure, elsewhere the test is skipped.
public enum Shared {
    public static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    public static var root: URL {
        if let env = ProcessInfo.processInfo.environment["KIANA_SHARED"], !env.isEmpty { return URL(fileURLWithPath: env) }
        return packageRoot.deletingLastPathComponent().appendingPathComponent("shared")
    }

    public static var isCI: Bool { ProcessInfo.processInfo.environment["CI"] == "true" }

    public static func exists(_ relative: String) -> Bool {
        FileManager.default.fileExists(atPath: root.appendingPathComponent(relative).path)
    }

    /// JSON files below `relative`, sorted; empty when the folder is missing.
    public static func jsonFiles(_ relative: String) -> [String] {
        let dir = root.appendingPathComponent(relative)
        guard let e = FileManager.default.enumerator(atPath: dir.path) else { return [] }
        return e.compactMap { $0 as? String }.filter { $0.hasSuffix(".json") }.sorted().map { relative + "/" + $0 }
    }
}

/// Polls `condition` every `interval` until it holds, for at most `seconds`; the last look is
/// taken at the deadline, so a condition that comes true just then still counts.
public func eventually(
    _ seconds: Double = 15, every interval: Duration = .milliseconds(200), _ condition: () async throws -> Bool
) async rethrows -> Bool {
    let end = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while ContinuousClock.now < end {
        if try await condition() { return true }
        try? await Task.sleep(for: interval)
    }
    return try await condition()
}

/// Runs a process to completion, feeding `input` on stdin; returns (status, stdout, stderr).
@discardableResult
public func runProcess(_ executable: String, _ args: [String], input: Data? = nil, environment: [String: String]? = nil) throws -> (
    status: Int32, out: Data, err: Data
) {
    let p = try Spawned(executable, args, environment: environment)
    // Feed stdin and drain stderr on their own threads so a chatty child cannot block.
    let feeder = Thread {
        if let input { try? p.stdin.write(contentsOf: input) }
        try? p.stdin.close()
    }
    feeder.start()
    nonisolated(unsafe) var errData = Data()
    let done = NSCondition()
    nonisolated(unsafe) var errDone = false
    let errThread = Thread {
        errData = (try? p.stderr?.readToEnd()) ?? Data()
        done.lock()
        errDone = true
        done.signal()
        done.unlock()
    }
    errThread.start()
    let out = (try? p.stdout.readToEnd()) ?? Data()
    done.lock()
    while !errDone { done.wait() }
    done.unlock()
    return (p.waitUntilExit(), out, errData)
}

/// `runProcess` for async code: the blocking wait runs on its own thread, so a test waiting
/// for a child never holds one of the (two, on this machine) cooperative threads that other
/// tests' async work - NIO links, servers - needs to make progress.
@discardableResult
public func runProcess(_ executable: String, _ args: [String], input: Data? = nil, environment: [String: String]? = nil) async throws -> (
    status: Int32, out: Data, err: Data
) {
    try await offPool { Result { try runProcess(executable, args, input: input, environment: environment) } }.get()
}

/// Runs blocking work (a pipe read, a process wait) on its own thread and awaits its result,
/// keeping the cooperative thread pool free for the async code under test.
public func offPool<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { (c: CheckedContinuation<T, Never>) in
        Thread { c.resume(returning: body()) }.start()
    }
}

/// python3 from PATH.
public func python3() -> String {
    for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin").split(separator: ":") {
        let p = "\(dir)/python3"
        if FileManager.default.isExecutableFile(atPath: p) { return p }
    }
    return "/usr/bin/python3"
}

/// The `kiana` binary under test: `$KIANA_BIN`, else the debug build beside the package.
public func kianaBinary() -> String {
    if let b = ProcessInfo.processInfo.environment["KIANA_BIN"], !b.isEmpty { return b }
    return Shared.packageRoot.appendingPathComponent(".build/debug/kiana").path
}

/// A fresh temporary directory, removed by `cleanup`.
public struct TempDir: Sendable {
    public let url: URL
    public init(_ name: String = "kiana-test") throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("\(name)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }
    public var path: String { url.path }
    public func cleanup() { try? FileManager.default.removeItem(at: url) }
}

/// Runs `kiana` with arguments; returns status and output as text.
@discardableResult
public func kiana(_ args: [String], input: Data? = nil) throws -> (status: Int32, out: String, err: String) {
    let r = try runProcess(kianaBinary(), args, input: input)
    return (r.status, String(decoding: r.out, as: UTF8.self), String(decoding: r.err, as: UTF8.self))
}

/// `kiana` for async code (see the async `runProcess`); `environment` adds to the inherited one.
@discardableResult
public func kiana(_ args: [String], input: Data? = nil, environment: [String: String]? = nil) async throws -> (status: Int32, out: String, err: String) {
    let env = environment.map { ProcessInfo.processInfo.environment.merging($0) { $1 } }
    let r = try await runProcess(kianaBinary(), args, input: input, environment: env)
    return (r.status, String(decoding: r.out, as: UTF8.self), String(decoding: r.err, as: UTF8.self))
}

/// The device ID and identity key `kiana status` reports for a data directory (empty if absent).
public func nodeIdentity(_ dir: String) throws -> (device: String, key: String) {
    let out = try kiana(["status", "--data-dir", dir]).out
    func field(_ name: String) -> String {
        out.split(separator: "\n").first { $0.hasPrefix(name) }.map { String($0.dropFirst(name.count).trimmingCharacters(in: .whitespaces)) } ?? ""
    }
    return (field("Device ID:"), field("Identity:"))
}

/// A child process whose stdout lines arrive as they are written (stderr is merged into a log
/// kept for failure messages). Used for servers and interactive commands under test.
public final class ChildProcess: @unchecked Sendable {
    public let process: Spawned
    let lock = NSLock()
    var lines: [String] = []
    var finished = false
    var waiters: [(Int, CheckedContinuation<String?, Never>)] = []
    var consumed = 0

    public init(_ executable: String, _ args: [String], environment: [String: String]? = nil) throws {
        process = try Spawned(
            executable, args, environment: environment.map { ProcessInfo.processInfo.environment.merging($0) { $1 } },
            mergeStderr: true)
        let handle = process.stdout
        // The reader holds the object only while delivering, so a ChildProcess the test drops
        // (say, on a failed #require) is deinitialised and its child killed.
        let reader = Thread { [weak self] in
            var pending = Data()
            while true {
                let chunk = handle.availableData
                guard !chunk.isEmpty, let self else { break }
                pending += chunk
                while let nl = pending.firstIndex(of: 10) {
                    let line = String(decoding: pending[pending.startIndex..<nl], as: UTF8.self)
                    pending = Data(pending[(nl + 1)...])
                    self.deliver(line)
                }
            }
            if !pending.isEmpty { self?.deliver(String(decoding: pending, as: UTF8.self)) }
            self?.finish()
        }
        reader.start()
    }

    /// End of output: wakes every waiter with nil.
    func finish() {
        lock.lock()
        finished = true
        let ws = waiters
        waiters = []
        lock.unlock()
        for (_, w) in ws { w.resume(returning: nil) }
    }

    func deliver(_ line: String) {
        lock.lock()
        lines.append(line)
        var ready: [(CheckedContinuation<String?, Never>, String)] = []
        waiters.removeAll { (i, c) in
            if i < lines.count {
                ready.append((c, lines[i]))
                return true
            }
            return false
        }
        lock.unlock()
        for (c, l) in ready { c.resume(returning: l) }
    }

    /// The next line not yet returned, or nil at end of output or after `timeout` seconds.
    public func nextLine(timeout: Double = 30) async -> String? {
        let index: Int = {
            lock.lock()
            defer { lock.unlock() }
            consumed += 1
            return consumed - 1
        }()
        return await withTaskGroup(of: String?.self) { group in
            group.addTask {
                await withCheckedContinuation { c in
                    self.lock.lock()
                    if index < self.lines.count {
                        let l = self.lines[index]
                        self.lock.unlock()
                        c.resume(returning: l)
                        return
                    }
                    if self.finished {
                        self.lock.unlock()
                        c.resume(returning: nil)
                        return
                    }
                    self.waiters.append((index, c))
                    self.lock.unlock()
                }
            }
            group.addTask {
                try? await Task.sleep(for: .milliseconds(Int(timeout * 1000)))
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            if first == nil { self.release(index) }
            return first
        }
    }

    func release(_ index: Int) {
        lock.lock()
        var gone: [CheckedContinuation<String?, Never>] = []
        waiters.removeAll {
            if $0.0 == index {
                gone.append($0.1)
                return true
            }
            return false
        }
        if consumed == index + 1 { consumed = index }
        lock.unlock()
        for c in gone { c.resume(returning: nil) }
    }

    /// Reads lines until one contains `text`; returns it (nil on timeout or end).
    public func waitFor(_ text: String, timeout: Double = 30) async -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            guard let l = await nextLine(timeout: deadline.timeIntervalSinceNow) else { return nil }
            if l.contains(text) { return l }
        }
        return nil
    }

    /// Everything printed so far.
    public var output: String {
        lock.lock()
        defer { lock.unlock() }
        return lines.joined(separator: "\n")
    }

    public func write(_ text: String) {
        try? process.stdin.write(contentsOf: Data(text.utf8))
    }

    public func signal(_ sig: Int32) { process.signal(sig) }

    /// Waits for exit (SIGKILL after `timeout` seconds) and returns the status.
    @discardableResult
    public func wait(timeout: Double = 30) async -> Int32 {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning {
            if Date() > deadline { signal(SIGKILL) }
            try? await Task.sleep(for: .milliseconds(20))
        }
        // Its last lines may still be in the pipe: `output` read right after has them (up to 2 s).
        for _ in 0..<100 {
            if lock.withLock({ finished }) { break }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return process.exitStatus ?? -1
    }

    deinit { if process.isRunning { kill(process.pid, SIGKILL) } }
}

/// The embedded models fetched by scripts/models.sh: `$KIANA_MODEL_DIR`, else `~/.kiana/models`.
/// Under CI a missing model is a failure (setup must have fetched it), elsewhere a skip.
public enum Models {
    public static var directory: String {
        if let d = ProcessInfo.processInfo.environment["KIANA_MODEL_DIR"], !d.isEmpty { return d }
        let data =
            ProcessInfo.processInfo.environment["KIANA_DATA_DIR"].flatMap { $0.isEmpty ? nil : $0 }
            ?? (ProcessInfo.processInfo.environment["HOME"] ?? NSHomeDirectory()) + "/.kiana"
        return data + "/models"
    }

    public static var hasMiniLM: Bool {
        FileManager.default.fileExists(atPath: directory + "/all-minilm-l6-v2/model.safetensors")
    }

    /// The embedded language model (SmolLM2-135M-Instruct Q4_1) that setup fetches.
    public static var smolLM: String { directory + "/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf" }
    public static var hasSmolLM: Bool { FileManager.default.fileExists(atPath: smolLM) }

    /// llama.cpp's binaries built by scripts/llama-cpp.sh (for the OpenAI-backend tests), if built.
    public static var llamaServer: String? {
        let dir =
            ProcessInfo.processInfo.environment["KIANA_LLAMA_CPP_DIR"].flatMap { $0.isEmpty ? nil : $0 }
            ?? (ProcessInfo.processInfo.environment["HOME"] ?? NSHomeDirectory()) + "/.kiana/llama.cpp"
        let p = dir + "/build/bin/llama-server"
        return FileManager.default.isExecutableFile(atPath: p) ? p : nil
    }
}

/// A lock-protected value for results written from callbacks on other threads.
public final class Locked<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: T
    public init(_ v: T) { value = v }
    public func update(_ f: (inout T) -> Void) {
        lock.lock()
        f(&value)
        lock.unlock()
    }
    public var get: T {
        lock.lock()
        defer { lock.unlock() }
        return value
    }
}

extension Trait where Self == ConditionTrait {
    /// For tests that need the MiniLM embedder: without it they are skipped, visibly, outside
    /// CI; under CI=true they run, and their missing-model check fails them.
    public static var needsMiniLM: Self {
        .enabled(if: Models.hasMiniLM || Shared.isCI, "needs the MiniLM model: run `make setup`")
    }

    /// For tests that need both embedded models (MiniLM and SmolLM2); as `needsMiniLM`.
    public static var needsModels: Self {
        .enabled(if: (Models.hasMiniLM && Models.hasSmolLM) || Shared.isCI, "needs the embedded models: run `make setup`")
    }
}
