import Crypto
import Foundation

/// Vectors of one dimension in one contiguous row-major buffer; similarity is the dot product
/// (the vectors are L2-normalised, so it is the cosine).
public struct VectorMatrix: Sendable {
    public let dimension: Int
    public private(set) var storage: [Float] = []
    public var count: Int { storage.count / dimension }

    public init(dimension: Int) { self.dimension = dimension }

    public mutating func append(_ v: [Float]) {
        precondition(v.count == dimension, "vector has \(v.count) dimensions, expected \(dimension)")
        storage.append(contentsOf: v)
    }

    public mutating func reserve(_ n: Int) { storage.reserveCapacity(n * dimension) }

    public func row(_ i: Int) -> [Float] { Array(storage[(i * dimension)..<((i + 1) * dimension)]) }

    @inline(__always)
    func similarity(_ i: Int, _ q: UnsafePointer<Float>, _ base: UnsafePointer<Float>) -> Float {
        Kernels.dot(base + i * dimension, q, dimension)
    }

    /// Exact top-k by a full SIMD scan; `allowed` filters labels.
    public func exactSearch(_ query: [Float], k: Int, allowed: ((Int) -> Bool)? = nil) -> [(label: Int, score: Float)] {
        guard k > 0, count > 0 else { return [] }
        var heap = BoundedHeap(capacity: k)
        storage.withUnsafeBufferPointer { b in
            query.withUnsafeBufferPointer { q in
                for i in 0..<count where allowed?(i) ?? true {
                    heap.offer(i, similarity(i, q.baseAddress!, b.baseAddress!))
                }
            }
        }
        return heap.sortedDescending()
    }
}

/// Keeps the k best (highest-score) labels seen.
struct BoundedHeap {
    let capacity: Int
    private(set) var items: [(label: Int, score: Float)] = []  // min-heap on score
    init(capacity: Int) {
        self.capacity = capacity
        items.reserveCapacity(capacity)
    }

    var worst: Float { items.first?.score ?? -.infinity }
    var isFull: Bool { items.count >= capacity }

    mutating func offer(_ label: Int, _ score: Float) {
        if items.count < capacity {
            items.append((label, score))
            siftUp(items.count - 1)
        } else if score > items[0].score {
            items[0] = (label, score)
            siftDown(0)
        }
    }
    mutating func popWorst() -> (label: Int, score: Float)? {
        guard !items.isEmpty else { return nil }
        let top = items[0]
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            siftDown(0)
        }
        return top
    }
    private mutating func siftUp(_ i0: Int) {
        var i = i0
        while i > 0 {
            let p = (i - 1) / 2
            if items[i].score < items[p].score {
                items.swapAt(i, p)
                i = p
            } else {
                break
            }
        }
    }
    private mutating func siftDown(_ i0: Int) {
        var i = i0
        while true {
            let l = 2 * i + 1
            let r = l + 1
            var m = i
            if l < items.count && items[l].score < items[m].score { m = l }
            if r < items.count && items[r].score < items[m].score { m = r }
            if m == i { return }
            items.swapAt(i, m)
            i = m
        }
    }
    func sortedDescending() -> [(label: Int, score: Float)] { items.sorted { $0.score > $1.score || ($0.score == $1.score && $0.label < $1.label) } }
}

/// Max-heap of candidates by score (the best candidate first).
struct CandidateHeap {
    private(set) var items: [(label: Int, score: Float)] = []
    var isEmpty: Bool { items.isEmpty }
    mutating func push(_ label: Int, _ score: Float) {
        items.append((label, score))
        var i = items.count - 1
        while i > 0 {
            let p = (i - 1) / 2
            if items[i].score > items[p].score {
                items.swapAt(i, p)
                i = p
            } else {
                break
            }
        }
    }
    mutating func pop() -> (label: Int, score: Float) {
        let top = items[0]
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1
                let r = l + 1
                var m = i
                if l < items.count && items[l].score > items[m].score { m = l }
                if r < items.count && items[r].score > items[m].score { m = r }
                if m == i { break }
                items.swapAt(i, m)
                i = m
            }
        }
        return top
    }
}

