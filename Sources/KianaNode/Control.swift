import Foundation
import KianaCore
import KianaNet
import KianaStore
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// The CLI's handle on a running node (`kiana pair`, `kiana peers`): it finds the node through
/// `node.json` in the data directory and authenticates with the control token there.
public struct NodeControl: Sendable {
    let host: String
    let port: Int
    let token: String

    public static func connect(_ directory: DataDirectory) throws(KianaNodeError) -> NodeControl {
        guard let runtime = directory.readRuntime(), let url = URLComponents(string: runtime.http),
              let host = url.host, let port = url.port else {
            throw KianaNodeError(.notRunning, "the node in \(directory.path) is not running: start it with `kiana serve`")
        }
        guard kill(pid_t(runtime.pid), 0) == 0 || errno == EPERM else {
            throw KianaNodeError(.notRunning, "the node in \(directory.path) is not running (stale node.json): start it with `kiana serve`")
        }
        return NodeControl(host: host, port: port, token: try directory.readControlToken(), p2pHost: runtime.p2pHost, p2pPort: runtime.p2pPort)
    }

    /// Where the node's link listener is bound.
    public let p2pHost: String
    public let p2pPort: Int

    struct Reply { var status: Int; var body: Data }

    /// One HTTP/1.1 exchange over a fresh loopback connection.
    func exchange(_ method: String, _ path: String, body: Data? = nil) throws(KianaNodeError) -> Reply {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw KianaNodeError(.io, "cannot create a socket") }
        defer { close(fd) }
        var tv = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        guard inet_pton(AF_INET, host == "localhost" ? "127.0.0.1" : host, &addr.sin_addr) == 1 else {
            throw KianaNodeError(.notRunning, "the node's address \(host) is not an IPv4 address")
        }
        let ok = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard ok == 0 else { throw KianaNodeError(.notRunning, "the node is not answering on \(host):\(port): start it with `kiana serve`") }
        var head = "\(method) \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\nConnection: close\r\n\(ControlSurfaceHeader.name): \(token)\r\n"
        if let body { head += "Content-Type: application/json\r\nContent-Length: \(body.count)\r\n" }
        head += "\r\n"
        let request = Data(head.utf8) + (body ?? Data())
        let sent = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
        guard sent == request.count else { throw KianaNodeError(.io, "cannot send to the node") }
        var response = Data()
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = recv(fd, &buf, buf.count, 0)
            if n <= 0 { break }
            response.append(contentsOf: buf[0..<n])
            if response.count > 16 << 20 { break }
        }
        guard let split = response.range(of: Data("\r\n\r\n".utf8)),
              let statusLine = String(data: response[..<split.lowerBound], encoding: .utf8)?.split(separator: "\r\n").first,
              let status = statusLine.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) else {
            throw KianaNodeError(.io, "the node sent an unreadable answer")
        }
        let headers = String(decoding: response[..<split.lowerBound], as: UTF8.self).lowercased()
        var payload = Data(response[split.upperBound...])
        if headers.contains("transfer-encoding: chunked") { payload = Self.unchunk(payload) }
        return Reply(status: status, body: payload)
    }

    static func unchunk(_ d: Data) -> Data {
        var out = Data()
        var rest = d[...]
        while let lineEnd = rest.range(of: Data("\r\n".utf8)) {
            let sizeText = String(decoding: rest[..<lineEnd.lowerBound], as: UTF8.self)
            guard let size = Int(sizeText.split(separator: ";").first ?? "", radix: 16), size > 0 else { break }
            let start = lineEnd.upperBound
            guard rest.distance(from: start, to: rest.endIndex) >= size else { break }
            let end = rest.index(start, offsetBy: size)
            out += rest[start..<end]
            rest = rest[min(rest.index(end, offsetBy: 2, limitedBy: rest.endIndex) ?? rest.endIndex, rest.endIndex)...]
        }
        return out
    }

    func call<T: Decodable>(_ method: String, _ path: String, body: [String: Any]? = nil, as: T.Type) throws(KianaNodeError) -> T {
        let data = body.flatMap { try? JSONSerialization.data(withJSONObject: $0) }
        let r = try exchange(method, path, body: data)
        guard (200..<300).contains(r.status) else {
            let message = (try? JSONSerialization.jsonObject(with: r.body) as? [String: Any])
                .flatMap { ($0["error"] as? [String: Any])?["message"] as? String }
            throw KianaNodeError(.network, message ?? "the node answered \(r.status)")
        }
        do { return try JSONDecoder().decode(T.self, from: r.body.isEmpty ? Data("{}".utf8) : r.body) } catch {
            throw KianaNodeError(.io, "the node sent an unexpected answer to \(path)")
        }
    }

    public func peers() throws(KianaNodeError) -> [PeerStatus] {
        struct P: Decodable { var peers: [PeerStatus] }
        return try call("GET", "/control/peers", as: P.self).peers
    }

    public func addPeer(_ address: String) throws(KianaNodeError) -> Bool {
        struct A: Decodable { var added: Bool }
        return try call("POST", "/control/peers", body: ["address": address], as: A.self).added
    }

    public func openPairing(seconds: Int) throws(KianaNodeError) -> Int? {
        struct O: Decodable { var port: Int? }
        return try call("POST", "/control/pair/open", body: ["seconds": seconds], as: O.self).port
    }

    public func pendingPairings() throws(KianaNodeError) -> (open: Bool, requests: [PairingRequest]) {
        struct P: Decodable { var open: Bool; var requests: [PairingRequest] }
        let p = try call("GET", "/control/pair/pending", as: P.self)
        return (p.open, p.requests)
    }

    public struct Confirmation: Decodable, Sendable {
        public var accepted: Bool
        public var device: String
        public var key: String
        public var member: Bool
        public var authorities: Int
        public var votesFor: Int
    }

    public func confirmPairing(device: String?, code: String) throws(KianaNodeError) -> Confirmation {
        var body: [String: Any] = ["code": code]
        if let device { body["device"] = device }
        return try call("POST", "/control/pair/confirm", body: body, as: Confirmation.self)
    }

    public func closePairing() {
        _ = try? exchange("POST", "/control/pair/close")
    }
}

