import Crypto

/// RFC 6962 / RFC 9162 Merkle tree hashing, inclusion proofs and consistency proofs.
///
/// Leaf hash = SHA-256(0x00 ‖ leaf), node hash = SHA-256(0x01 ‖ left ‖ right), the empty tree
/// hashes to SHA-256 of the empty string. Functions take leaf *hashes* so callers can cache them.
public enum Merkle {
    public static let emptyRoot: [UInt8] = SHA.hash([])

    public static func leafHash(_ leaf: [UInt8]) -> [UInt8] { SHA.hash(prefix: 0x00, leaf) }

    public static func nodeHash(_ left: [UInt8], _ right: [UInt8]) -> [UInt8] { SHA.hash(prefix: 0x01, left, right) }

    /// The tree head MTH(D[n]) over leaf hashes.
    public static func root(leafHashes: [[UInt8]]) -> [UInt8] {
        root(leafHashes[...])
    }

    static func root(_ level: ArraySlice<[UInt8]>) -> [UInt8] {
        if level.isEmpty { return emptyRoot }
        if level.count == 1 { return level.first! }
        var buf = [UInt8](repeating: 0, count: level.count * 32)
        for (i, h) in level.enumerated() {
            precondition(h.count == 32, "Merkle nodes are 32-byte hashes")
            buf.replaceSubrange(i * 32..<(i + 1) * 32, with: h)
        }
        return reduce(&buf, count: level.count)
    }

    /// The tree head over raw leaves (leaf hashes computed here, straight into the work buffer).
    public static func root(leaves: [[UInt8]]) -> [UInt8] {
        if leaves.isEmpty { return emptyRoot }
        var buf = [UInt8](repeating: 0, count: leaves.count * 32)
        buf.withUnsafeMutableBytes { b in
            var prefix: UInt8 = 0
            for (i, leaf) in leaves.enumerated() {
                var h = SHA256()
                withUnsafeBytes(of: &prefix) { h.update(bufferPointer: $0) }
                h.update(data: leaf)
                h.finalize().withUnsafeBytes { b.baseAddress!.advanced(by: i * 32).copyMemory(from: $0.baseAddress!, byteCount: 32) }
            }
        }
        return reduce(&buf, count: leaves.count)
    }

    /// Reduces `count` 32-byte nodes in `buf` to the root, in place. Pairing adjacent nodes and
    /// promoting an odd last node yields exactly RFC 6962's split at the largest power of two below n.
    static func reduce(_ buf: inout [UInt8], count: Int) -> [UInt8] {
        var n = count
        var input = [UInt8](repeating: 0x01, count: 65)
        buf.withUnsafeMutableBytes { b in
            input.withUnsafeMutableBytes { inp in
                while n > 1 {
                    var out = 0
                    var i = 0
                    while i + 1 < n {
                        inp.baseAddress!.advanced(by: 1).copyMemory(from: b.baseAddress!.advanced(by: i * 32), byteCount: 64)
                        var hasher = SHA256()
                        hasher.update(bufferPointer: UnsafeRawBufferPointer(inp))
                        hasher.finalize().withUnsafeBytes { b.baseAddress!.advanced(by: out * 32).copyMemory(from: $0.baseAddress!, byteCount: 32) }
                        out += 1
                        i += 2
                    }
                    if i < n {
                        b.baseAddress!.advanced(by: out * 32).copyMemory(from: b.baseAddress!.advanced(by: i * 32), byteCount: 32)
                        out += 1
                    }
                    n = out
                }
            }
        }
        return Array(buf[0..<32])
    }

    /// Largest power of two strictly below `n` (n ≥ 2).
    static func split(_ n: Int) -> Int {
        var k = 1
        while k << 1 < n { k <<= 1 }
        return k
    }

    /// PATH(m, D[n]) of RFC 6962 §2.1.1: the audit path for leaf `index`.
    public static func inclusionProof(index: Int, leafHashes: [[UInt8]]) -> [[UInt8]] {
        precondition(index >= 0 && index < leafHashes.count, "leaf index out of range")
        var proof = [[UInt8]]()
        path(index, leafHashes[...], &proof)
        return proof
    }

    private static func path(_ m: Int, _ d: ArraySlice<[UInt8]>, _ out: inout [[UInt8]]) {
        let n = d.count
        if n <= 1 { return }
        let k = split(n)
        let lo = d.startIndex
        if m < k {
            path(m, d[lo..<lo + k], &out)
            out.append(root(d[(lo + k)...]))
        } else {
            path(m - k, d[(lo + k)...], &out)
            out.append(root(d[lo..<lo + k]))
        }
    }

