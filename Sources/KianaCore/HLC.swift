/// A hybrid logical clock timestamp: wall-clock milliseconds plus a logical counter.
public struct HLC: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var wall: UInt64
    public var logical: UInt32

    public init(wall: UInt64, logical: UInt32 = 0) {
        self.wall = wall
        self.logical = logical
    }

    public static let zero = HLC(wall: 0)

    public static func < (a: HLC, b: HLC) -> Bool {
        (a.wall, a.logical) < (b.wall, b.logical)
    }

    public var description: String { "\(wall).\(logical)" }

    var cbor: CBOR { .array([.unsigned(wall), .unsigned(UInt64(logical))]) }

    init(cbor: CBOR) throws(KianaCoreError) {
        let a = try cbor.arrayValue("hlc")
        guard a.count == 2 else { throw KianaCoreError(.invalidStructure, "hlc must be [wall, logical]") }
        wall = try a[0].uintValue("hlc wall")
        let l = try a[1].uintValue("hlc logical")
        guard l <= UInt64(UInt32.max) else { throw KianaCoreError(.invalidStructure, "hlc logical counter too large") }
        logical = UInt32(l)
    }
}

/// The clock that issues HLC timestamps (Kulkarni et al.): never goes backwards, follows the
/// wall clock when it moves forward, and stays ahead of every timestamp it has seen.
public struct HybridClock: Sendable {
    public private(set) var last: HLC

    public init(last: HLC = .zero) { self.last = last }

    /// A timestamp for a local event at physical time `now` (ms).
    public mutating func tick(now: UInt64) -> HLC {
        if now > last.wall {
            last = HLC(wall: now, logical: 0)
        } else {
            last = HLC(wall: last.wall, logical: last.logical &+ 1)
        }
        return last
    }

    /// Takes a remote timestamp into account (receive event) and returns the new local time.
    public mutating func receive(_ remote: HLC, now: UInt64) -> HLC {
        let wall = max(now, last.wall, remote.wall)
        let logical: UInt32
        if wall == last.wall && wall == remote.wall {
            logical = max(last.logical, remote.logical) &+ 1
        } else if wall == last.wall {
            logical = last.logical &+ 1
        } else if wall == remote.wall {
            logical = remote.logical &+ 1
        } else {
            logical = 0
        }
        last = HLC(wall: wall, logical: logical)
        return last
    }
}
