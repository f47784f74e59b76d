import Foundation
import KianaTestSupport
import Testing

/// `kiana serve` as a real process: it answers on loopback and stops cleanly on SIGINT/SIGTERM.
@Suite struct ServeTests {
    final class Running: @unchecked Sendable {
        let process = Process()
        let lock = NSLock()
        var output = ""

        init(_ args: [String], environment: [String: String]? = nil) throws {
            process.executableURL = URL(fileURLWithPath: kianaBinary())
            process.arguments = args
            if let environment { process.environment = environment }
            let pipe = Pipe()
            process.standardOutput = pipe
            process.standardError = pipe
            pipe.fileHandleForReading.readabilityHandler = { [weak self] h in
                let d = h.availableData
                if d.isEmpty {
                    h.readabilityHandler = nil
                    return
                }  // EOF: stop polling
                guard let self else { return }
                self.lock.lock()
                self.output += String(decoding: d, as: UTF8.self)
                self.lock.unlock()
            }
            try process.run()
        }

        var text: String {
            lock.lock()
            defer { lock.unlock() }
            return output
        }

        /// `kiana serve` for `dataDir` on free loopback ports, without discovery.
        static func loopback(_ dataDir: String) throws -> Running {
            try Running(["serve", "--data-dir", dataDir, "--port", "0", "--p2p-port", "0", "--discovery", "off"])
        }

        /// Waits for the "serving http://host:port" line and returns the port.
        func waitForPort(timeout: TimeInterval = 60) async -> Int? {
            let end = Date().addingTimeInterval(timeout)
            while Date() < end {
                if let r = text.range(of: #"serving http://(\[[0-9a-fA-F:]+\]|[^:\s]+):(\d+)"#, options: .regularExpression) {
                    return Int(text[r].split(separator: ":").last!)
                }
                if !process.isRunning { return nil }
                try? await Task.sleep(for: .milliseconds(50))
            }
            return nil
        }

        func waitForExit(timeout: TimeInterval = 20) -> Bool {
            let end = Date().addingTimeInterval(timeout)
            while process.isRunning && Date() < end { usleep(50_000) }
            return !process.isRunning
        }
    }

    /// A new data directory (initialised, `teach` remembered) served by `kiana serve` on
    /// loopback; `close()` stops the node and removes the directory.
    struct Served: Sendable {
        let dir: TempDir
        let node: Running
        let port: Int
        var url: String { "http://127.0.0.1:\(port)" }

        static func start(teach: [String] = []) async throws -> Served {
            let dir = try TempDir()
            do {
                #expect(try await kiana(["init", "--data-dir", dir.path]).status == 0)
                for fact in teach { #expect(try await kiana(["remember", fact, "--data-dir", dir.path]).status == 0) }
                let node = try Running.loopback(dir.path)
                guard let port = await node.waitForPort() else {
                    node.process.terminate()
                    throw NotStarted(output: node.text)
                }
                return Served(dir: dir, node: node, port: port)
            } catch {
                dir.cleanup()
                throw error
            }
        }

        struct NotStarted: Error, CustomStringConvertible {
            var output: String
            var description: String { "kiana serve did not start: \(output)" }
        }

        func close() {
            if node.process.isRunning { node.process.interrupt() }
            _ = node.waitForExit()
            dir.cleanup()
        }
    }

    func curl(_ args: [String]) async throws -> (code: String, body: String) {
        let r = try await runProcess("/usr/bin/curl", ["-s", "-m", "10", "-w", "\n%{http_code}"] + args)
        let text = String(decoding: r.out, as: UTF8.self)
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        return (String(lines.last ?? ""), lines.dropLast().joined(separator: "\n"))
    }

