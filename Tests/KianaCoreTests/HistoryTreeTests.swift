import KianaCore
import Testing

/// The history tree computed from stored complete subtrees must equal RFC 6962 over all leaves
/// (`Merkle`, itself checked against the published vectors in MerkleVectorTests).
@Suite struct HistoryTreeTests {
    static func hashes(_ n: Int) -> [[UInt8]] { (0..<n).map { SHA.hash(Array("block \($0)".utf8)) } }

    @Test("Roots, consistency and inclusion proofs match the whole-tree functions", arguments: [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 64, 100, 129])
    func matchesWholeTree(_ n: Int) throws {
        let blocks = Self.hashes(n)
        let leaves = blocks.map(Merkle.leafHash)
        let tree = MemoryHistoryTree(blockHashes: blocks)
        #expect(tree.size == UInt64(n))
        #expect(tree.root == Merkle.root(leafHashes: leaves))
        for m in 1...n {
            #expect(tree.root(size: UInt64(m)) == Merkle.root(leafHashes: Array(leaves.prefix(m))))
            let proof = tree.consistencyProof(from: UInt64(m))
            #expect(proof == Merkle.consistencyProof(oldSize: m, leafHashes: leaves))
            try Merkle.verifyConsistency(size1: UInt64(m), size2: UInt64(n), root1: tree.root(size: UInt64(m)), root2: tree.root, proof: proof)
        }
        for i in 0..<n {
            let proof = HistoryTree.inclusionProof(index: UInt64(i), size: UInt64(n), lookup: tree.node)
            #expect(proof == Merkle.inclusionProof(index: i, leafHashes: leaves))
        }
    }

    @Test("Cutting back and appending another branch equals building that chain afresh", arguments: [(10, 3), (64, 63), (100, 37), (9, 0)])
    func truncateThenAppend(_ n: Int, _ keep: Int) {
        let first = Self.hashes(n)
        let other = (0..<(n - keep + 5)).map { SHA.hash(Array("other \($0)".utf8)) }
        var tree = MemoryHistoryTree(blockHashes: first)
        tree.truncate(to: UInt64(keep))
        #expect(tree.root == Merkle.root(leafHashes: first.prefix(keep).map(Merkle.leafHash)))
        for h in other { tree.append(blockHash: h) }
        let fresh = MemoryHistoryTree(blockHashes: Array(first.prefix(keep)) + other)
        #expect(tree.levels == fresh.levels)
    }

    @Test func appendingCompletesAtMostLogNNodes() {
        var tree = MemoryHistoryTree()
        var nodes = 0
        for h in Self.hashes(1024) {
            let before = tree.levels.map(\.count).reduce(0, +)
            tree.append(blockHash: h)
            let added = tree.levels.map(\.count).reduce(0, +) - before
            #expect(added <= 11)
            nodes += added
        }
        #expect(nodes == 2047)
    }
}

@Suite struct HistoryFrontierTests {
    @Test("The frontier's root equals RFC 6962 over all leaves at every size, in O(log n) hashes")
    func frontierRoot() {
        var f = HistoryFrontier()
        var leaves: [[UInt8]] = []
        #expect(f.root == Merkle.emptyRoot)
        for i in 0..<300 {
            let h = SHA.hash(Array("b\(i)".utf8))
            f.append(blockHash: h)
            leaves.append(Merkle.leafHash(h))
            #expect(f.root == Merkle.root(leafHashes: leaves), "size \(i + 1)")
            #expect(f.size == UInt64(i + 1))
        }
    }
}
