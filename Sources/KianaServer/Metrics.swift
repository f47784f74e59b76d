import CoreMetrics
import Foundation
import Hummingbird
import KianaNet
import Prometheus
import Synchronization

/// Figures `/metrics` reads from the node at each scrape.
public struct MetricsSnapshot: Sendable {
    /// Height of the ledger head (nil before a ledger exists).
    public var height: UInt64?
    /// Live knowledge items, entries on the canonical chain, entries waiting to be sealed.
    public var items: Int
    public var entries: Int
    public var pending: Int
    /// Tokens the language model generated since start.
    public var tokens: Int
    /// Bytes of the database file and its write-ahead log.
    public var databaseBytes: Int
    /// Whether the models are loaded (what /ready reports).
    public var modelsLoaded: Bool
    /// Member links up now (inbound and dialled), nil when device networking is off.
    public var links: Int?

    public init(
        height: UInt64? = nil, items: Int = 0, entries: Int = 0, pending: Int = 0, tokens: Int = 0, databaseBytes: Int = 0,
        modelsLoaded: Bool = false, links: Int? = nil
    ) {
        self.height = height
        self.items = items
        self.entries = entries
        self.pending = pending
        self.tokens = tokens
        self.databaseBytes = databaseBytes
        self.modelsLoaded = modelsLoaded
        self.links = links
    }
}

