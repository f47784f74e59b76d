import Foundation

/// Hyper-parameters of a llama-architecture model, read from GGUF metadata.
public struct LlamaConfig: Sendable, Equatable {
    public var layers: Int
    public var dim: Int
    public var heads: Int
    public var kvHeads: Int
    public var headDim: Int
    public var ffn: Int
    public var vocab: Int
    public var contextLength: Int
    public var ropeBase: Float
    public var ropeDim: Int
    public var eps: Float
    public var kvDim: Int { kvHeads * headDim }
}

/// A llama-architecture model from a GGUF file: weights stay quantised in the mapping,
/// norms are copied out as floats. Immutable and shareable; generation state lives in
/// `LlamaSession`.
public final class LlamaModel: Sendable {
    public struct Layer: Sendable {
        let attnNorm: [Float], ffnNorm: [Float]
        let q: WeightMatrix, k: WeightMatrix, v: WeightMatrix, o: WeightMatrix
        let gate: WeightMatrix, up: WeightMatrix, down: WeightMatrix
    }

    public let gguf: GGUFFile
    public let config: LlamaConfig
    public let tokenizer: BPETokenizer
    let embedding: WeightMatrix
    let output: WeightMatrix
    let outputNorm: [Float]
    let layers: [Layer]
    /// The model's chat template (Jinja source) if the file has one.
    public let chatTemplate: String?
    public var name: String { gguf.metadata["general.name"]?.string ?? (gguf.path as NSString).lastPathComponent }

    /// Opens and validates a GGUF file (one-line errors for missing, truncated or unsupported files).
    public convenience init(path: String) throws(KianaAIError) {
        try self.init(gguf: GGUFFile(path: path))
    }

    public init(gguf g: GGUFFile) throws(KianaAIError) {
        gguf = g
        let m = g.metadata
        let arch = m["general.architecture"]?.string ?? "?"
        guard ["llama", "mistral"].contains(arch) else {
            throw KianaAIError(.modelCorrupt, "\(g.path): architecture \"\(arch)\" is not supported (llama is)")
        }
        func int(_ key: String) throws(KianaAIError) -> Int {
            guard let v = m["\(arch).\(key)"]?.int, v > 0, v < 1 << 24 else {
                throw KianaAIError(.modelCorrupt, "\(g.path): metadata \(arch).\(key) is missing or out of range")
            }
            return v
        }
        let dim = try int("embedding_length")
        let heads = try int("attention.head_count")
        let kvHeads = m["\(arch).attention.head_count_kv"]?.int ?? heads
        guard dim % heads == 0, kvHeads > 0, heads % kvHeads == 0 else {
            throw KianaAIError(.modelCorrupt, "\(g.path): \(heads) heads and \(kvHeads) key/value heads do not fit dimension \(dim)")
        }
        let headDim = dim / heads
        let tok = try BPETokenizer(gguf: g)
        let emb = try g.tensor("token_embd.weight")
        var cfg = LlamaConfig(
            layers: try int("block_count"), dim: dim, heads: heads, kvHeads: kvHeads, headDim: headDim,
            ffn: try int("feed_forward_length"), vocab: emb.dims.count == 2 ? emb.dims[1] : 0,
            contextLength: try int("context_length"),
            ropeBase: Float(m["\(arch).rope.freq_base"]?.double ?? 10000),
            ropeDim: m["\(arch).rope.dimension_count"]?.int ?? headDim,
            eps: Float(m["\(arch).attention.layer_norm_rms_epsilon"]?.double ?? 1e-5))
        guard cfg.ropeDim > 0, cfg.ropeDim <= headDim, cfg.ropeDim % 2 == 0, headDim % 8 == 0 else {
            throw KianaAIError(.modelCorrupt, "\(g.path): rope dimension \(cfg.ropeDim) does not fit head size \(headDim)")
        }
        guard cfg.vocab == tok.vocabularySize else {
            throw KianaAIError(.modelCorrupt, "\(g.path): embedding has \(cfg.vocab) rows but the vocabulary \(tok.vocabularySize) tokens")
        }
        if cfg.contextLength > 1 << 20 { cfg.contextLength = 1 << 20 }

        func matrix(_ name: String, rows: Int, cols: Int) throws(KianaAIError) -> WeightMatrix {
            let t = try g.tensor(name)
            guard t.dims == [cols, rows] else {
                throw KianaAIError(.modelCorrupt, "\(g.path): tensor \(name) has shape \(t.dims), expected [\(cols), \(rows)]")
            }
            guard cols % 32 == 0 else { throw KianaAIError(.modelCorrupt, "\(g.path): tensor \(name) rows of \(cols) are not a multiple of 32") }
            return WeightMatrix(base: g.pointer(t), type: t.type, rows: rows, cols: cols)
        }
        func floats(_ name: String, _ n: Int) throws(KianaAIError) -> [Float] {
            let t = try g.tensor(name)
            guard t.dims == [n] else { throw KianaAIError(.modelCorrupt, "\(g.path): tensor \(name) has shape \(t.dims), expected [\(n)]") }
            let w = WeightMatrix(base: g.pointer(t), type: t.type, rows: 1, cols: n)
            var out = [Float](repeating: 0, count: n)
            if t.type == .f32 || t.type == .f16 || n % 32 == 0 { out.withUnsafeMutableBufferPointer { w.dequantizeRow(0, into: $0.baseAddress!) } }
            return out
        }
        embedding = try matrix("token_embd.weight", rows: cfg.vocab, cols: dim)
        output = g.tensors["output.weight"] != nil ? try matrix("output.weight", rows: cfg.vocab, cols: dim) : embedding
        outputNorm = try floats("output_norm.weight", dim)
        var ls: [Layer] = []
        for i in 0..<cfg.layers {
            let p = "blk.\(i)."
            ls.append(
                Layer(
                    attnNorm: try floats(p + "attn_norm.weight", dim), ffnNorm: try floats(p + "ffn_norm.weight", dim),
                    q: try matrix(p + "attn_q.weight", rows: dim, cols: dim),
                    k: try matrix(p + "attn_k.weight", rows: cfg.kvDim, cols: dim),
                    v: try matrix(p + "attn_v.weight", rows: cfg.kvDim, cols: dim),
                    o: try matrix(p + "attn_output.weight", rows: dim, cols: dim),
                    gate: try matrix(p + "ffn_gate.weight", rows: cfg.ffn, cols: dim),
                    up: try matrix(p + "ffn_up.weight", rows: cfg.ffn, cols: dim),
                    down: try matrix(p + "ffn_down.weight", rows: dim, cols: cfg.ffn)))
        }
        layers = ls
        config = cfg
        tokenizer = tok
        chatTemplate = m["tokenizer.chat_template"]?.string
    }

