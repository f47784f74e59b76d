import Foundation
import KianaTestSupport
import Testing

/// deploy/Dockerfile and deploy/compose.yaml: no Docker engine runs here, so the files are
/// checked for what the deployment relies on, and the image's runtime tree (the same script the
/// Dockerfile runs) is started for real in a chroot with its own /proc, as the image would run.
@Suite struct RuntimeImageTests {
    static func deploy(_ name: String) throws -> String {
        try String(contentsOf: Shared.packageRoot.appendingPathComponent("deploy/" + name), encoding: .utf8)
    }

    /// The Dockerfile's final-stage `ENV` assignments.
    static func environment(_ dockerfile: String) -> [String: String] {
        let final = dockerfile.components(separatedBy: "\nFROM ").last ?? ""
        let joined = final.replacingOccurrences(of: "\\\n", with: " ")
        var env: [String: String] = [:]
        for line in joined.split(separator: "\n") where line.hasPrefix("ENV ") {
            for pair in line.dropFirst(4).split(separator: " ") where pair.contains("=") {
                let kv = pair.split(separator: "=", maxSplits: 1)
                env[String(kv[0])] = String(kv[1])
            }
        }
        return env
    }

    @Test func theDockerfileAndComposeFileHoldWhatTheDeploymentReliesOn() throws {
        let d = try Self.deploy("Dockerfile")
        let froms = d.split(separator: "\n").filter { $0.hasPrefix("FROM ") }
        #expect(froms.count == 2, "multi-stage: a build stage and a runtime stage")
        #expect(froms.last == "FROM scratch", "the runtime stage holds only what the runtime tree holds")
        #expect(d.contains("RUN swift build -c release --product kiana"))
        #expect(d.contains("bash scripts/models.sh"), "models fetched by the script make setup uses")
        #expect(d.contains("bash scripts/runtime-rootfs.sh .build/release/kiana /rootfs /models"))
        #expect(d.contains("USER 10001:10001"))
        #expect(d.contains(#"HEALTHCHECK"#) && d.contains(#"CMD ["/usr/local/bin/kiana", "ready"]"#))
        let env = Self.environment(d)
        #expect(env["KIANA_DATA_DIR"] == "/data" && env["KIANA_MODEL_DIR"] == "/usr/local/share/kiana/models")
        #expect(env["KIANA_HOST"] == nil, "the image must not open the API beyond loopback by default")

        // The build stage copies every directory the manifest's targets live in (SwiftPM checks
        // all target paths, test targets' too, when it loads the package).
        let manifest = try String(contentsOfFile: Shared.packageRoot.path + "/Package.swift", encoding: .utf8)
        var roots: Set<String> = ["Sources"]
        if manifest.contains(".testTarget(") { roots.insert("Tests") }
        for m in manifest.matches(of: /path: "([^"\/]+)\//) { roots.insert(String(m.1)) }
        for root in roots { #expect(d.contains("COPY \(root) \(root)"), "the build stage does not copy \(root)/") }

        // compose.yaml read by PyYAML.
        let script = """
            import json, sys, yaml
            print(json.dumps(yaml.safe_load(open(sys.argv[1]))))
            """
        let r = try runProcess(python3(), ["-c", script, Shared.packageRoot.path + "/deploy/compose.yaml"])
        #expect(r.status == 0, "\(String(decoding: r.err, as: UTF8.self))")
        let compose = try #require(try JSONSerialization.jsonObject(with: r.out) as? [String: Any])
        let services = try #require(compose["services"] as? [String: [String: Any]])
        #expect(Set(services.keys) == ["kiana", "nginx", "ollama", "chroma"])
        let kiana = try #require(services["kiana"])
        #expect((kiana["build"] as? [String: Any])?["dockerfile"] as? String == "deploy/Dockerfile")
        #expect(kiana["network_mode"] as? String == "host", "mDNS and the loopback upstream of nginx.conf need host networking")
        #expect((kiana["volumes"] as? [String])?.contains("kiana-data:/data") == true)
        #expect(((kiana["environment"] as? [String: Any])?["KIANA_TOKEN"] as? String)?.hasPrefix("${KIANA_TOKEN:?") == true, "the token is required")
        let nginx = try #require(services["nginx"])
        #expect((nginx["volumes"] as? [String])?.contains("./nginx.conf:/etc/nginx/conf.d/kiana.conf:ro") == true)
        #expect(FileManager.default.fileExists(atPath: Shared.packageRoot.path + "/deploy/nginx.conf"))
        #expect((services["ollama"]?["profiles"] as? [String]) == ["ollama"], "Ollama only when asked for")
        #expect((compose["volumes"] as? [String: Any]).map { Set($0.keys) } == ["kiana-data", "ollama", "chroma"])
        #expect((services["chroma"]?["profiles"] as? [String]) == ["chroma"], "Chroma only when asked for")
        // The port the node's default vector.url names.
        #expect((services["chroma"]?["command"] as? [String])?.contains("8200") == true)
    }

