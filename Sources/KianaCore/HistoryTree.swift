/// The RFC 6962 history tree over the canonical block hashes, computed from its stored complete
/// subtrees instead of from all leaves.
///
/// Node `(level, index)` is the hash of the complete, aligned subtree over leaves
/// `index·2^level ..< (index+1)·2^level`; level 0 holds the leaf hashes (`Merkle.leafHash` of a
/// block hash). Appending a leaf completes at most log2(n) nodes (`completed`), so a store keeps
/// them incrementally; every tree head and proof then needs O(log n) node lookups. Lookups are
/// passed in, so this stays pure (the SQLite store and the tests supply them).
public enum HistoryTree {
    /// Looks up node `(level, index)`; it must exist (the subtree is complete).
    public typealias Lookup = (_ level: Int, _ index: UInt64) throws -> [UInt8]

    /// The nodes that become complete when leaf `index` (hash `leafHash`) is appended: the leaf
    /// itself at level 0 and each parent whose right-most leaf it is.
    public static func completed(leafIndex index: UInt64, leafHash: [UInt8], lookup: Lookup) rethrows -> [(level: Int, index: UInt64, hash: [UInt8])] {
        var out: [(level: Int, index: UInt64, hash: [UInt8])] = [(0, index, leafHash)]
        var level = 0
        var i = index
        var hash = leafHash
        while i & 1 == 1 {
            hash = Merkle.nodeHash(try lookup(level, i - 1), hash)
            level += 1
            i >>= 1
            out.append((level, i, hash))
        }
        return out
    }

    /// The first leaf index whose nodes must go when the tree is cut back to `size` leaves:
    /// a node `(level, index)` survives only if `(index + 1) << level <= size`.
    public static func survives(level: Int, index: UInt64, size: UInt64) -> Bool {
        (index + 1) << UInt64(level) <= size
    }

    /// MTH over leaves `start ..< start + count` (count ≥ 1), from complete subtrees.
    public static func rangeHash(start: UInt64, count: UInt64, lookup: Lookup) rethrows -> [UInt8] {
        precondition(count >= 1)
        if count & (count - 1) == 0, start % count == 0 {
            return try lookup(count.trailingZeroBitCount, start / count)
        }
        let k = largestPowerOfTwo(below: count)
        return Merkle.nodeHash(try rangeHash(start: start, count: k, lookup: lookup), try rangeHash(start: start + k, count: count - k, lookup: lookup))
    }

    /// The tree head MTH(D[size]).
    public static func root(size: UInt64, lookup: Lookup) rethrows -> [UInt8] {
        size == 0 ? Merkle.emptyRoot : try rangeHash(start: 0, count: size, lookup: lookup)
    }

    /// RFC 9162 §2.1.4 consistency proof from `oldSize` to `size` (0 < oldSize ≤ size).
    public static func consistencyProof(oldSize: UInt64, size: UInt64, lookup: Lookup) rethrows -> [[UInt8]] {
        precondition(oldSize >= 1 && oldSize <= size)
        var out: [[UInt8]] = []
        try subproof(oldSize, start: 0, count: size, complete: true, lookup: lookup, &out)
        return out
    }

    private static func subproof(_ m: UInt64, start: UInt64, count n: UInt64, complete: Bool, lookup: Lookup, _ out: inout [[UInt8]]) rethrows {
        if m == n {
            if !complete { out.append(try rangeHash(start: start, count: n, lookup: lookup)) }
            return
        }
        let k = largestPowerOfTwo(below: n)
        if m <= k {
            try subproof(m, start: start, count: k, complete: complete, lookup: lookup, &out)
            out.append(try rangeHash(start: start + k, count: n - k, lookup: lookup))
        } else {
            try subproof(m - k, start: start + k, count: n - k, complete: false, lookup: lookup, &out)
            out.append(try rangeHash(start: start, count: k, lookup: lookup))
        }
    }