    @Test(arguments: [SIGINT, SIGTERM])
    func servesHealthAndStopsGracefully(_ signal: Int32) async throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let node = try Running(["serve", "--p2p-port", "0", "--p2p-host", "127.0.0.1", "--discovery", "off", "--data-dir", dir.path, "--port", "0"])
        defer { if node.process.isRunning { node.process.terminate() } }
        let port = try #require(await node.waitForPort(), "no serving line: \(node.text)")
        let health = try await curl(["http://127.0.0.1:\(port)/health"])
        #expect(health.code == "200")
        #expect(health.body.contains("\"status\":\"ok\"") && health.body.contains("\"height\":0"))
        let page = try await curl(["http://127.0.0.1:\(port)/"])
        #expect(page.code == "200" && page.body.contains("KI_ana"))
        // A write made by the CLI while the node runs is visible to it.
        #expect(try await kiana(["remember", "while serving", "--data-dir", dir.path]).status == 0)
        #expect(try await curl(["http://127.0.0.1:\(port)/health"]).body.contains("\"height\":1"))
        kill(node.process.processIdentifier, signal)
        #expect(node.waitForExit(), "node did not stop: \(node.text)")
        #expect(node.process.terminationReason == .exit)
        #expect(node.process.terminationStatus == 0, "\(node.text)")
        #expect(try await kiana(["ledger", "verify", "--data-dir", dir.path]).status == 0)
    }