    /// PROOF(m, D[n]) of RFC 6962 §2.1.2: proves the tree of the first `oldSize` leaves is a prefix.
    public static func consistencyProof(oldSize: Int, leafHashes: [[UInt8]]) -> [[UInt8]] {
        precondition(oldSize > 0 && oldSize <= leafHashes.count, "old size out of range")
        var proof = [[UInt8]]()
        subproof(oldSize, leafHashes[...], true, &proof)
        return proof
    }

    private static func subproof(_ m: Int, _ d: ArraySlice<[UInt8]>, _ complete: Bool, _ out: inout [[UInt8]]) {
        let n = d.count
        if m == n {
            if !complete { out.append(root(d)) }
            return
        }
        let k = split(n)
        let lo = d.startIndex
        if m <= k {
            subproof(m, d[lo..<lo + k], complete, &out)
            out.append(root(d[(lo + k)...]))
        } else {
            subproof(m - k, d[(lo + k)...], false, &out)
            out.append(root(d[lo..<lo + k]))
        }
    }

    static func proofError(_ why: String) -> KianaCoreError { KianaCoreError(.invalidProof, why) }

    /// RFC 9162 §2.1.3.2: verifies that `leafHash` is leaf `index` of the tree of `treeSize` with `root`.
    public static func verifyInclusion(index: UInt64, treeSize: UInt64, leafHash: [UInt8], proof: [[UInt8]], root: [UInt8]) throws(KianaCoreError) {
        guard index < treeSize else { throw proofError("leaf index \(index) is not below tree size \(treeSize)") }
        guard leafHash.count == 32 else { throw proofError("leaf hash must be 32 bytes, not \(leafHash.count)") }
        var fn = index
        var sn = treeSize - 1
        var r = leafHash
        for p in proof {
            guard sn != 0 else { throw proofError("inclusion proof is longer than the tree is deep") }
            if fn & 1 == 1 || fn == sn {
                r = nodeHash(p, r)
                if fn & 1 == 0 {
                    while fn & 1 == 0 && fn != 0 {
                        fn >>= 1
                        sn >>= 1
                    }
                }
            } else {
                r = nodeHash(r, p)
            }
            fn >>= 1
            sn >>= 1
        }
        guard sn == 0 else { throw proofError("inclusion proof is too short") }
        guard r == root else { throw proofError("inclusion proof does not lead to the root") }
    }

    /// RFC 9162 §2.1.4.2: verifies that the tree (size1, root1) is a prefix of (size2, root2).
    public static func verifyConsistency(size1: UInt64, size2: UInt64, root1: [UInt8], root2: [UInt8], proof: [[UInt8]]) throws(KianaCoreError) {
        guard size1 <= size2 else { throw proofError("old size \(size1) is larger than new size \(size2)") }
        guard size1 > 0 else { throw proofError("a consistency proof from the empty tree proves nothing") }
        if size1 == size2 {
            guard proof.isEmpty else { throw proofError("equal sizes need an empty proof") }
            guard root1 == root2 else { throw proofError("equal sizes but different roots") }
            return
        }
        guard !proof.isEmpty else { throw proofError("empty consistency proof") }
        var path = proof
        if size1 & (size1 - 1) == 0 { path.insert(root1, at: 0) }
        var fn = size1 - 1
        var sn = size2 - 1
        while fn & 1 == 1 {
            fn >>= 1
            sn >>= 1
        }
        var fr = path[0]
        var sr = path[0]
        for c in path.dropFirst() {
            guard sn != 0 else { throw proofError("consistency proof is too long") }
            if fn & 1 == 1 || fn == sn {
                fr = nodeHash(c, fr)
                sr = nodeHash(c, sr)
                if fn & 1 == 0 {
                    while fn & 1 == 0 && fn != 0 {
                        fn >>= 1
                        sn >>= 1
                    }
                }
            } else {
                sr = nodeHash(sr, c)
            }
            fn >>= 1
            sn >>= 1
        }
        guard sn == 0 else { throw proofError("consistency proof is too short") }
        guard fr == root1 else { throw proofError("consistency proof does not lead to the old root") }
        guard sr == root2 else { throw proofError("consistency proof does not lead to the new root") }
    }
}