    /// RFC 9162 §2.1.3 inclusion proof of leaf `index` in the tree of `size` leaves.
    public static func inclusionProof(index: UInt64, size: UInt64, lookup: Lookup) rethrows -> [[UInt8]] {
        precondition(index < size)
        var out: [[UInt8]] = []
        var start: UInt64 = 0
        var n = size
        var m = index
        // Collected top-down; RFC order is bottom-up.
        while n > 1 {
            let k = largestPowerOfTwo(below: n)
            if m < k {
                out.append(try rangeHash(start: start + k, count: n - k, lookup: lookup))
                n = k
            } else {
                out.append(try rangeHash(start: start, count: k, lookup: lookup))
                start += k
                m -= k
                n -= k
            }
        }
        return out.reversed()
    }

    /// The largest power of two strictly below `n` (n ≥ 2).
    static func largestPowerOfTwo(below n: UInt64) -> UInt64 {
        precondition(n >= 2)
        return UInt64(1) << UInt64(63 - (n - 1).leadingZeroBitCount)
    }
}

/// An in-memory history tree: the complete subtrees by level, appended leaf by leaf. For tests,
/// benchmarks and the pure sync logic; the SQLite store keeps the same nodes in a table.
public struct MemoryHistoryTree: Sendable {
    /// levels[l][i] = node (l, i).
    public private(set) var levels: [[[UInt8]]] = [[]]

    public init() {}

    public init(blockHashes: [[UInt8]]) {
        for h in blockHashes { append(blockHash: h) }
    }

    public var size: UInt64 { UInt64(levels[0].count) }

    public func node(_ level: Int, _ index: UInt64) -> [UInt8] { levels[level][Int(index)] }

    public mutating func append(blockHash: [UInt8]) {
        let levels = self.levels
        let nodes = HistoryTree.completed(leafIndex: size, leafHash: Merkle.leafHash(blockHash)) { l, i in levels[l][Int(i)] }
        for n in nodes {
            if self.levels.count <= n.level { self.levels.append([]) }
            self.levels[n.level].append(n.hash)
        }
    }

    /// Cuts the tree back to its first `size` leaves.
    public mutating func truncate(to size: UInt64) {
        for l in levels.indices {
            let keep = Int(size >> UInt64(l))
            if levels[l].count > keep { levels[l].removeLast(levels[l].count - keep) }
        }
    }

    public var root: [UInt8] { HistoryTree.root(size: size, lookup: node) }
    public func root(size: UInt64) -> [UInt8] { HistoryTree.root(size: size, lookup: node) }
    public func consistencyProof(from oldSize: UInt64) -> [[UInt8]] {
        HistoryTree.consistencyProof(oldSize: oldSize, size: size, lookup: node)
    }
}

/// The right edge of a history tree: its complete subtrees, largest first, at most log2(n)+1
/// hashes. Enough to append leaves and compute the root of everything so far, so a verifier
/// can stream a chain of any length in O(log n) memory.
public struct HistoryFrontier: Sendable, Hashable {
    var nodes: [(level: Int, hash: [UInt8])] = []
    public private(set) var size: UInt64 = 0

    public init() {}

    public mutating func append(blockHash: [UInt8]) {
        var node = (level: 0, hash: Merkle.leafHash(blockHash))
        while let last = nodes.last, last.level == node.level {
            nodes.removeLast()
            node = (node.level + 1, Merkle.nodeHash(last.hash, node.hash))
        }
        nodes.append(node)
        size += 1
    }

    /// MTH over every leaf appended (RFC 6962 splits at the largest power of two, so the root
    /// folds the subtrees from the smallest, rightmost one).
    public var root: [UInt8] {
        guard var acc = nodes.last?.hash else { return Merkle.emptyRoot }
        for n in nodes.dropLast().reversed() { acc = Merkle.nodeHash(n.hash, acc) }
        return acc
    }

    public static func == (a: Self, b: Self) -> Bool { a.size == b.size && a.nodes.map(\.hash) == b.nodes.map(\.hash) }
    public func hash(into h: inout Hasher) {
        h.combine(size)
        for n in nodes { h.combine(n.hash) }
    }
}