    @Test func tokenIsEnforcedAndRequiredOffLoopback() async throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        var env = ProcessInfo.processInfo.environment
        env["KIANA_TOKEN"] = nil
        #expect(try await kiana(["init", "--data-dir", dir.path]).status == 0)
        let token = try await kiana(["token", "--data-dir", dir.path]).out.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(token.count == 64 && token.allSatisfy(\.isHexDigit))
        #expect(try await kiana(["token", "--data-dir", dir.path]).out.trimmingCharacters(in: .whitespacesAndNewlines) == token)
        let mode = (try FileManager.default.attributesOfItem(atPath: dir.path + "/api.token")[.posixPermissions] as? NSNumber)?.intValue
        #expect(mode == 0o600)
        // Off loopback with no --token: the node's own API token is required (requests go to loopback only).
        let open = try Running(
            ["serve", "--p2p-port", "0", "--p2p-host", "127.0.0.1", "--discovery", "off", "--data-dir", dir.path, "--host", "0.0.0.0", "--port", "0"],
            environment: env)
        let openPort = try #require(await open.waitForPort(), "\(open.text)")
        #expect(try await curl(["http://127.0.0.1:\(openPort)/health"]).code == "401")
        #expect(try await curl(["-H", "Authorization: Bearer \(token)", "http://127.0.0.1:\(openPort)/health"]).code == "200")
        #expect(!open.text.contains(token), "token leaked into the log")
        #expect(open.text.contains("kiana token"))
        open.process.interrupt()
        #expect(open.waitForExit())
        // With a token, requests without it are rejected.
        let node = try Running(
            ["serve", "--p2p-port", "0", "--p2p-host", "127.0.0.1", "--discovery", "off", "--data-dir", dir.path, "--port", "0", "--token", "s3cret"],
            environment: env)
        defer { if node.process.isRunning { node.process.terminate() } }
        let port = try #require(await node.waitForPort(), "\(node.text)")
        #expect(try await curl(["http://127.0.0.1:\(port)/health"]).code == "401")
        #expect(try await curl(["-H", "Authorization: Bearer wrong", "http://127.0.0.1:\(port)/health"]).code == "401")
        #expect(try await curl(["-H", "Authorization: Bearer s3cret", "http://127.0.0.1:\(port)/health"]).code == "200")
        // The UI's static files open without it (a browser cannot attach a header to a page
        // load; the page then asks for the token); the API behind them does not.
        #expect(try await curl(["http://127.0.0.1:\(port)/"]).code == "200")
        #expect(try await curl(["http://127.0.0.1:\(port)/ui/app.js"]).code == "200")
        #expect(try await curl(["http://127.0.0.1:\(port)/api/v1/knowledge"]).code == "401")
        #expect(try await curl(["-X", "POST", "http://127.0.0.1:\(port)/"]).code == "401")
        #expect(!node.text.contains("s3cret"), "token leaked into logs")
        node.process.interrupt()
        #expect(node.waitForExit())
    }

    /// `kiana ready` finds a running node through node.json, whatever port and token it was
    /// started with, and says what it waits for; a not-ready answer is no warning in the log.
    @Test(.needsModels) func readyFindsTheRunningNodeWhateverItsFlags() async throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        var env = ProcessInfo.processInfo.environment
        env["KIANA_TOKEN"] = nil
        #expect(try await kiana(["init", "--data-dir", dir.path]).status == 0)
        let flags = ["serve", "--p2p-port", "0", "--discovery", "off", "--data-dir", dir.path, "--port", "0", "--token", "s3cret"]
        // Models load on first use by default: up, but not ready.
        let lazy = try Running(flags, environment: env)
        let port = try #require(await lazy.waitForPort(), "\(lazy.text)")
        let waiting = try await kiana(["ready", "--data-dir", dir.path])
        #expect(waiting.status == 1 && waiting.err.contains("127.0.0.1:\(port)") && waiting.err.contains("models not loaded"), "\(waiting.err)")
        #expect(try await curl(["-H", "Authorization: Bearer s3cret", "http://127.0.0.1:\(port)/ready"]).code == "503")
        #expect(!lazy.text.contains("level=warning"), "\(lazy.text)")
        lazy.process.interrupt()
        #expect(lazy.waitForExit())
        // Preloaded: ready once both models are in memory.
        let eager = try Running(flags + ["--preload-models", "on"], environment: env)
        defer { if eager.process.isRunning { eager.process.terminate() } }
        _ = try #require(await eager.waitForPort(), "\(eager.text)")
        var last = ""
        #expect(
            try await eventually(120, every: .milliseconds(500)) {
                let r = try await kiana(["ready", "--data-dir", dir.path])
                last = r.out + r.err
                return r.status == 0 && r.out == "ready\n"
            }, "\(last)")
        eager.process.interrupt()
        #expect(eager.waitForExit())
        // Nothing running: the settings' address (a port nothing listens on), which answers nothing.
        var quiet = env
        quiet["KIANA_PORT"] = String(LLMCLITests.freePort())
        let gone = try await kiana(["ready", "--data-dir", dir.path, "--timeout", "2"], environment: quiet)
        #expect(gone.status == 1, "\(gone.out)")
        // Killed, it leaves node.json behind: said as such, not probed for at the settings' address.
        let killed = try Running(flags, environment: env)
        _ = try #require(await killed.waitForPort(), "\(killed.text)")
        kill(killed.process.processIdentifier, SIGKILL)
        _ = killed.waitForExit()
        let stale = try await kiana(["ready", "--data-dir", dir.path, "--timeout", "2"], environment: quiet)
        #expect(stale.status == 1 && stale.err.contains("stale node.json"), "\(stale.err)")
    }

    /// A node that is running but does not answer (stopped with SIGSTOP, or stuck): commands
    /// that ask it give up after their timeout and say so, without spinning a core meanwhile, and
    /// a write from the command line lands and is still told about it.
    @Test func aStoppedNodeIsSaidAsSuchWithinTheTimeout() async throws {
        let served = try await Served.start()
        defer {
            kill(served.node.process.processIdentifier, SIGCONT)
            served.close()
        }
        let d = ["--data-dir", served.dir.path]
        kill(served.node.process.processIdentifier, SIGSTOP)
        var t = Date()
        let ready = try await kiana(["ready", "--timeout", "2"] + d)
        let readySeconds = Date().timeIntervalSince(t)
        #expect(ready.status == 1 && ready.err.contains("is running but did not answer within 2 s"), "\(ready.err)")
        // The command's own start counts too (a debug binary under a parallel test run): the
        // bound is far from the 60 s it took before, not close to the 2 s asked for.
        #expect(readySeconds < 15, "ready --timeout 2 took \(readySeconds) s")
        var usage = rusage()
        getrusage(RUSAGE_CHILDREN.rawValue, &usage)
        let cpuBefore = Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
        t = Date()
        let wrote = try await kiana(["remember", "written while the node was stopped"] + d)
        let writeSeconds = Date().timeIntervalSince(t)
        getrusage(RUSAGE_CHILDREN.rawValue, &usage)
        let cpu = Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6 - cpuBefore
        #expect(wrote.status == 0 && writeSeconds < 8, "remember: \(wrote.status) in \(writeSeconds) s: \(wrote.err)")
        // Children of parallel tests that ended meanwhile count here too, so it is printed, not
        // bounded (the spin was 40-80 % of a core for 60 s; the wall time above bounds it).
        print("serve: remember beside a stopped node took \(String(format: "%.1f", writeSeconds)) s, children's CPU meanwhile \(String(format: "%.1f", cpu)) s")
        kill(served.node.process.processIdentifier, SIGCONT)
        let status = try await kiana(["status"] + d)
        #expect(status.status == 0)
        let listed = try await kiana(["list"] + d)
        #expect(listed.out.contains("written while the node was stopped"), "\(listed.out)")
    }

    /// A node on IPv6 loopback is reached by the CLI's control calls (its address is bracketed
    /// in node.json). Skipped, visibly, where the machine has no IPv6 loopback.
    @Test func theCLIReachesANodeOnIPv6Loopback() async throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        #expect(try await kiana(["init", "--data-dir", dir.path]).status == 0)
        let node = try Running(["serve", "--data-dir", dir.path, "--host", "::1", "--port", "0", "--p2p-port", "0", "--discovery", "off"])
        defer {
            node.process.interrupt()
            _ = node.waitForExit()
        }
        guard await node.waitForPort() != nil else {
            print("skipped: no IPv6 loopback here: \(node.text.suffix(300))")
            return
        }
        let peers = try await kiana(["peers", "--data-dir", dir.path])
        #expect(peers.status == 0, "\(peers.err)")
        let ready = try await kiana(["ready", "--data-dir", dir.path, "--timeout", "5"])
        #expect(ready.err.contains("http://[::1]:") && !ready.err.contains("not running"), "\(ready.out) \(ready.err)")
    }

    @Test func busyPortIsAClearError() async throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let first = try Running(["serve", "--p2p-port", "0", "--p2p-host", "127.0.0.1", "--discovery", "off", "--data-dir", dir.path + "/a", "--port", "0"])
        defer { if first.process.isRunning { first.process.terminate() } }
        let port = try #require(await first.waitForPort())
        let second = try await kiana([
            "serve", "--p2p-port", "0", "--p2p-host", "127.0.0.1", "--discovery", "off", "--data-dir", dir.path + "/b", "--port", String(port),
        ])
        #expect(second.status == 1)
        #expect(second.err.contains("kiana: cannot listen on 127.0.0.1:\(port): the port is already in use"), "\(second.err)")
        first.process.interrupt()
        #expect(first.waitForExit())
    }

    @Test func busyPeerPortIsAClearError() async throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let first = try Running(["serve", "--p2p-port", "0", "--p2p-host", "127.0.0.1", "--discovery", "off", "--data-dir", dir.path + "/a", "--port", "0"])
        defer { if first.process.isRunning { first.process.terminate() } }
        _ = try #require(await first.waitForPort())
        let r = try #require(first.text.range(of: #"device links on port (\d+)"#, options: .regularExpression))
        let p2p = String(first.text[r].split(separator: " ").last!)
        let second = try await kiana([
            "serve", "--p2p-port", p2p, "--p2p-host", "127.0.0.1", "--discovery", "off", "--data-dir", dir.path + "/b", "--port", "0",
        ])
        #expect(second.status == 1)
        #expect(second.err.contains("cannot listen for peers on 127.0.0.1:\(p2p): the port is already in use"), "\(second.err)")
        first.process.interrupt()
        #expect(first.waitForExit())
    }
}
