import Foundation
import KianaAI
import KianaStore
#if canImport(Glibc)
    import Glibc
#endif

/// A slow-loris flood for `kiana bench http --slowloris`: keeps up to `connections` sockets
/// open to a loopback HTTP server, each having sent a request line and half a header and
/// nothing more, reopening each one the server closes or resets, at most `rate` new
/// connections a second, from the loopback `sources` (Linux routes all of 127/8 to lo), for
/// `seconds`. Loopback only: the target host must be a 127/8 address.
public struct SlowLoris: Sendable {
    public var host: String
    public var port: Int
    public var sources: [String]
    public var connections: Int
    public var rate: Double
    public var seconds: Double

    public init(host: String = "127.0.0.1", port: Int, sources: [String] = ["127.0.0.2"], connections: Int, rate: Double, seconds: Double) {
        self.host = host
        self.port = port
        self.sources = sources
        self.connections = connections
        self.rate = rate
        self.seconds = seconds
    }

    public struct Report: Sendable {
        /// Connections opened, closed or reset by the server, and the most open at once.
        public var attempts = 0
        public var endedByServer = 0
        public var connectFailed = 0
        public var maxOpen = 0
    }

    /// Runs the flood on a thread of its own for `seconds`.
    public func run() async throws -> Report {
        let flood = self
        return try await blocking { try flood.runBlocking() }
    }

    /// Runs the flood on the calling thread (it blocks for `seconds`).
    public func runBlocking() throws -> Report {
        guard host.hasPrefix("127."), sources.allSatisfy({ $0.hasPrefix("127.") }) else {
            throw KianaAIError(.invalidInput, "the slow-loris flood goes to loopback only")
        }
        var report = Report()
        var fds: [pollfd] = []
        var connected: [Bool] = []
        let half = Array("GET /health HTTP/1.1\r\nHost:".utf8)
        let start = DispatchTime.now().uptimeNanoseconds
        let end = start + UInt64(seconds * 1e9)
        var made = 0
        defer { for p in fds { close(p.fd) } }
        while DispatchTime.now().uptimeNanoseconds < end {
            let now = DispatchTime.now().uptimeNanoseconds
            let allowed = Int(Double(now - start) / 1e9 * rate) + 1
            while fds.count < connections, made < allowed {
                made += 1
                report.attempts += 1
                guard let fd = open(source: sources[made % sources.count]) else {
                    report.connectFailed += 1
                    continue
                }
                fds.append(pollfd(fd: fd, events: Int16(POLLOUT), revents: 0))
                connected.append(false)
            }
            report.maxOpen = max(report.maxOpen, fds.count)
            let n = poll(&fds, nfds_t(fds.count), 5)
            guard n > 0 else { continue }
            var i = 0
            while i < fds.count {
                let ev = Int32(fds[i].revents)
                var drop = false
                if ev & Int32(POLLERR | POLLHUP) != 0 {
                    drop = true
                } else if !connected[i], ev & Int32(POLLOUT) != 0 {
                    var err: Int32 = 0
                    var len = socklen_t(MemoryLayout<Int32>.size)
                    getsockopt(fds[i].fd, SOL_SOCKET, SO_ERROR, &err, &len)
                    if err != 0 || send(fds[i].fd, half, half.count, Int32(MSG_NOSIGNAL)) < 0 {
                        drop = true
                    } else {
                        connected[i] = true
                        fds[i].events = Int16(POLLIN)
                    }
                } else if connected[i], ev & Int32(POLLIN) != 0 {
                    var buf = [UInt8](repeating: 0, count: 512)
                    let r = recv(fds[i].fd, &buf, buf.count, 0)
                    if r <= 0 { drop = true }
                }
                if drop {
                    report.endedByServer += 1
                    close(fds[i].fd)
                    fds.swapAt(i, fds.count - 1)
                    connected.swapAt(i, connected.count - 1)
                    fds.removeLast()
                    connected.removeLast()
                } else {
                    fds[i].revents = 0
                    i += 1
                }
            }
        }
        return report
    }

    /// A non-blocking socket from `source`, connecting to the target.
    private func open(source: String) -> Int32? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { return nil }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_IP), 24 /* IP_BIND_ADDRESS_NO_PORT */, &one, socklen_t(MemoryLayout<Int32>.size))
        var local = sockaddr_in()
        local.sin_family = sa_family_t(AF_INET)
        inet_pton(AF_INET, source, &local.sin_addr)
        var remote = sockaddr_in()
        remote.sin_family = sa_family_t(AF_INET)
        remote.sin_port = in_port_t(UInt16(port).bigEndian)
        inet_pton(AF_INET, host, &remote.sin_addr)
        let ok = withUnsafePointer(to: &local) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        let rc = withUnsafePointer(to: &remote) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard ok, rc == 0 || errno == EINPROGRESS else {
            close(fd)
            return nil
        }
        return fd
    }
}
