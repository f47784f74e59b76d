import Foundation
import KianaCore
import KianaStore
import Logging

/// A peer as `kiana peers` shows it.
public struct PeerStatus: Sendable, Codable, Equatable {
    public var device: String?
    public var address: String?
    /// "connected", "member" (an authority not connected now), "discovered", "manual", "pairing"
    public var state: String
    public var member: Bool
    public var source: String
    public var rttMillis: Double?
    public var name: String?
    /// Its last stated head (members), and how it stands to ours: "in step", "behind" (its head
    /// is on our chain), "ahead" (longer, not known here yet) or "forked".
    public var height: UInt64?
    public var head: String?
    public var sync: String?
    /// When a pull from it last completed (ISO 8601), and why the last one failed.
    public var lastSync: String?
    public var syncError: String?
    /// Link bytes received and sent while connected.
    public var bytesIn: Int?
    public var bytesOut: Int?
    /// Why our ledger refused its blocks (it is cut off for a while), and why it refused ours.
    public var refusedHere: String?
    public var refusedThere: String?
    /// Why the last dial of this address failed (addresses added with `kiana peers add`).
    public var dialError: String?
}

/// A name another device gives itself (hello, pairing request, mDNS TXT), made fit to show:
/// control, format (bidi overrides), line and paragraph separators become spaces; at most 64
/// characters and 256 bytes.
public enum PeerName {
    public static func clean(_ name: String) -> String {
        let hidden: Set<Unicode.GeneralCategory> = [.control, .format, .lineSeparator, .paragraphSeparator]
        let shown = String(String.UnicodeScalarView(name.unicodeScalars.map { hidden.contains($0.properties.generalCategory) ? " " : $0 }))
        var out = ""
        for ch in shown.prefix(64) {
            if out.utf8.count + String(ch).utf8.count > 256 { break }
            out.append(ch)
        }
        return out
    }

    /// Whether `name` is shown as given (what `clean` would not change).
    public static func isClean(_ name: String) -> Bool { clean(name) == name }
}

/// This device's sync state: its head and history tree, counters since start, and its peers.
public struct SyncStatus: Sendable, Codable, Equatable {
    public var height: UInt64
    public var head: String
    public var treeSize: UInt64
    public var treeRoot: String
    public var stats: SyncStats
    public var peers: [PeerStatus]
    public init(height: UInt64, head: String, treeSize: UInt64, treeRoot: String, stats: SyncStats, peers: [PeerStatus]) {
        self.height = height
        self.head = head
        self.treeSize = treeSize
        self.treeRoot = treeRoot
        self.stats = stats
        self.peers = peers
    }
}

/// What `kiana peers` and `kiana sync status` show.
extension PeerNetwork {