    @Test(.enabled(if: getuid() == 0 || Shared.isCI, "needs root (chroot, mount namespaces)"), .needsMiniLM)
    func theRuntimeTreeServesOnItsOwn() async throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let root = dir.path + "/rootfs"
        // With the models, as the Dockerfile builds it (the node is ready only once they load).
        let made = try await runProcess("/bin/bash", [Shared.packageRoot.path + "/scripts/runtime-rootfs.sh", kianaBinary(), root, Models.directory])
        #expect(made.status == 0, "\(String(decoding: made.err, as: UTF8.self))")
        // Nothing but the tree: the binary finds every library inside it.
        #expect(FileManager.default.fileExists(atPath: root + "/lib64/ld-linux-x86-64.so.2"))
        let port = LLMCLITests.freePort()
        var env = Self.environment(try Self.deploy("Dockerfile"))
        env["KIANA_PORT"] = String(port)
        env["KIANA_P2P_PORT"] = "0"
        let assignments = env.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        // A container's view: its own mount and PID namespaces, /proc, a read-only /sys, a
        // minimal /dev, then the tree as / for user 10001.
        func inImage(_ args: String) -> [String] {
            [
                "--mount", "--pid", "--fork", "--kill-child=SIGTERM", "--mount-proc=\(root)/proc", "/bin/sh", "-c",
                "mount -t sysfs -o ro sysfs \(root)/sys && mount -t tmpfs -o size=1m tmpfs \(root)/dev && "
                    + "for d in null zero urandom random; do touch \(root)/dev/$d && mount --bind /dev/$d \(root)/dev/$d; done && "
                    + "exec /usr/bin/env -i \(assignments) /usr/sbin/chroot --userspec=10001:10001 \(root) /usr/local/bin/kiana \(args)",
            ]
        }
        for d in ["proc", "sys", "dev"] { try FileManager.default.createDirectory(atPath: root + "/" + d, withIntermediateDirectories: true) }
        // Not ready before it runs.
        let early = try await runProcess("/usr/bin/unshare", inImage("ready --timeout 2"))
        #expect(early.status != 0)
        let node = try ChildProcess("/usr/bin/unshare", inImage("serve"))
        // The node is unshare's child (PID 1 of the new namespace). unshare's --kill-child does
        // not reach it: `chroot --userspec` changes its user, which clears the parent-death
        // signal, so the node outlived the test. It is stopped directly, as a container's init.
        func stop() {
            guard node.process.isRunning else { return }  // its PID may be another process's now
            let children = (try? String(contentsOfFile: "/proc/\(node.process.pid)/task/\(node.process.pid)/children", encoding: .utf8)) ?? ""
            for child in children.split(separator: " ").compactMap({ pid_t($0) }) { kill(child, SIGTERM) }
        }
        // Processes whose root is the tree (a namespace's init ignores SIGTERM until it has a
        // handler, so one that never got that far is killed outright at the end).
        func rooted() -> [pid_t] {
            ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { pid_t($0) }.filter {
                (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\($0)/root"))?.hasPrefix(root) == true
            }
        }
        defer {
            stop()
            for p in rooted() { kill(p, SIGKILL) }
        }
        let line = await node.waitFor("serving http://127.0.0.1:\(port)", timeout: 60)
        #expect(line != nil, "the node in the runtime tree did not start")
        let health = try await runProcess("/usr/bin/curl", ["-s", "-m", "10", "http://127.0.0.1:\(port)/health"])
        #expect(String(decoding: health.out, as: UTF8.self).contains("\"status\":\"ok\""))
        // The image's HEALTHCHECK command, run inside the tree.
        var ready = try await runProcess("/usr/bin/unshare", inImage("ready"))
        for _ in 0..<20 where ready.status != 0 {
            try await Task.sleep(for: .milliseconds(500))
            ready = try await runProcess("/usr/bin/unshare", inImage("ready"))
        }
        #expect(ready.status == 0, "\(String(decoding: ready.err, as: UTF8.self))")
        #expect(FileManager.default.fileExists(atPath: root + "/usr/local/share/kiana/models/all-minilm-l6-v2/model.safetensors"))
        // The data directory belongs to the node's user, keys private.
        var st = stat()
        #expect(stat(root + "/data/identity.key", &st) == 0 && st.st_uid == 10001 && st.st_mode & 0o077 == 0)
        stop()
        _ = await node.wait(timeout: 30)
        // Nothing of the tree runs on (a process whose root is the tree would outlive it).
        let left = rooted()
        #expect(left.isEmpty, "processes still running in the runtime tree: \(left)")
    }
    /// The Swift runtime reads a process's arguments from /proc/self/cmdline, so a tree run
    /// without /proc (a bare chroot) gets none; kiana must say so, not trap or act on no arguments.
    @Test(.enabled(if: getuid() == 0 || Shared.isCI, "needs root (mount namespaces)"))
    func withoutProcTheCommandLineIsRefusedWithTheReason() async throws {
        for args in ["--help", "serve --port 0", "status"] {
            let r = try await runProcess(
                "/usr/bin/unshare",
                ["--mount", "--propagation", "private", "/bin/sh", "-c", "mount -t tmpfs -o size=1k none /proc && exec \(kianaBinary()) \(args)"])
            let err = String(decoding: r.err, as: UTF8.self)
            #expect(r.status == 1, "\(args): \(r.status) \(err)")
            #expect(err.contains("/proc is not mounted") && !err.contains("Fatal error"), "\(args): \(err)")
            #expect(r.out.isEmpty, "\(args): \(String(decoding: r.out, as: UTF8.self))")
        }
    }
}
