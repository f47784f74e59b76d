import Foundation
import KianaCore
import KianaTestSupport
import Testing

/// RFC 6962 / 9162 behaviour checked against transparency-dev/merkle's published vectors.
@Suite struct MerkleVectorTests {
    struct InclusionCase: Decodable {
        var leafIdx: UInt64
        var treeSize: UInt64
        var root: String?
        var leafHash: String?
        var proof: [String]?
        var desc: String
        var wantErr: Bool
    }

    struct ConsistencyCase: Decodable {
        var size1: UInt64
        var size2: UInt64
        var root1: String?
        var root2: String?
        var proof: [String]?
        var desc: String
        var wantErr: Bool
    }

    static let base = "vectors/merkle-rfc6962"
    static let inclusionFiles = Shared.jsonFiles(base + "/inclusion")
    static let consistencyFiles = Shared.jsonFiles(base + "/consistency")

    static func b64(_ s: String?) -> [UInt8] { s.flatMap { Data(base64Encoded: $0) }.map { [UInt8]($0) } ?? [] }

    static func load<T: Decodable>(_ rel: String) throws -> T {
        try JSONDecoder().decode(T.self, from: Data(contentsOf: Shared.root.appendingPathComponent(rel)))
    }

    @Test func vectorsArePresent() {
        if Self.inclusionFiles.isEmpty || Self.consistencyFiles.isEmpty {
            if Shared.isCI { Issue.record("Merkle vectors missing under \(Shared.root.path)") }
            return
        }
        #expect(Self.inclusionFiles.count > 50)
        #expect(Self.consistencyFiles.count > 50)
    }

    @Test(arguments: inclusionFiles)
    func inclusion(_ file: String) throws {
        let c: InclusionCase = try Self.load(file)
        let proof = (c.proof ?? []).map { Self.b64($0) }
        var failure: KianaCoreError?
        do {
            try Merkle.verifyInclusion(index: c.leafIdx, treeSize: c.treeSize, leafHash: Self.b64(c.leafHash), proof: proof, root: Self.b64(c.root))
        } catch { failure = error }
        #expect((failure != nil) == c.wantErr, "\(file): \(c.desc) — \(failure.map { "\($0)" } ?? "accepted")")
    }

    @Test(arguments: consistencyFiles)
    func consistency(_ file: String) throws {
        let c: ConsistencyCase = try Self.load(file)
        let proof = (c.proof ?? []).map { Self.b64($0) }
        var failure: KianaCoreError?
        do {
            try Merkle.verifyConsistency(size1: c.size1, size2: c.size2, root1: Self.b64(c.root1), root2: Self.b64(c.root2), proof: proof)
        } catch { failure = error }
        #expect((failure != nil) == c.wantErr, "\(file): \(c.desc) — \(failure.map { "\($0)" } ?? "accepted")")
    }

    /// The reference tree of the vectors' README: our roots, and the proofs we generate, match.
    static let referenceLeaves = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
        .map { Hex.decode($0)! }
    static let referenceRoots = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ]

    @Test func referenceTreeRoots() {
        #expect(Hex.encode(Merkle.root(leafHashes: [])) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        let hashes = Self.referenceLeaves.map(Merkle.leafHash)
        for n in 1...8 {
            #expect(Hex.encode(Merkle.root(leafHashes: Array(hashes.prefix(n)))) == Self.referenceRoots[n - 1], "size \(n)")
        }
    }

    @Test func generatedProofsMatchHappyPathVectors() throws {
        let hashes = Self.referenceLeaves.map(Merkle.leafHash)
        var checked = 0
        for file in Self.inclusionFiles where file.hasSuffix("happy-path.json") {
            let c: InclusionCase = try Self.load(file)
            guard c.treeSize <= 8, Self.b64(c.root) == Merkle.root(leafHashes: Array(hashes.prefix(Int(c.treeSize)))) else { continue }
            let mine = Merkle.inclusionProof(index: Int(c.leafIdx), leafHashes: Array(hashes.prefix(Int(c.treeSize))))
            #expect(mine == (c.proof ?? []).map { Self.b64($0) }, "\(file)")
            checked += 1
        }
        for file in Self.consistencyFiles where file.hasSuffix("happy-path.json") {
            let c: ConsistencyCase = try Self.load(file)
            guard c.size2 <= 8, c.size1 > 0, Self.b64(c.root2) == Merkle.root(leafHashes: Array(hashes.prefix(Int(c.size2)))) else { continue }
            let mine = c.size1 == c.size2 ? [] : Merkle.consistencyProof(oldSize: Int(c.size1), leafHashes: Array(hashes.prefix(Int(c.size2))))
            #expect(mine == (c.proof ?? []).map { Self.b64($0) }, "\(file)")
            checked += 1
        }
        if !Self.inclusionFiles.isEmpty { #expect(checked >= 6) }
    }

    /// Every proof we generate for trees up to 40 leaves verifies, and a flipped bit does not.
    @Test func generatedProofsVerifyAndDetectTampering() throws {
        let hashes = (0..<40).map { Merkle.leafHash([UInt8($0)]) }
        for n in 1...40 {
            let tree = Array(hashes.prefix(n))
            let root = Merkle.root(leafHashes: tree)
            for i in 0..<n {
                let p = Merkle.inclusionProof(index: i, leafHashes: tree)
                try Merkle.verifyInclusion(index: UInt64(i), treeSize: UInt64(n), leafHash: tree[i], proof: p, root: root)
                if !p.isEmpty {
                    var bad = p
                    bad[0][0] ^= 1
                    #expect(throws: KianaCoreError.self) {
                        try Merkle.verifyInclusion(index: UInt64(i), treeSize: UInt64(n), leafHash: tree[i], proof: bad, root: root)
                    }
                }
            }
            for m in 1..<n {
                let p = Merkle.consistencyProof(oldSize: m, leafHashes: tree)
                let old = Merkle.root(leafHashes: Array(tree.prefix(m)))
                try Merkle.verifyConsistency(size1: UInt64(m), size2: UInt64(n), root1: old, root2: root, proof: p)
                #expect(throws: KianaCoreError.self) {
                    try Merkle.verifyConsistency(size1: UInt64(m), size2: UInt64(n), root1: root, root2: old, proof: p)
                }
            }
        }
    }
}
