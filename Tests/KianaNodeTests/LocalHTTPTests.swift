import Foundation
@testable import KianaNode
import Testing
#if canImport(Glibc)
    import Glibc
#endif

/// The CLI's loopback HTTP client against a server that answers exactly the bytes given (or
/// nothing): framing, interim answers, hostile chunk sizes and deadlines.
@Suite struct LocalHTTPTests {
    /// Listens on a free loopback port; each connection reads the request head and gets `answer`
    /// (nil: the connection is held open, silent, until the test ends).
    final class OneShotServer: @unchecked Sendable {
        let fd: Int32
        let port: Int
        init(answer: [UInt8]?) throws {
            let sock = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            addr.sin_port = 0
            var len = socklen_t(MemoryLayout<sockaddr_in>.size)
            _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(sock, $0, len) } }
            listen(sock, 4)
            _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(sock, $0, &len) } }
            fd = sock
            port = Int(UInt16(bigEndian: addr.sin_port))
            let listener = sock
            Thread.detachNewThread {
                let c = accept(listener, nil, nil)
                guard c >= 0 else { return }
                var buf = [UInt8](repeating: 0, count: 4096)
                _ = recv(c, &buf, buf.count, 0)
                if let answer {
                    var sent = 0
                    while sent < answer.count {
                        let n = answer.withUnsafeBytes { send(c, $0.baseAddress! + sent, answer.count - sent, Int32(MSG_NOSIGNAL)) }
                        if n <= 0 { break }
                        sent += n
                    }
                    close(c)
                } else {
                    sleep(10)
                    close(c)
                }
            }
        }
        deinit { close(fd) }
    }

    func get(_ server: OneShotServer, timeout: Double = 5) throws(LocalHTTP.Failure) -> LocalHTTP.Reply {
        try LocalHTTP.exchange(host: "127.0.0.1", port: server.port, method: "GET", path: "/x", headers: [], body: nil, timeout: timeout)
    }

    @Test func lengthChunkedAndInterimAnswersAreRead() throws {
        var r = try get(OneShotServer(answer: Array("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello".utf8)))
        #expect(r.status == 200 && r.body == Data("hello".utf8))
        // 20,000 one-byte chunks: read whole, in about one pass.
        var chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        for _ in 0..<20_000 { chunked += "1\r\na\r\n" }
        chunked += "0\r\n\r\n"
        let t = Date()
        r = try get(OneShotServer(answer: Array(chunked.utf8)))
        #expect(r.status == 200 && r.body.count == 20_000 && Date().timeIntervalSince(t) < 2)
        r = try get(OneShotServer(answer: Array("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok".utf8)))
        #expect(r.status == 201 && r.body == Data("ok".utf8))
    }

    @Test func hostileAnswersAreRefusedNotCrashedOn() {
        for answer in [
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7fffffffffffffff\r\nx\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "SSH-2.0-OpenSSH\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        ] {
            #expect(throws: LocalHTTP.Failure.self, "\(answer.prefix(40))") { _ = try get(OneShotServer(answer: Array(answer.utf8))) }
        }
    }

    @Test func aSilentServerCostsTheDeadline() throws {
        let server = try OneShotServer(answer: nil)
        let t = Date()
        #expect {
            _ = try get(server, timeout: 1)
        } throws: { if case .timedOut = $0 as? LocalHTTP.Failure { true } else { false } }
        let took = Date().timeIntervalSince(t)
        #expect(took >= 0.9 && took < 3, "\(took)")
    }
}