/// Hierarchical navigable small-world graph (Malkov & Yashunin, 2016) over a `VectorMatrix`:
/// layers drawn with mL = 1/ln M, at most M links per node above layer 0 and 2M on layer 0,
/// neighbours chosen by the paper's heuristic (Algorithm 4). Deleted labels stay in the graph
/// for navigation and are filtered from results.
public struct HNSW: Sendable {
    public let m: Int
    public let efConstruction: Int
    public private(set) var vectors: VectorMatrix
    /// links[node][layer] = neighbour labels
    private(set) var links: [[[Int32]]] = []
    private(set) var entry: Int = -1
    private(set) var maxLayer: Int = -1
    public private(set) var deleted: Set<Int> = []
    private var rng: SplitMix64
    /// Scratch marks reused by inserts (a fresh set per insert would cost O(n) each).
    private var scratch = VisitedSet()

    public var count: Int { vectors.count }
    public var liveCount: Int { count - deleted.count }

    public init(dimension: Int, m: Int = 16, efConstruction: Int = 100, seed: UInt64 = 42) {
        self.m = max(2, m)
        self.efConstruction = max(efConstruction, m)
        vectors = VectorMatrix(dimension: dimension)
        rng = SplitMix64(seed: seed)
    }

    func maxLinks(_ layer: Int) -> Int { layer == 0 ? 2 * m : m }

    mutating func randomLayer() -> Int {
        let u = Double(rng.next() >> 11) / Double(1 << 53)
        return min(Int(-log(max(u, 1e-300)) / log(Double(m))), 16)
    }

    /// Adds a vector; returns its label (labels are dense: 0, 1, 2, …).
    @discardableResult
    public mutating func insert(_ v: [Float]) -> Int {
        let label = vectors.count
        vectors.append(v)
        let level = randomLayer()
        links.append(Array(repeating: [], count: level + 1))
        guard entry >= 0 else {
            entry = label
            maxLayer = level
            return label
        }
        let vecs = vectors
        var visited = scratch
        scratch = VisitedSet()
        defer { scratch = visited }
        vecs.storage.withUnsafeBufferPointer { b in
            v.withUnsafeBufferPointer { q in
                let base = b.baseAddress!
                let qp = q.baseAddress!
                var ep = entry
                var epScore = vecs.similarity(ep, qp, base)
                if maxLayer > level {
                    for layer in stride(from: maxLayer, to: level, by: -1) {
                        (ep, epScore) = greedy(qp, base, ep, epScore, layer)
                    }
                }
                var entries = [(ep, epScore)]
                for layer in stride(from: min(level, maxLayer), through: 0, by: -1) {
                    let found = searchLayer(qp, base, entries, ef: efConstruction, layer: layer, visited: &visited)
                    let chosen = selectNeighbours(found, max: m, base: base)
                    links[label][layer] = chosen.map { Int32($0.label) }
                    for c in chosen {
                        var nl = links[c.label][layer]
                        nl.append(Int32(label))
                        if nl.count > maxLinks(layer) {
                            let cp = base + c.label * vecs.dimension
                            let scored = nl.map { (label: Int($0), score: vecs.similarity(Int($0), cp, base)) }.sorted { $0.score > $1.score }
                            nl = selectNeighbours(scored, max: maxLinks(layer), base: base).map { Int32($0.label) }
                        }
                        links[c.label][layer] = nl
                    }
                    entries = found
                }
            }
        }
        if level > maxLayer {
            maxLayer = level
            entry = label
        }
        return label
    }

    public mutating func markDeleted(_ label: Int) { if label < count { deleted.insert(label) } }

    func greedy(_ q: UnsafePointer<Float>, _ base: UnsafePointer<Float>, _ start: Int, _ startScore: Float, _ layer: Int) -> (Int, Float) {
        var cur = start
        var best = startScore
        var changed = true
        while changed {
            changed = false
            for n in links[cur][layer] {
                let s = vectors.similarity(Int(n), q, base)
                if s > best {
                    best = s
                    cur = Int(n)
                    changed = true
                }
            }
        }
        return (cur, best)
    }

    /// Beam search on one layer; returns up to ef results, best first.
    func searchLayer(
        _ q: UnsafePointer<Float>, _ base: UnsafePointer<Float>, _ entries: [(Int, Float)], ef: Int, layer: Int,
        visited: inout VisitedSet
    ) -> [(label: Int, score: Float)] {
        visited.reset(count)
        var candidates = CandidateHeap()
        var results = BoundedHeap(capacity: ef)
        for (e, s) in entries where visited.insert(e) {
            candidates.push(e, s)
            results.offer(e, s)
        }
        while !candidates.isEmpty {
            let c = candidates.pop()
            if results.isFull && c.score < results.worst { break }
            for n in links[c.label][layer] {
                let ni = Int(n)
                guard visited.insert(ni) else { continue }
                let s = vectors.similarity(ni, q, base)
                if !results.isFull || s > results.worst {
                    candidates.push(ni, s)
                    results.offer(ni, s)
                }
            }
        }
        return results.sortedDescending()
    }