    /// Bytes of KV cache per token of context (keys and values of every layer, f32).
    public var kvBytesPerToken: Int { config.layers * config.kvDim * 2 * 4 }
}

/// Generation state over one model: the KV cache, scratch buffers and the worker threads.
/// Not thread-safe; one conversation at a time. `eval` runs tokens through the network and
/// returns the last token's logits.
public final class LlamaSession {
    public let model: LlamaModel
    public let contextSize: Int
    public let pool: ComputePool
    /// Tokens currently in the cache, in order.
    public private(set) var tokens: [Int32] = []
    /// Prompt tokens are processed in batches of this many.
    public let batchSize: Int

    let keys: UnsafeMutablePointer<Float>
    let values: UnsafeMutablePointer<Float>
    // Scratch, sized for one batch.
    let x, xn, q, k, v, att, gate, up: UnsafeMutablePointer<Float>
    let scores: UnsafeMutablePointer<Float>
    var actDim: QuantizedRows
    var actFfn: QuantizedRows
    let ropeInv: [Float]
    public private(set) var logits: [Float]

    public init(model: LlamaModel, contextSize: Int = 2048, threads: Int = ProcessInfo.processInfo.activeProcessorCount, batchSize: Int = 32) {
        self.model = model
        let c = model.config
        self.contextSize = max(16, min(contextSize, c.contextLength))
        self.batchSize = max(1, batchSize)
        pool = ComputePool(threads: threads)
        let kvCount = c.layers * self.contextSize * c.kvDim
        keys = .allocate(capacity: kvCount)
        values = .allocate(capacity: kvCount)
        let b = self.batchSize
        x = .allocate(capacity: b * c.dim)
        xn = .allocate(capacity: b * c.dim)
        q = .allocate(capacity: b * c.dim)
        att = .allocate(capacity: b * c.dim)
        k = .allocate(capacity: b * c.kvDim)
        v = .allocate(capacity: b * c.kvDim)
        gate = .allocate(capacity: b * c.ffn)
        up = .allocate(capacity: b * c.ffn)
        scores = .allocate(capacity: pool.threads * self.contextSize)
        actDim = QuantizedRows(n: c.dim, capacity: b)
        actFfn = QuantizedRows(n: c.ffn, capacity: b)
        ropeInv = (0..<(c.ropeDim / 2)).map { i in Float(pow(Double(c.ropeBase), -2 * Double(i) / Double(c.ropeDim))) }
        logits = [Float](repeating: 0, count: c.vocab)
    }