    /// Connected, member, discovered and manually added peers.
    public func status() async -> [PeerStatus] {
        let authorities = (try? await store.chainMembership())?.authorities ?? []
        let links = await registry.all
        let discovered = await plan.discovered
        var out: [PeerStatus] = []
        var seenDevices: Set<String> = []
        var seenAddresses: Set<String> = []
        for link in links {
            let name: String? = {
                if case .map(let m) = link.peerHello, case .text(let n)? = m[.text("name")] { return PeerName.clean(n) }
                return nil
            }()
            out.append(
                PeerStatus(
                    device: link.deviceID.description, address: link.remoteAddress,
                    state: link.mode == .pairing ? "pairing" : "connected", member: authorities.contains(link.remoteKey),
                    source: link.initiatedLocally ? "dialled" : "accepted", rttMillis: nil, name: name))
            seenDevices.insert(link.deviceID.description)
            seenAddresses.insert(link.remoteAddress)
        }
        let linked = Set(links.map(\.remoteKey))
        for key in authorities where key != identity.publicKey && !linked.contains(key) {
            let d = DeviceID(publicKey: key).description
            out.append(PeerStatus(device: d, address: nil, state: "member", member: true, source: "ledger", rttMillis: nil, name: nil))
            seenDevices.insert(d)
        }
        for (key, reason) in await book.activeCutOffs() where !seenDevices.contains(DeviceID(publicKey: key).description) {
            let d = DeviceID(publicKey: key).description
            out.append(PeerStatus(device: d, address: nil, state: "cut off", member: false, source: "sync", rttMillis: nil, name: nil, refusedHere: reason))
            seenDevices.insert(d)
        }
        for i in out.indices where out[i].device != nil {
            if let key = links.first(where: { $0.deviceID.description == out[i].device })?.remoteKey ?? authorities.first(where: {
                DeviceID(publicKey: $0).description == out[i].device
            }) {
                await describeSync(&out[i], key: key, link: links.first { $0.remoteKey == key })
            }
        }
        for (addr, d) in discovered where !seenDevices.contains(d.device) {
            out.append(
                PeerStatus(
                    device: d.device, address: addr, state: "discovered", member: false, source: d.sameNetwork ? "mdns" : "mdns (other network)",
                    rttMillis: nil, name: d.name.map(PeerName.clean)))
            seenAddresses.insert(addr)
        }
        let failures = await plan.failures
        for a in (try? await store.knownPeerAddresses()) ?? [] where !seenAddresses.contains(a) {
            out.append(
                PeerStatus(device: nil, address: a, state: "manual", member: false, source: "manual", rttMillis: nil, name: nil, dialError: failures[a]))
        }
        // One order for the same peers (sets and dictionaries iterate differently each time, and
        // the event stream resends a list whose text changed): links first, then offline
        // members, cut-offs, discovered and manual addresses, each by device and address.
        func rank(_ p: PeerStatus) -> Int {
            switch p.source {
            case "ledger": return 1
            case "sync": return 2
            case "manual": return 4
            default: return p.source.hasPrefix("mdns") ? 3 : 0
            }
        }
        return out.sorted { (rank($0), $0.device ?? "", $0.address ?? "") < (rank($1), $1.device ?? "", $1.address ?? "") }
    }

    /// Fills in a member's head, how it stands to ours, last sync, refusals and link bytes.
    func describeSync(_ p: inout PeerStatus, key: [UInt8], link: PeerLink?) async {
        if let link {
            p.bytesIn = await link.bytesIn
            p.bytesOut = await link.bytesOut
        }
        guard let info = await book.peer(key) else { return }
        p.lastSync = info.lastSync.map { $0.formatted(.iso8601) }
        p.syncError = info.lastError
        p.refusedHere = info.refusedHere
        p.refusedThere = info.refusedThere
        guard let h = info.head else { return }
        p.height = h.height
        p.head = Hex.encode(h.hash)
        p.sync = await relation(of: h)
    }

    /// How a peer's head stands to ours.
    func relation(of h: SyncHead) async -> String? {
        guard let mine = try? await store.chainHead() else { return nil }
        if h.hash == mine.hash { return "in step" }
        if (try? await store.heightOnChain(of: h.hash)) != nil { return "behind" }
        if h.root.count == 32, h.size >= 1, let r = try? await store.historyRoot(size: h.size), r == h.root { return "behind" }
        return h.height > mine.height ? "ahead" : "forked"
    }

    /// Head, history tree, counters and peers.
    public func syncStatus() async throws -> SyncStatus {
        guard let head = try await sync.head() else { throw KianaNetError(.invalidInput, "no ledger here yet") }
        return SyncStatus(
            height: head.height, head: Hex.encode(head.hash), treeSize: head.size, treeRoot: Hex.encode(head.root), stats: counters.snapshot,
            peers: await statusWithRTT().filter(\.member))
    }

    /// `status()` with each link's last heartbeat RTT filled in.
    public func statusWithRTT() async -> [PeerStatus] {
        var list = await status()
        let links = await registry.all
        for i in list.indices where list[i].state == "connected" {
            if let link = links.first(where: { $0.deviceID.description == list[i].device }), let rtt = await link.rtt {
                list[i].rttMillis = rtt / .milliseconds(1)
            }
        }
        return list
    }
}