    func searchLayer(_ q: UnsafePointer<Float>, _ base: UnsafePointer<Float>, _ entries: [(Int, Float)], ef: Int, layer: Int) -> [(label: Int, score: Float)] {
        var v = VisitedSet()
        return searchLayer(q, base, entries, ef: ef, layer: layer, visited: &v)
    }

    /// Algorithm 4: keep a candidate only if it is closer to the query than to every neighbour kept so far.
    func selectNeighbours(_ sorted: [(label: Int, score: Float)], max: Int, base: UnsafePointer<Float>) -> [(label: Int, score: Float)] {
        var kept: [(label: Int, score: Float)] = []
        var pruned: [(label: Int, score: Float)] = []
        for c in sorted {
            if kept.count >= max { break }
            let cp = base + c.label * vectors.dimension
            if kept.allSatisfy({ vectors.similarity($0.label, cp, base) < c.score }) { kept.append(c) } else { pruned.append(c) }
        }
        // keepPrunedConnections: fill up with the best pruned ones
        for p in pruned where kept.count < max { kept.append(p) }
        return kept
    }

    /// Approximate top-k; `ef` (≥ k) trades speed for recall.
    public func search(_ query: [Float], k: Int, ef: Int, visited: inout VisitedSet, allowed: ((Int) -> Bool)? = nil) -> [(label: Int, score: Float)] {
        guard entry >= 0, k > 0 else { return [] }
        return vectors.storage.withUnsafeBufferPointer { b in
            query.withUnsafeBufferPointer { q in
                let base = b.baseAddress!
                let qp = q.baseAddress!
                var ep = entry
                var s = vectors.similarity(ep, qp, base)
                if maxLayer > 0 { for layer in stride(from: maxLayer, to: 0, by: -1) { (ep, s) = greedy(qp, base, ep, s, layer) } }
                let filtering = !deleted.isEmpty || allowed != nil
                let found = searchLayer(qp, base, [(ep, s)], ef: max(ef, k) * (filtering ? 2 : 1), layer: 0, visited: &visited)
                var out: [(label: Int, score: Float)] = []
                for r in found where !deleted.contains(r.label) && (allowed?(r.label) ?? true) {
                    out.append(r)
                    if out.count == k { break }
                }
                return out
            }
        }
    }

    public func search(_ query: [Float], k: Int, ef: Int, allowed: ((Int) -> Bool)? = nil) -> [(label: Int, score: Float)] {
        var v = VisitedSet()
        return search(query, k: k, ef: ef, visited: &v, allowed: allowed)
    }

    // MARK: persistence

    static let magic: [UInt8] = Array("KIANA-HNSW-1".utf8)

    /// The graph and its vectors in a little-endian binary form.
    public func serialized() -> Data {
        var w = ByteWriter()
        w.bytes(Self.magic)
        for x in [vectors.dimension, m, efConstruction, count, entry, maxLayer] { w.i64(Int64(x)) }
        w.i64(Int64(deleted.count))
        for d in deleted.sorted() { w.i64(Int64(d)) }
        for node in links {
            w.i64(Int64(node.count))
            for layer in node {
                w.i64(Int64(layer.count))
                for n in layer { w.i32(n) }
            }
        }
        for f in vectors.storage { w.u32(f.bitPattern) }
        w.bytes(Array(SHA256.hash(data: w.data)))  // trailer: damage anywhere is detected
        return w.data
    }

