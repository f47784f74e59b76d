/// The pure logic of multicast DNS service discovery (RFC 6762/6763): which records a device
/// publishes, how it answers a query, how probing detects a conflict, and the browser's TTL
/// cache. No sockets here: `MDNSDiscovery` moves the bytes.

/// What a device announces.
public struct MDNSServiceInfo: Sendable, Equatable {
    /// The instance label, e.g. "kiana-K7QM4T" (unique on the link after probing).
    public var instance: String
    /// The host label; the host name is `<hostLabel>.local`.
    public var hostLabel: String
    public var port: UInt16
    /// TXT key/value pairs, in order.
    public var txt: [(String, String)]
    public var ipv4: [[UInt8]]
    public var ipv6: [[UInt8]]

    public init(instance: String, hostLabel: String, port: UInt16, txt: [(String, String)], ipv4: [[UInt8]], ipv6: [[UInt8]] = []) {
        self.instance = instance
        self.hostLabel = hostLabel
        self.port = port
        self.txt = txt
        self.ipv4 = ipv4
        self.ipv6 = ipv6
    }

    public static func == (a: Self, b: Self) -> Bool {
        a.instance == b.instance && a.hostLabel == b.hostLabel && a.port == b.port && a.ipv4 == b.ipv4 && a.ipv6 == b.ipv6
            && a.txt.map { "\($0.0)=\($0.1)" } == b.txt.map { "\($0.0)=\($0.1)" }
    }
}

public enum MDNS {
    public static let serviceType = DNSName("_kiana._tcp.local")
    public static let enumeration = DNSName("_services._dns-sd._udp.local")
    public static let groupV4 = "224.0.0.251"
    public static let port = 5353
    /// RFC 6762 §10: 120 s for records naming a host, 75 minutes for the others.
    public static let hostTTL: UInt32 = 120
    public static let otherTTL: UInt32 = 4500
}

/// The records of one announced service and the responder's decisions about them.
public struct MDNSResponder: Sendable {
    public var info: MDNSServiceInfo

    public init(info: MDNSServiceInfo) { self.info = info }

    public var instanceName: DNSName { MDNS.serviceType.prepending(info.instance) }
    public var hostName: DNSName { DNSName(labels: [info.hostLabel, "local"]) }

    var ptr: DNSRecord { DNSRecord(name: MDNS.serviceType, type: DNSType.ptr, ttl: MDNS.otherTTL, data: .ptr(instanceName)) }
    var enumeration: DNSRecord { DNSRecord(name: MDNS.enumeration, type: DNSType.ptr, ttl: MDNS.otherTTL, data: .ptr(MDNS.serviceType)) }
    var srv: DNSRecord {
        DNSRecord(
            name: instanceName, type: DNSType.srv, cacheFlush: true, ttl: MDNS.hostTTL, data: .srv(priority: 0, weight: 0, port: info.port, target: hostName))
    }
    var txt: DNSRecord {
        let strings = info.txt.map { Array("\($0.0)=\($0.1)".utf8).prefix(255) }.map(Array.init)
        return DNSRecord(name: instanceName, type: DNSType.txt, cacheFlush: true, ttl: MDNS.otherTTL, data: .txt(strings))
    }
    var addresses: [DNSRecord] {
        info.ipv4.map { DNSRecord(name: hostName, type: DNSType.a, cacheFlush: true, ttl: MDNS.hostTTL, data: .a($0)) }
            + info.ipv6.map { DNSRecord(name: hostName, type: DNSType.aaaa, cacheFlush: true, ttl: MDNS.hostTTL, data: .aaaa($0)) }
    }

    /// Every record this device owns or shares.
    public var records: [DNSRecord] { [ptr, srv, txt] + addresses + [enumeration] }

    /// The unique records, the ones probing defends.
    var unique: [DNSRecord] { [srv, txt] + addresses }

    /// Probe (§8.1): ANY questions for the instance and host names, QU bit set, the proposed
    /// records in the authority section.
    public func probe() -> DNSMessage {
        DNSMessage(
            questions: [
                DNSQuestion(name: instanceName, type: DNSType.any, unicastResponse: true),
                DNSQuestion(name: hostName, type: DNSType.any, unicastResponse: true),
            ],
            authorities: unique.map {
                var r = $0
                r.cacheFlush = false
                return r
            })
    }

