import Foundation
#if canImport(Glibc)
    import Glibc
#endif

/// A blocking HTTP/1.1 exchange with the node on this machine (the CLI's control calls): one
/// connection per call and one deadline over connecting, sending and the whole answer, waiting
/// in `poll(2)`. (URLSession on Linux kept a stopped node's caller for 60 s whatever the
/// request's timeout, spinning a core meanwhile.)
enum LocalHTTP {
    struct Reply {
        var status: Int
        var body: Data
    }

    enum Failure: Error {
        /// Nothing listens there (or the address does not resolve): the node is not running.
        case unreachable(String)
        /// Connected, but the whole answer did not come in time: the node is stopped or stuck.
        case timedOut
        /// The answer is not HTTP/1.1 as this client reads it, or larger than the limit.
        case malformed(String)
    }

    static let maxAnswer = 64 << 20

    static func exchange(
        host: String, port: Int, method: String, path: String, headers: [(String, String)], body: Data?, timeout: Double
    ) throws(Failure) -> Reply {
        let deadline = Date().addingTimeInterval(timeout)
        let fd = try connect(host: host, port: port, deadline: deadline)
        defer { close(fd) }
        var head = "\(method) \(path) HTTP/1.1\r\nHost: \(host.contains(":") ? "[\(host)]" : host):\(port)\r\nConnection: close\r\n"
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        head += "Content-Length: \(body?.count ?? 0)\r\n\r\n"
        try send(fd, Array(head.utf8) + [UInt8](body ?? Data()), deadline: deadline)
        return try receive(fd, deadline: deadline)
    }

    /// Milliseconds left before `deadline` (0 when passed).
    static func remaining(_ deadline: Date) -> Int32 {
        Int32(clamping: max(0, Int(deadline.timeIntervalSinceNow * 1000)))
    }

    /// Waits until `fd` is ready for `events`; false when the deadline passed first.
    static func wait(_ fd: Int32, _ events: Int16, deadline: Date) -> Bool {
        while true {
            let left = remaining(deadline)
            guard left > 0 else { return false }
            var p = pollfd(fd: fd, events: events, revents: 0)
            let n = poll(&p, 1, left)
            if n > 0 { return true }
            if n < 0 && errno == EINTR { continue }
            if n == 0 { return false }
            return true  // an error on the descriptor: the next call says which
        }
    }

