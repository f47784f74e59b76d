import Foundation
import Hummingbird
import KianaNet
import Synchronization
#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The node's open-file budget and how it is divided (docs/decisions.md 102).
///
/// At start the node raises its soft open-file limit to the hard limit, then gives each part a
/// fixed share: the process itself (standard streams, event loops, logs), SQLite (a writer, its
/// readers, WAL and shared memory per database), model files, ingestion (files read, helper
/// processes' pipes), the P2P listener (its pools as `LinkConfig` sizes them, and links it
/// dials) and headroom. HTTP gets what is left, up to its configured cap; so no listener can
/// take the descriptors the store or the other listener need, and HTTP refuses (resets) a
/// connection over its share at once rather than `accept` failing with EMFILE later.
public struct DescriptorBudget: Sendable, Equatable, Codable {
    /// The soft limit before and after raising it, and the hard limit.
    public var softLimitAtStart: Int
    public var limit: Int
    public var hardLimit: Int
    /// Shares of `limit`, by part.
    public var process: Int
    public var sqlite: Int
    public var models: Int
    public var ingestion: Int
    public var p2p: Int
    public var headroom: Int
    /// What is left for HTTP, and the HTTP cap in force (`min(configured, share)`).
    public var httpShare: Int
    public var httpCap: Int

    /// The fewest HTTP connections a node starts with; below this the limit is too small to run.
    public static let minimumHTTP = 16

    /// Divides `limit` descriptors; nil when the fixed parts leave HTTP fewer than `minimumHTTP`.
    public static func divide(limit: Int, softLimitAtStart: Int, hardLimit: Int, link: LinkConfig, httpConfigured: Int) -> DescriptorBudget? {
        let process = 64
        let sqlite = 64
        let models = 32
        let ingestion = 64
        // Inbound pools, plus one dialled link per member slot.
        let p2p = link.maxPendingHandshakes + link.memberReserve + link.maxPairingLinks + 2 * link.maxConnections
        let headroom = max(64, limit / 10)
        let share = limit - process - sqlite - models - ingestion - p2p - headroom
        guard share >= minimumHTTP else { return nil }
        return DescriptorBudget(
            softLimitAtStart: softLimitAtStart, limit: limit, hardLimit: hardLimit, process: process, sqlite: sqlite, models: models,
            ingestion: ingestion, p2p: p2p, headroom: headroom, httpShare: share, httpCap: min(httpConfigured, share))
    }

    /// The smallest open-file limit a node with `link`'s pools starts with.
    public static func minimumLimit(link: LinkConfig) -> Int {
        var limit = 64
        while divide(limit: limit, softLimitAtStart: limit, hardLimit: limit, link: link, httpConfigured: minimumHTTP) == nil { limit += 1 }
        return limit
    }

    /// Raises the soft open-file limit to the hard one (capped at the kernel's `nr_open`) and
    /// returns (soft before, soft now, hard).
    public static func raiseLimit() -> (before: Int, now: Int, hard: Int) {
        var lim = rlimit()
        guard getrlimit(Self.resource, &lim) == 0 else { return (1024, 1024, 1024) }
        let before = Self.clamp(lim.rlim_cur)
        var target = lim.rlim_max
        #if os(Linux)
            if let text = try? String(contentsOfFile: "/proc/sys/fs/nr_open", encoding: .utf8),
                let n = rlim_t(text.trimmingCharacters(in: .whitespacesAndNewlines)), target == Self.unlimited || target > n
            {
                target = n
            }
        #else
            if target == Self.unlimited || target > rlim_t(OPEN_MAX) { target = rlim_t(OPEN_MAX) }
        #endif
        if lim.rlim_cur < target {
            var raised = lim
            raised.rlim_cur = target
            _ = setrlimit(Self.resource, &raised)
        }
        var now = rlimit()
        _ = getrlimit(Self.resource, &now)
        return (before, Self.clamp(now.rlim_cur), Self.clamp(now.rlim_max))
    }

    /// The soft open-file limit now.
    public static func currentLimit() -> Int? {
        var lim = rlimit()
        return getrlimit(Self.resource, &lim) == 0 ? clamp(lim.rlim_cur) : nil
    }

    /// RLIMIT_NOFILE as getrlimit takes it.
    #if canImport(Glibc)
        static let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
    #else
        static let resource = RLIMIT_NOFILE
    #endif

    #if os(Linux)
        static let unlimited = rlim_t.max
    #else
        static let unlimited = RLIM_INFINITY
    #endif

    private static func clamp(_ v: rlim_t) -> Int { v == Self.unlimited || v > rlim_t(Int32.max) ? Int(Int32.max) : Int(v) }

    /// Descriptors this process has open now (`/proc/self/fd`; `/dev/fd` elsewhere); O(open
    /// descriptors), so callers cache it (`DescriptorCount`).
    public static func inUse() -> Int? {
        #if os(Linux)
            let path = "/proc/self/fd"
        #else
            let path = "/dev/fd"
        #endif
        guard let dir = opendir(path) else { return nil }
        defer { closedir(dir) }
        var n = 0
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in raw.first.map { $0 == UInt8(ascii: ".") } ?? true }
            if !name { n += 1 }
        }
        return max(0, n - 1)  // the directory's own descriptor
    }
}

/// Descriptors in use, counted at most once a second however often status and metrics ask.
public final class DescriptorCount: Sendable {
    private let cached = Mutex<(at: ContinuousClock.Instant, value: Int?)?>(nil)
    public init() {}
    public var value: Int? {
        let now = ContinuousClock.now
        if let c = cached.withLock({ $0 }), now - c.at < .seconds(1) { return c.value }
        let v = DescriptorBudget.inUse()
        cached.withLock { $0 = (now, v) }
        return v
    }
}

/// Connections by listener and descriptors in use against the budget (the device endpoint,
/// `GET /control/connections` for `kiana status`, and /metrics).
public struct ConnectionsDTO: ResponseCodable, Sendable, Equatable {
    public struct P2P: Codable, Sendable, Equatable {
        /// Inbound connections open now (handshakes, member and pairing links), and the
        /// descriptors the budget keeps for the P2P listener (inbound pools and dialled links).
        public var open: Int
        public var share: Int?
        public var refused: Int
    }
    public struct Descriptors: Codable, Sendable, Equatable {
        /// Open now (nil where the platform cannot count them), the limit, and its division.
        public var inUse: Int?
        public var limit: Int?
        public var budget: DescriptorBudget?
    }
    public var http: HTTPConnectionStats
    public var p2p: P2P?
    public var descriptors: Descriptors
}

/// The HTTP listener's book, the budget and a cached descriptor count, read together.
public final class ListenerStatus: Sendable {
    let http: HTTPConnectionBook
    let budget: DescriptorBudget?
    let descriptors = DescriptorCount()

    init(http: HTTPConnectionBook, budget: DescriptorBudget?) {
        self.http = http
        self.budget = budget
    }

    func snapshot(p2p admission: AdmissionStats?) -> ConnectionsDTO {
        let share = budget?.p2p
        let p2p = admission.map { a in ConnectionsDTO.P2P(open: a.open, share: share, refused: a.refused) }
        return ConnectionsDTO(
            http: http.stats, p2p: p2p,
            descriptors: .init(inUse: descriptors.value, limit: budget?.limit ?? DescriptorBudget.currentLimit(), budget: budget))
    }
}