    deinit {
        pool.shutdown()
        for p in [keys, values, x, xn, q, k, v, att, gate, up, scores] { p.deallocate() }
        actDim.deallocate()
        actFfn.deallocate()
    }

    /// Forgets everything after the first `count` tokens (keeps a shared prompt prefix).
    public func truncate(to count: Int) { if count < tokens.count { tokens.removeSubrange(max(0, count)...) } }

    /// Runs `new` tokens after the cached ones; afterwards `logits` holds the next-token
    /// logits. Throws when the context would overflow (nothing is dropped silently).
    public func eval(_ new: [Int32]) throws(KianaAIError) {
        guard !new.isEmpty else { return }
        guard tokens.count + new.count <= contextSize else {
            throw KianaAIError(.contextFull, "\(tokens.count + new.count) tokens do not fit the context of \(contextSize)")
        }
        let vocab = Int32(model.config.vocab)
        guard new.allSatisfy({ $0 >= 0 && $0 < vocab }) else { throw KianaAIError(.invalidInput, "token id out of range") }
        var i = 0
        while i < new.count {
            let n = min(batchSize, new.count - i)
            forward(Array(new[i..<(i + n)]), last: i + n == new.count)
            i += n
        }
    }

    private func forward(_ batch: [Int32], last: Bool) {
        let c = model.config
        let T = batch.count
        let p0 = tokens.count
        let dim = c.dim
        let kvDim = c.kvDim
        for (t, id) in batch.enumerated() { model.embedding.dequantizeRow(Int(id), into: x + t * dim) }
        for (li, L) in model.layers.enumerated() {
            normAndQuantize(L.attnNorm, T)
            matmul([(L.q, q), (L.k, k), (L.v, v)], actDim, T)
            for t in 0..<T {
                rope(q + t * dim, heads: c.heads, pos: p0 + t)
                rope(k + t * kvDim, heads: c.kvHeads, pos: p0 + t)
            }
            let cacheBase = li * contextSize * kvDim
            (keys + cacheBase + p0 * kvDim).update(from: k, count: T * kvDim)
            (values + cacheBase + p0 * kvDim).update(from: v, count: T * kvDim)
            attention(layer: li, T: T, p0: p0)
            let att = self.att
            let actDim = self.actDim
            overTokens(T) { t in actDim.setRow(att + t * dim, t) }
            matmul([(L.o, xn)], actDim, T)
            for j in 0..<(T * dim) { x[j] += xn[j] }
            normAndQuantize(L.ffnNorm, T)
            matmul([(L.gate, gate), (L.up, up)], actDim, T)
            let ffn = c.ffn
            let gate = self.gate
            let up = self.up
            let actFfn = self.actFfn
            overTokens(T) { t in
                let g = gate + t * ffn
                let u = up + t * ffn
                for j in 0..<ffn { g[j] = g[j] / (1 + Foundation.exp(-g[j])) * u[j] }
                actFfn.setRow(g, t)
            }
            matmul([(L.down, xn)], actFfn, T)
            for j in 0..<(T * dim) { x[j] += xn[j] }
        }
        tokens += batch
        guard last else { return }
        // Logits for the last token only.
        let lastRow = x + (T - 1) * dim
        var ss: Float = 0
        for j in 0..<dim { ss += lastRow[j] * lastRow[j] }
        let scale = 1 / (ss / Float(dim) + c.eps).squareRoot()
        for j in 0..<dim { xn[j] = lastRow[j] * scale * model.outputNorm[j] }
        actDim.set(xn, rows: 1)
        let out = model.output
        let act = actDim
        logits.withUnsafeMutableBufferPointer { lp in
            let dst = lp.baseAddress!
            pool.parallelFor(out.rows, grain: 64) { range in
                for r in range { dst[r] = Quant.dot(out.type, out.row(r), act, 0) }
            }
        }
    }