/// The node's metrics: swift-metrics counters, meters and timers, each created once (per label
/// set) on a swift-prometheus registry of this application's own, and written out in
/// Prometheus' text format by that registry (decision 98; it replaced decision 62's renderer,
/// keeping every series name). Requests are counted as they are answered; figures the node and
/// the peer layer keep (ledger, sync and admission totals) are brought up to date at each
/// scrape: totals by adding what was added since the last scrape, levels by setting them.
final class Metrics: Sendable {
    /// Request latency buckets (seconds), as before.
    static let buckets: [Double] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]
    static let syncErrorReasons = ["refused", "protocol", "timeout", "closed", "busy", "rate-limited", "other"]

    let registry = PrometheusCollectorRegistry()
    let factory: PrometheusMetricsFactory

    private struct Series {
        var counters: [String: CoreMetrics.Counter] = [:]
        var meters: [String: Meter] = [:]
        var timers: [String: CoreMetrics.Timer] = [:]
        /// The total each mirrored counter was last brought to.
        var mirrored: [String: Int] = [:]
    }
    private let series = Mutex(Series())
    /// One scrape at a time brings the mirrored totals up to date.
    private let scrape = Mutex(())

    init() {
        var f = PrometheusMetricsFactory(registry: registry)
        f.durationHistogramBuckets["kiana_http_request_duration_seconds"] = Self.buckets.map { .nanoseconds(Int64($0 * 1e9)) }
        factory = f
    }

    private static func key(_ name: String, _ labels: [(String, String)]) -> String {
        ([name] + labels.map { "\($0.0)=\($0.1)" }).joined(separator: "\u{1f}")
    }

    static func descriptor(_ name: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }

    /// The counter `name{labels}`, made on first use.
    func counter(_ name: String, _ help: String, _ labels: [(String, String)] = []) -> CoreMetrics.Counter {
        let k = Self.key(name, labels)
        return series.withLock { s in
            if let c = s.counters[k] { return c }
            let c = CoreMetrics.Counter(label: name, dimensions: labels, handler: registry.makeCounter(descriptor: Self.descriptor(name, help), labels: labels), factory: factory)
            s.counters[k] = c
            return c
        }
    }

    /// The gauge `name{labels}` (a swift-metrics meter), made on first use.
    func meter(_ name: String, _ help: String, _ labels: [(String, String)] = []) -> Meter {
        let k = Self.key(name, labels)
        return series.withLock { s in
            if let m = s.meters[k] { return m }
            let m = Meter(label: name, dimensions: labels, handler: registry.makeGauge(descriptor: Self.descriptor(name, help), labels: labels), factory: factory)
            s.meters[k] = m
            return m
        }
    }

    func timer(_ name: String, _ help: String, _ labels: [(String, String)]) -> CoreMetrics.Timer {
        let k = Self.key(name, labels)
        return series.withLock { s in
            if let t = s.timers[k] { return t }
            let buckets = factory.durationHistogramBuckets[name] ?? factory.defaultDurationHistogramBuckets
            let t = CoreMetrics.Timer(
                label: name, dimensions: labels, handler: registry.makeDurationHistogram(descriptor: Self.descriptor(name, help), labels: labels, buckets: buckets),
                factory: factory)
            s.timers[k] = t
            return t
        }
    }

    /// Brings a counter that mirrors a total kept elsewhere up to `total`. The owners' totals
    /// only grow while the process lives, so a smaller `total` is an older reading (two scrapes
    /// that read their figures in one order and render in the other) and adds nothing.
    func mirror(_ name: String, _ help: String, _ labels: [(String, String)] = [], total: Int) {
        let c = counter(name, help, labels)
        let k = Self.key(name, labels)
        let delta = series.withLock { s -> Int in
            let last = s.mirrored[k] ?? 0
            guard total > last else { return 0 }
            s.mirrored[k] = total
            return total - last
        }
        if delta > 0 { c.increment(by: Int64(delta)) }
    }

    func record(method: String, route: String, status: Int, seconds: Double) {
        counter("kiana_http_requests_total", "HTTP requests by method, route and status.", [("method", method), ("route", route), ("status", String(status))])
            .increment()
        timer("kiana_http_request_duration_seconds", "HTTP request latency.", [("method", method), ("route", route)])
            .recordNanoseconds(Int64(seconds * 1e9))
    }

    /// Brings the node's figures up to date and returns the registry in Prometheus' text format.
    func render(_ s: MetricsSnapshot, sync: SyncStats? = nil, admission: AdmissionStats? = nil, connections: ConnectionsDTO? = nil) -> String {
        scrape.withLock { _ in
            mirror("kiana_tokens_generated_total", "Tokens generated by the language model.", total: s.tokens)
            meter("kiana_ledger_height", "Height of the ledger head.").set(Int64(s.height ?? 0))
            meter("kiana_knowledge_items", "Live knowledge items.").set(Int64(s.items))
            meter("kiana_ledger_entries", "Entries on the canonical chain.").set(Int64(s.entries))
            meter("kiana_ledger_pending_entries", "Entries waiting to be sealed into a block.").set(Int64(s.pending))
            meter("kiana_store_bytes", "Bytes of the database file and its write-ahead log.").set(Int64(s.databaseBytes))
            meter("kiana_models_loaded", "1 when the models are loaded (what /ready reports).").set(Int64(s.modelsLoaded ? 1 : 0))
            if let links = s.links { meter("kiana_p2p_links", "Member links up now, inbound and dialled.").set(Int64(links)) }
            if let sync {
                mirror("kiana_sync_blocks_in_total", "Blocks stored from peers.", total: sync.blocksIn)
                mirror("kiana_sync_blocks_out_total", "Blocks sent to peers (batches and pushes).", total: sync.blocksOut)
                mirror("kiana_sync_bytes_in_total", "Compressed sync batch bytes received.", total: sync.compressedBytesIn)
                mirror("kiana_sync_bytes_out_total", "Compressed sync batch bytes sent.", total: sync.compressedBytesOut)
                mirror("kiana_sync_pulls_total", "Completed pulls from peers.", total: sync.pulls)
                mirror("kiana_sync_reorgs_total", "Head switches to another branch caused by sync.", total: sync.reorgs)
                mirror("kiana_ledger_resigned_total", "This device's writes signed again after a reused sequence number (decision 111).", total: sync.resigned)
                mirror("kiana_ledger_retired_total", "Stuck entries retired because their content landed under another number.", total: sync.retired)
                mirror("kiana_sync_stuck_offered_total", "Stuck entries offered to the members whose key signed them.", total: sync.stuckOffered)
                mirror("kiana_sync_stuck_taken_total", "This device's own stuck entries taken back from members.", total: sync.stuckTaken)
                for reason in Self.syncErrorReasons {
                    mirror("kiana_sync_errors_total", "Failed syncs by reason.", [("reason", reason)], total: sync.errors[reason] ?? 0)
                }
            }
            if let a = admission {
                for (pool, n) in [("pending", a.pending), ("members", a.members), ("pairing", a.pairing)] {
                    meter("kiana_p2p_connections", "Inbound P2P connections open now, by pool.", [("pool", pool)]).set(Int64(n))
                }
                for (reason, n) in [("pool-full", a.refusedPoolFull), ("per-source", a.refusedPerSource), ("members-full", a.refusedMembersFull)] {
                    mirror("kiana_p2p_refused_total", "Inbound P2P connections refused, by reason.", [("reason", reason)], total: n)
                }
                for (outcome, n) in [("completed", a.handshakesCompleted), ("timed-out", a.handshakesTimedOut), ("failed", a.handshakesFailed)] {
                    mirror("kiana_p2p_handshakes_total", "Inbound P2P handshakes by outcome.", [("outcome", outcome)], total: n)
                }
            }
            if let c = connections {
                let h = c.http
                for (state, n) in [("awaiting-head", h.awaitingHead), ("active", h.active), ("idle", h.idle)] {
                    meter("kiana_http_connections", "HTTP connections open now, by state.", [("state", state)]).set(Int64(n))
                }
                meter("kiana_http_connections_trusted", "HTTP connections open now from trusted clients (loopback or token).").set(Int64(h.trusted))
                meter("kiana_http_connections_cap", "The most HTTP connections open at once (after the descriptor budget).").set(Int64(h.cap))
                for (reason, n) in [("full", h.refusedFull), ("per-source", h.refusedPerSource)] {
                    mirror("kiana_http_connections_refused_total", "HTTP connections reset on arrival, by reason.", [("reason", reason)], total: n)
                }
                for (reason, n) in [
                    ("displaced-idle", h.evictedIdle), ("displaced-awaiting-head", h.evictedAwaitingHead), ("head-timeout", h.headTimeouts),
                    ("body-timeout", h.bodyTimeouts), ("write-stall", h.writeStalls), ("idle-timeout", h.idleClosed), ("linger", h.lingerClosed),
                ] {
                    mirror("kiana_http_connections_closed_total", "HTTP connections closed by the server, by reason.", [("reason", reason)], total: n)
                }
                if let n = c.descriptors.inUse { meter("kiana_fds_in_use", "Open file descriptors of the process.").set(Int64(n)) }
                if let n = c.descriptors.limit { meter("kiana_fds_limit", "The process's open-file limit (raised to the hard limit at start).").set(Int64(n)) }
                if let b = c.descriptors.budget {
                    for (part, n) in [
                        ("process", b.process), ("sqlite", b.sqlite), ("models", b.models), ("ingestion", b.ingestion), ("p2p", b.p2p),
                        ("headroom", b.headroom), ("http", b.httpCap),
                    ] {
                        meter("kiana_fds_budget", "Descriptors the budget gives each part of the node.", [("part", part)]).set(Int64(n))
                    }
                }
            }
        }
        var out: [UInt8] = []
        registry.emit(into: &out)
        return String(decoding: out, as: UTF8.self)
    }
}