    /// Announcement (§8.3), or goodbye (§10.1: the same records with TTL 0).
    public func announcement(goodbye: Bool = false) -> DNSMessage {
        var answers = [ptr, srv, txt] + addresses + [enumeration]
        if goodbye {
            answers = answers.map {
                var r = $0
                r.ttl = 0
                return r
            }
        }
        return DNSMessage(flags: DNSMessage.responseFlags, answers: answers)
    }

    /// The answer to a query, or nil if it asks nothing of ours. Known answers the asker
    /// listed with at least half our TTL are left out (§7.1); records the answer implies go to
    /// the additional section (RFC 6763 §12). `shared` tells the caller to delay the answer
    /// by 20-120 ms (§6) because it holds only shared records.
    public func answer(_ query: DNSMessage) -> (message: DNSMessage, shared: Bool)? {
        guard !query.isResponse else { return nil }
        var answers: [DNSRecord] = []
        for q in query.questions {
            for r in records where r.name == q.name && (q.type == r.type || q.type == DNSType.any) {
                let known = query.answers.contains { $0.name == r.name && $0.type == r.type && $0.data == r.data && $0.ttl >= r.ttl / 2 }
                if !known && !answers.contains(r) { answers.append(r) }
            }
        }
        guard !answers.isEmpty else { return nil }
        var additionals: [DNSRecord] = []
        func add(_ r: DNSRecord) { if !answers.contains(r) && !additionals.contains(r) { additionals.append(r) } }
        if answers.contains(ptr) {
            add(srv)
            add(txt)
            addresses.forEach(add)
        }
        if answers.contains(srv) { addresses.forEach(add) }
        let shared = answers.allSatisfy { !$0.cacheFlush }
        return (DNSMessage(flags: DNSMessage.responseFlags, answers: answers, additionals: additionals), shared)
    }

    /// A legacy unicast answer (§6.7): the query's ID and questions, no cache-flush bits, TTL
    /// at most 10 s.
    public func legacyAnswer(_ query: DNSMessage) -> DNSMessage? {
        guard let (m, _) = answer(query) else { return nil }
        func plain(_ r: DNSRecord) -> DNSRecord {
            var r = r
            r.cacheFlush = false
            r.ttl = min(r.ttl, 10)
            return r
        }
        return DNSMessage(
            id: query.id, flags: DNSMessage.responseFlags, questions: query.questions,
            answers: m.answers.map(plain), additionals: m.additionals.map(plain))
    }

    /// Whether a message from the network claims one of our unique names with different data
    /// (§8.1 during probing, §9 afterwards). Our own looped-back packets never conflict.
    public func conflicts(with m: DNSMessage) -> Bool {
        let mine = unique
        let claims = m.isResponse ? m.answers + m.additionals : m.authorities
        for r in claims where r.ttl > 0 && (r.name == instanceName || r.name == hostName) {
            guard [DNSType.srv, DNSType.txt, DNSType.a, DNSType.aaaa].contains(r.type) else { continue }
            if !mine.contains(where: { $0.name == r.name && $0.type == r.type && $0.data == r.data }) {
                // A host name may carry other addresses of the same host only if it is ours.
                if r.name == hostName && (r.type == DNSType.a || r.type == DNSType.aaaa) && !m.isResponse { continue }
                return true
            }
        }
        return false
    }

    /// The name to try after a conflict: "kiana-X" → "kiana-X-2" → "kiana-X-3" (§9).
    public static func renamed(_ label: String) -> String {
        if let dash = label.lastIndex(of: "-"), let n = Int(label[label.index(after: dash)...]), n >= 2, n < 1000 {
            return String(label[..<dash]) + "-\(n + 1)"
        }
        return label + "-2"
    }
}

/// A service the browser has resolved.
public struct MDNSResolved: Sendable, Equatable, Codable {
    public var instance: String
    public var host: String
    public var port: UInt16
    public var txt: [String: String]
    public var addresses: [String]
}