    /// Runs `body(t)` for each token, over the workers when there are several tokens.
    private func overTokens(_ T: Int, _ body: (Int) -> Void) {
        if T == 1 {
            body(0)
            return
        }
        pool.parallelFor(T) { range in for t in range { body(t) } }
    }

    /// xn = RMSNorm(x)·w per token, quantised into `actDim`.
    private func normAndQuantize(_ w: [Float], _ T: Int) {
        let dim = model.config.dim
        let eps = model.config.eps
        let x = self.x
        let xn = self.xn
        let act = actDim
        w.withUnsafeBufferPointer { wp in
            let w = wp.baseAddress!
            overTokens(T) { t in
                let row = x + t * dim
                let dst = xn + t * dim
                let ss = Kernels.dot(row, row, dim)
                let scale = 1 / (ss / Float(dim) + eps).squareRoot()
                for j in 0..<dim { dst[j] = row[j] * scale * w[j] }
                act.setRow(dst, t)
            }
        }
    }

    /// RoPE in GGUF's layout: adjacent pairs (x[2i], x[2i+1]) rotate by pos·base^(−2i/d).
    private func rope(_ v: UnsafeMutablePointer<Float>, heads: Int, pos: Int) {
        let hd = model.config.headDim
        for h in 0..<heads {
            let p = v + h * hd
            for i in 0..<ropeInv.count {
                let theta = Float(pos) * ropeInv[i]
                let cs = cos(theta)
                let sn = sin(theta)
                let a = p[2 * i]
                let b = p[2 * i + 1]
                p[2 * i] = a * cs - b * sn
                p[2 * i + 1] = a * sn + b * cs
            }
        }
    }

    /// y = W·x for several matrices sharing one input, split by rows over the workers.
    private func matmul(_ targets: [(WeightMatrix, UnsafeMutablePointer<Float>)], _ act: QuantizedRows, _ T: Int) {
        let total = targets.reduce(0) { $0 + $1.0.rows }
        pool.parallelFor(total, grain: 16) { range in
            var base = 0
            for (w, out) in targets {
                let lo = max(range.lowerBound, base) - base
                let hi = min(range.upperBound, base + w.rows) - base
                if lo < hi {
                    for r in lo..<hi {
                        let row = w.row(r)
                        var t = 0
                        while t + 4 <= T {
                            let v = Quant.dot4(w.type, row, act, t)
                            out[t * w.rows + r] = v[0]
                            out[(t + 1) * w.rows + r] = v[1]
                            out[(t + 2) * w.rows + r] = v[2]
                            out[(t + 3) * w.rows + r] = v[3]
                            t += 4
                        }
                        while t < T {
                            out[t * w.rows + r] = Quant.dot(w.type, row, act, t)
                            t += 1
                        }
                    }
                }
                base += w.rows
            }
        }
    }

    /// Causal grouped-query attention of the batch's queries over the cache.
    private func attention(layer: Int, T: Int, p0: Int) {
        let c = model.config
        let hd = c.headDim
        let kvDim = c.kvDim
        let group = c.heads / c.kvHeads
        let scale = 1 / Float(hd).squareRoot()
        let kc = keys + layer * contextSize * kvDim
        let vc = values + layer * contextSize * kvDim
        let q = self.q
        let att = self.att
        let scoresBase = scores
        let ctx = contextSize
        pool.run { w in
            let sc = scoresBase + w * ctx
            var job = w
            while job < T * c.heads {
                let t = job / c.heads
                let h = job % c.heads
                let kvh = h / group
                let qh = q + t * c.dim + h * hd
                let n = p0 + t + 1
                for p in 0..<n { sc[p] = Kernels.dot(qh, kc + p * kvDim + kvh * hd, hd) * scale }
                Kernels.softmax(sc, n)
                let out = att + t * c.dim + h * hd
                var acc = [SIMD8<Float>](repeating: .zero, count: hd / 8)
                for p in 0..<n {
                    let a = SIMD8<Float>(repeating: sc[p])
                    let vp = vc + p * kvDim + kvh * hd
                    for j in 0..<(hd / 8) { acc[j] = acc[j].addingProduct(a, Kernels.load8(vp + 8 * j)) }
                }
                for j in 0..<(hd / 8) { Kernels.store8(acc[j], out + 8 * j) }
                job += self.pool.threads
            }
        }
    }
}