enum ControlSurfaceHeader {
    static let name = "X-Kiana-Control-Token"
}

extension Node {
    /// Joins the network of the authority at `address` (`kiana join`). Nothing is written to
    /// `directory` unless the owner confirms the code on the authority and a valid ledger
    /// arrives. An existing identity in the directory is reused.
    public static func join(directory: DataDirectory, address: String, name: String?, wait: Duration, logger: Logger,
                            onCode: @escaping @Sendable (String, DeviceID) -> Void) async throws -> (Node, Pairing.Joined) {
        let identity: DeviceIdentity
        let fresh: Bool
        if directory.hasIdentity {
            identity = try directory.loadIdentity()
            let store = try LedgerStore(database: KianaDatabase(path: directory.databasePath))
            if let net = try store.network() {
                throw KianaNodeError(.alreadyInitialized, "\(directory.path) already belongs to network \(Hex.encode(net.prefix(8)))…; join with a new data directory")
            }
            fresh = false
        } else {
            if FileManager.default.fileExists(atPath: directory.databasePath) {
                throw KianaNodeError(.dataDirectory, "\(directory.path) holds a database but no identity: use a new data directory")
            }
            identity = DeviceIdentity.generate()
            fresh = true
        }
        let joined: Pairing.Joined
        do {
            joined = try await Pairing.join(address: address, identity: identity, name: name, wait: wait, logger: logger, onCode: onCode)
        } catch let e as KianaNetError {
            throw KianaNodeError(.network, e.message, cause: e)
        }
        // Validate the whole chain before keeping anything.
        _ = try Node.validateChain(joined.blocks.map(\.encoded), now: currentMillis())
        if fresh { try directory.save(identity: identity) }
        let store = try LedgerStore(database: KianaDatabase(path: directory.databasePath))
        _ = try store.importBlocks(joined.blocks, now: currentMillis())
        // The authority is the first peer this device knows; the node dials it when it starts.
        _ = try? store.addPeerAddress(address, now: currentMillis())
        return (Node(directory: directory, identity: identity, store: store), joined)
    }
}
