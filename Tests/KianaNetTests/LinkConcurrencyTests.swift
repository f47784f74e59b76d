import Foundation
import KianaCore
import KianaNet
import KianaTestSupport
import NIOCore
import NIOPosix
import Testing

/// Many tasks sending on one link at once, as a node does (heartbeats, pushed blocks, head
/// announcements, sync requests and the answers to the peer's requests all share the link).
/// Found by SyncDrillTests' flood drill: two members' link dropped now and then with "Noise
/// handshake failed: authentication failed", mid-link.
@Suite struct LinkConcurrencyTests {
    @Test("Concurrent requests on one link: every one is answered and the link stays up (frames leave in nonce order)")
    func concurrentSendsKeepNonceOrder() async throws {
        let failures = Locked<[String]>([])
        let answered = Locked(0)
        try await LinkTests.withServer(LinkTests.context()) { port, seen in
            let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port) {
                Link.wrap($0)
            }
            do {
                try await Link.run(channel, dial: LinkPreamble(mode: .member, network: LinkTests.network), context: LinkTests.context()) { link in
                    await withTaskGroup(of: Void.self) { group in
                        // 16 at once: below the 32 requests a link may have in flight, since an answer
                        // is counted until it is sent and the next request may already have arrived.
                        for t in 0..<16 {
                            group.addTask {
                                for i in 0..<80 {
                                    let body = CBOR.map(["t": .unsigned(UInt64(t)), "i": .unsigned(UInt64(i))])
                                    do {
                                        let r = try await link.request("echo", body)
                                        if r == body { answered.update { $0 += 1 } }
                                    } catch {
                                        failures.update { $0.append("task \(t) request \(i): \(error)") }
                                        return
                                    }
                                }
                            }
                        }
                    }
                    link.close()
                }
            } catch {
                failures.update { $0.append("link: \(error)") }
            }
            // What the server side saw (its link ends with the client's close, or earlier with the failure).
            try? await Task.sleep(for: .milliseconds(300))
            let serverErrors = seen.snapshot.errors.filter { !$0.contains("closed") }
            if !serverErrors.isEmpty { failures.update { $0.append(contentsOf: serverErrors.map { "server: " + $0 }) } }
        }
        let f = failures.get
        let n = answered.get
        #expect(n == 16 * 80, "\(n) of \(16 * 80) requests answered")
        #expect(f.isEmpty, "\(f.count) failures, first: \(f.prefix(3))")
    }
}