/// The browser's record cache with TTLs (§5.2, §10). Times are seconds on a monotonic clock.
public struct MDNSCache: Sendable {
    struct Key: Hashable {
        var name: DNSName
        var type: UInt16
        var data: String
    }
    struct Item {
        var record: DNSRecord
        var received: Double
        var expires: Double
        var refreshed = false
    }
    var items: [Key: Item] = [:]
    public static let maxItems = 4096

    public init() {}

    static func key(_ r: DNSRecord) -> Key { Key(name: r.name, type: r.type, data: "\(r.data)") }

    /// Adds the records of a response. A cache-flush record replaces older records of its set
    /// received more than 1 s ago; TTL 0 (goodbye) expires the record in 1 s.
    public mutating func add(_ message: DNSMessage, now: Double) {
        guard message.isResponse else { return }
        for r in message.answers + message.additionals {
            guard [DNSType.ptr, DNSType.srv, DNSType.txt, DNSType.a, DNSType.aaaa].contains(r.type) else { continue }
            if r.cacheFlush {
                for (k, v) in items where k.name == r.name && k.type == r.type && v.received < now - 1 && k != Self.key(r) {
                    items[k]?.expires = min(v.expires, now + 1)
                }
            }
            let expires = r.ttl == 0 ? now + 1 : now + Double(min(r.ttl, 86400))
            if items.count >= Self.maxItems && items[Self.key(r)] == nil { continue }
            items[Self.key(r)] = Item(record: r, received: now, expires: expires)
        }
    }

    /// Drops expired records.
    public mutating func expire(now: Double) {
        items = items.filter { $0.value.expires > now }
    }

    /// Records past 80 % of their TTL that should be re-queried once (§5.2).
    public mutating func dueForRefresh(now: Double) -> [DNSQuestion] {
        var out: [DNSQuestion] = []
        for (k, v) in items where !v.refreshed && v.record.ttl > 1 {
            let life = Double(v.record.ttl)
            if now >= v.received + 0.8 * life {
                items[k]?.refreshed = true
                out.append(DNSQuestion(name: k.name, type: k.type))
            }
        }
        return out
    }

    func records(_ name: DNSName, _ type: UInt16, now: Double) -> [DNSRecord] {
        items.values.filter { $0.record.name == name && $0.record.type == type && $0.expires > now && $0.record.ttl > 0 }.map(\.record)
    }

    /// Instances of `type` with their SRV, TXT and addresses where known, and the questions
    /// still needed to complete the ones that are not.
    public func services(_ type: DNSName, now: Double) -> (resolved: [MDNSResolved], missing: [DNSQuestion]) {
        var resolved: [MDNSResolved] = []
        var missing: [DNSQuestion] = []
        for p in records(type, DNSType.ptr, now: now) {
            guard case .ptr(let instanceName) = p.data, instanceName.labels.count == type.labels.count + 1 else { continue }
            guard let srv = records(instanceName, DNSType.srv, now: now).first,
                case .srv(_, _, let port, let target) = srv.data
            else {
                missing.append(DNSQuestion(name: instanceName, type: DNSType.any))
                continue
            }
            let txtRecord = records(instanceName, DNSType.txt, now: now).first
            var addrs: [String] = []
            for a in records(target, DNSType.a, now: now) { if case .a(let b) = a.data { addrs.append(b.map(String.init).joined(separator: ".")) } }
            for a in records(target, DNSType.aaaa, now: now) { if case .aaaa(let b) = a.data { addrs.append(Self.ipv6Text(b)) } }
            if addrs.isEmpty {
                missing.append(DNSQuestion(name: target, type: DNSType.a))
                continue
            }
            if txtRecord == nil { missing.append(DNSQuestion(name: instanceName, type: DNSType.txt)) }
            resolved.append(
                MDNSResolved(
                    instance: instanceName.labels[0], host: target.description, port: port,
                    txt: txtRecord?.txtPairs ?? [:], addresses: addrs.sorted()))
        }
        return (resolved.sorted { $0.instance < $1.instance }, missing)
    }

    static func ipv6Text(_ b: [UInt8]) -> String {
        stride(from: 0, to: 16, by: 2).map { String(UInt16(b[$0]) << 8 | UInt16(b[$0 + 1]), radix: 16) }.joined(separator: ":")
    }
}
