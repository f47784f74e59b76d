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
        let r = try await runProcess(python3(), [script, "http://127.0.0.1:\(port)", shots])
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
        let health = try await runProcess("/usr/bin/curl", ["-s", "http://127.0.0.1:\(port)/health"])
        let deviceID = (try? JSONSerialization.jsonObject(with: health.out) as? [String: Any])?["deviceId"] as? String ?? "?"
        #expect((seen["device"] as? String ?? "").contains(deviceID), "\(seen)")
        #expect((seen["peers"] as? String ?? "").contains("No other devices"), "\(seen)")
        #expect((seen["console_errors"] as? [Any])?.isEmpty == true, "\(seen)")
        for name in ["webui-chat.png", "webui-item.png", "webui-proof.png", "webui-ingest.png", "webui-device.png"] {
            let png = try #require(FileManager.default.contents(atPath: shots + "/" + name), "no screenshot \(name)")
            #expect(png.count > 5_000 && png.prefix(8) == Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]), "\(name) is not a PNG")
        }
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