    public init(serialized whole: Data) throws(KianaAIError) {
        func bad(_ why: String) -> KianaAIError { KianaAIError(.index, "HNSW index file is damaged (\(why)); run `kiana index rebuild`") }
        guard whole.count >= 32 else { throw bad("too short") }
        let d = whole.subdata(in: whole.startIndex..<(whole.endIndex - 32))
        guard Array(SHA256.hash(data: d)) == [UInt8](whole.suffix(32)) else { throw bad("checksum mismatch") }
        var r = ByteReader(d)
        guard r.bytes(Self.magic.count) == Self.magic else { throw bad("wrong header") }
        guard let dim = r.int(), let m = r.int(), let efc = r.int(), let n = r.int(), let entry = r.int(), let maxLayer = r.int(),
            dim > 0, dim <= 65536, m >= 2, m <= 1024, n >= 0, n <= 100_000_000, entry >= -1, entry < max(n, 1), maxLayer >= -1, maxLayer <= 64
        else { throw bad("header fields") }
        guard let nd = r.int(), nd >= 0, nd <= n else { throw bad("deleted count") }
        var del = Set<Int>()
        for _ in 0..<nd {
            guard let x = r.int(), x >= 0, x < n else { throw bad("deleted label") }
            del.insert(x)
        }
        var links: [[[Int32]]] = []
        links.reserveCapacity(n)
        for _ in 0..<n {
            guard let layers = r.int(), layers >= 1, layers <= 65 else { throw bad("layer count") }
            var node: [[Int32]] = []
            for l in 0..<layers {
                guard let c = r.int(), c >= 0, c <= (l == 0 ? 2 * m : m) else { throw bad("link count") }
                var layer: [Int32] = []
                for _ in 0..<c {
                    guard let x = r.i32(), x >= 0, Int(x) < n else { throw bad("link target") }
                    layer.append(x)
                }
                node.append(layer)
            }
            links.append(node)
        }
        guard r.remaining == n * dim * 4 else { throw bad("vector data size") }
        var vm = VectorMatrix(dimension: dim)
        vm.reserve(n)
        var row = [Float](repeating: 0, count: dim)
        for _ in 0..<n {
            for j in 0..<dim { row[j] = Float(bitPattern: r.u32()!) }
            vm.append(row)
        }
        self.m = m
        self.efConstruction = efc
        self.vectors = vm
        self.links = links
        self.entry = entry
        self.maxLayer = maxLayer
        self.deleted = del
        self.rng = SplitMix64(seed: UInt64(n) &+ 42)
    }
}

/// Visited marks for graph search, reset in O(1) by bumping a generation.
public struct VisitedSet: Sendable {
    var marks: [UInt32] = []
    var generation: UInt32 = 0
    public init() {}
    mutating func reset(_ n: Int) {
        if marks.count < n { marks.append(contentsOf: repeatElement(0, count: n - marks.count)) }
        generation &+= 1
        if generation == 0 {
            for i in marks.indices { marks[i] = 0 }
            generation = 1
        }
    }
    /// True when newly inserted.
    @inline(__always) mutating func insert(_ i: Int) -> Bool {
        if marks[i] == generation { return false }
        marks[i] = generation
        return true
    }
}

/// A small seeded generator (SplitMix64): HNSW layer draws and the benchmarks' synthetic data.
public struct SplitMix64: Sendable {
    var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E3779B97F4A7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58476D1CE4E5B9
        z = (z ^ (z >> 27)) &* 0x94D049BB133111EB
        return z ^ (z >> 31)
    }
}

struct ByteWriter {
    var data = Data()
    mutating func bytes(_ b: [UInt8]) { data.append(contentsOf: b) }
    mutating func i64(_ x: Int64) { withUnsafeBytes(of: x.littleEndian) { data.append(contentsOf: $0) } }
    mutating func i32(_ x: Int32) { withUnsafeBytes(of: x.littleEndian) { data.append(contentsOf: $0) } }
    mutating func u32(_ x: UInt32) { withUnsafeBytes(of: x.littleEndian) { data.append(contentsOf: $0) } }
}

struct ByteReader {
    let data: Data
    var offset: Int
    init(_ d: Data) {
        data = d
        offset = d.startIndex
    }
    var remaining: Int { data.endIndex - offset }
    mutating func bytes(_ n: Int) -> [UInt8]? {
        guard n <= remaining else { return nil }
        defer { offset += n }
        return [UInt8](data[offset..<(offset + n)])
    }
    mutating func fixed<T: FixedWidthInteger>(_: T.Type) -> T? {
        let n = MemoryLayout<T>.size
        guard n <= remaining else { return nil }
        defer { offset += n }
        return data.withUnsafeBytes { T(littleEndian: $0.loadUnaligned(fromByteOffset: offset - data.startIndex, as: T.self)) }
    }
    mutating func int() -> Int? { fixed(Int64.self).flatMap { Int(exactly: $0) } }
    mutating func i32() -> Int32? { fixed(Int32.self) }
    mutating func u32() -> UInt32? { fixed(UInt32.self) }
}