    static func connect(host: String, port: Int, deadline: Date) throws(Failure) -> Int32 {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &list) == 0, let first = list else { throw .unreachable("\(host) does not resolve") }
        defer { freeaddrinfo(list) }
        var reason = "no address"
        var next: UnsafeMutablePointer<addrinfo>? = first
        while let a = next {
            next = a.pointee.ai_next
            let fd = socket(a.pointee.ai_family, a.pointee.ai_socktype, a.pointee.ai_protocol)
            guard fd >= 0 else { continue }
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            if Glibc.connect(fd, a.pointee.ai_addr, a.pointee.ai_addrlen) == 0 { return fd }
            if errno == EINPROGRESS {
                guard wait(fd, Int16(POLLOUT), deadline: deadline) else {
                    close(fd)
                    throw .timedOut
                }
                var err: Int32 = 0
                var len = socklen_t(MemoryLayout<Int32>.size)
                if getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0 { return fd }
                reason = String(cString: strerror(err))
            } else {
                reason = String(cString: strerror(errno))
            }
            close(fd)
        }
        throw .unreachable(reason)
    }

    static func send(_ fd: Int32, _ bytes: [UInt8], deadline: Date) throws(Failure) {
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + sent, bytes.count - sent, Int32(MSG_NOSIGNAL)) }
            if n > 0 {
                sent += n
            } else if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
                guard wait(fd, Int16(POLLOUT), deadline: deadline) else { throw .timedOut }
            } else {
                throw .unreachable("the connection closed (\(String(cString: strerror(errno))))")
            }
        }
    }

    static func receive(_ fd: Int32, deadline: Date) throws(Failure) -> Reply {
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        var parsed: (status: Int, bodyStart: Int, length: Int?, chunked: Bool)?
        while true {
            if let p = parsed {
                if let length = p.length, data.count - p.bodyStart >= length {
                    return Reply(status: p.status, body: Data(data[p.bodyStart..<(p.bodyStart + length)]))
                }
                // A chunked body is read once its last chunk can have come (the data ends a line
                // pair), not after every piece: a peer sending many tiny chunks costs one pass.
                if p.chunked, data.count >= 5, data.suffix(4).elementsEqual([13, 10, 13, 10]), let body = try dechunk(data[p.bodyStart...]) {
                    return Reply(status: p.status, body: body)
                }
            }
            guard wait(fd, Int16(POLLIN), deadline: deadline) else { throw .timedOut }
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
            if n < 0 {
                if errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR { continue }
                throw .unreachable("the connection failed (\(String(cString: strerror(errno))))")
            }
            if n == 0 {
                // Closed: a body without a length ends here; anything else ended early.
                guard let p = parsed, p.length == nil, !p.chunked else { throw .malformed("the answer ended early") }
                return Reply(status: p.status, body: Data(data[p.bodyStart...]))
            }
            data += buffer[0..<n]
            guard data.count <= maxAnswer else { throw .malformed("the answer is larger than \(maxAnswer) bytes") }
            // An interim answer (100 Continue and the like) is passed over: the final one follows.
            while parsed == nil, let head = try parseHead(data) {
                if head.status >= 200 {
                    parsed = head
                } else {
                    data.removeFirst(head.bodyStart)
                }
            }
        }
    }

    /// The status and framing of a response whose head is complete in `data`, nil before that.
    static func parseHead(_ data: [UInt8]) throws(Failure) -> (status: Int, bodyStart: Int, length: Int?, chunked: Bool)? {
        let end: [UInt8] = [13, 10, 13, 10]
        guard data.count >= 4, let at = (0...(data.count - 4)).first(where: { data[$0..<($0 + 4)].elementsEqual(end) }) else {
            guard data.count <= 64 * 1024 else { throw .malformed("the answer's head is larger than 64 KiB") }
            return nil
        }
        let lines = String(decoding: data[0..<at], as: UTF8.self).components(separatedBy: "\r\n")
        let first = lines[0].split(separator: " ")
        guard first.count >= 2, first[0].hasPrefix("HTTP/1."), let status = Int(first[1]) else { throw .malformed("not an HTTP answer") }
        var length: Int?
        var chunked = false
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = line[..<colon].lowercased()
            let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            if name == "content-length" {
                guard let n = Int(value), n >= 0, n <= maxAnswer else { throw .malformed("bad Content-Length \(value)") }
                length = n
            } else if name == "transfer-encoding" && value.lowercased().contains("chunked") {
                chunked = true
            }
        }
        // No body for HEAD-like answers: 1xx, 204, 304.
        if status == 204 || status == 304 || status < 200 { length = 0 }
        return (status, at + 4, chunked ? nil : length, chunked)
    }

    /// The body of a chunked answer once its last chunk has arrived, nil before that.
    static func dechunk(_ bytes: ArraySlice<UInt8>) throws(Failure) -> Data? {
        var out = Data()
        var i = bytes.startIndex
        while true {
            guard let lineEnd = (i..<bytes.endIndex).first(where: { $0 + 1 < bytes.endIndex && bytes[$0] == 13 && bytes[$0 + 1] == 10 }) else { return nil }
            let sizeText = String(decoding: bytes[i..<lineEnd], as: UTF8.self).split(separator: ";").first.map(String.init) ?? ""
            guard let size = Int(sizeText.trimmingCharacters(in: .whitespaces), radix: 16), size >= 0, size <= maxAnswer else {
                throw .malformed("bad chunk size")
            }
            let start = lineEnd + 2
            if size == 0 { return out }
            guard start + size + 2 <= bytes.endIndex else { return nil }
            out.append(contentsOf: bytes[start..<(start + size)])
            i = start + size + 2
        }
    }
}
