import Foundation

/// all-MiniLM-L6-v2: a 6-layer BERT encoder (384 hidden, 12 heads, 1536 intermediate) whose
/// sentence embedding is the mean of its last hidden states, L2-normalised.
public final class MiniLM: Sendable {
    public static let dimension = 384
    public static let maxTokens = 256
    static let hidden = 384, heads = 12, headDim = 32, intermediate = 1536, layerCount = 6, vocabSize = 30522, positions = 512
    static let eps: Float = 1e-12

    struct Layer: Sendable {
        var qkv: Kernels.PackedWeight
        var attnOut: Kernels.PackedWeight
        var ln1g: [Float], ln1b: [Float]
        var up: Kernels.PackedWeight
        var down: Kernels.PackedWeight
        var ln2g: [Float], ln2b: [Float]
    }

    let wordEmb: [Float], posEmb: [Float], typeEmb: [Float]
    let embLNg: [Float], embLNb: [Float]
    let layers: [Layer]

    /// Loads the weights from a safetensors file of the sentence-transformers export.
    public init(weights st: Safetensors) throws(KianaAIError) {
        let h = Self.hidden
        wordEmb = try st.floats("embeddings.word_embeddings.weight", shape: [Self.vocabSize, h])
        posEmb = try st.floats("embeddings.position_embeddings.weight", shape: [Self.positions, h])
        typeEmb = try st.floats("embeddings.token_type_embeddings.weight", shape: [2, h])
        embLNg = try st.floats("embeddings.LayerNorm.weight", shape: [h])
        embLNb = try st.floats("embeddings.LayerNorm.bias", shape: [h])
        var ls: [Layer] = []
        for l in 0..<Self.layerCount {
            let p = "encoder.layer.\(l)."
            func linear(_ name: String, out: Int, in k: Int) throws(KianaAIError) -> Kernels.PackedWeight {
                let w = try st.floats(p + name + ".weight", shape: [out, k])
                let b = try st.floats(p + name + ".bias", shape: [out])
                return w.withUnsafeBufferPointer { Kernels.PackedWeight(weight: $0, out: out, in: k, bias: b) }
            }
            // Q, K and V as one 1152-wide linear layer: one GEMM instead of three.
            var qkvW: [Float] = []
            var qkvB: [Float] = []
            for part in ["query", "key", "value"] {
                qkvW += try st.floats(p + "attention.self.\(part).weight", shape: [h, h])
                qkvB += try st.floats(p + "attention.self.\(part).bias", shape: [h])
            }
            let qkv = qkvW.withUnsafeBufferPointer { Kernels.PackedWeight(weight: $0, out: 3 * h, in: h, bias: qkvB) }
            ls.append(
                Layer(
                    qkv: qkv,
                    attnOut: try linear("attention.output.dense", out: h, in: h),
                    ln1g: try st.floats(p + "attention.output.LayerNorm.weight", shape: [h]),
                    ln1b: try st.floats(p + "attention.output.LayerNorm.bias", shape: [h]),
                    up: try linear("intermediate.dense", out: Self.intermediate, in: h),
                    down: try linear("output.dense", out: h, in: Self.intermediate),
                    ln2g: try st.floats(p + "output.LayerNorm.weight", shape: [h]),
                    ln2b: try st.floats(p + "output.LayerNorm.bias", shape: [h])))
        }
        layers = ls
    }

    /// Embeds sequences of token IDs (each ≤ 256 IDs, already with [CLS]/[SEP]) on the calling
    /// thread, all sequences' tokens stacked into one matrix (no padding). Returns one
    /// L2-normalised vector per sequence.
    func forward(_ seqs: [[Int32]]) -> [[Float]] {
        let h = Self.hidden
        let lengths = seqs.map { min($0.count, Self.maxTokens) }
        let t = lengths.reduce(0, +)
        guard t > 0 else { return seqs.map { _ in [Float](repeating: 0, count: h) } }
        var offsets: [Int] = []
        var o = 0
        for l in lengths {
            offsets.append(o)
            o += l
        }

        var x = [Float](repeating: 0, count: t * h)
        var tmp = [Float](repeating: 0, count: t * h)
        var qkv = [Float](repeating: 0, count: t * 3 * h)
        var ctx = [Float](repeating: 0, count: t * h)
        var inter = [Float](repeating: 0, count: t * Self.intermediate)
        let maxLen = lengths.max() ?? 1
        var scores = [Float](repeating: 0, count: maxLen)

        // embeddings
        x.withUnsafeMutableBufferPointer { xb in
            for (s, seq) in seqs.enumerated() {
                for i in 0..<lengths[s] {
                    let id = Int(seq[i])
                    let row = (offsets[s] + i) * h
                    let wid = (id >= 0 && id < Self.vocabSize) ? id : 100  // [UNK]
                    for d in 0..<h { xb[row + d] = wordEmb[wid * h + d] + posEmb[i * h + d] + typeEmb[d] }
                }
            }
            Kernels.addLayerNorm(xb.baseAddress!, residual: nil, m: t, d: h, gamma: embLNg, beta: embLNb, eps: Self.eps)
        }

        let scale = 1 / Float(Self.headDim).squareRoot()
        for layer in layers {
            x.withUnsafeMutableBufferPointer { xb in
                qkv.withUnsafeMutableBufferPointer { qb in
                    ctx.withUnsafeMutableBufferPointer { cb in
                        tmp.withUnsafeMutableBufferPointer { tb in
                            inter.withUnsafeMutableBufferPointer { ib in
                                scores.withUnsafeMutableBufferPointer { sb in
                                    let xp = xb.baseAddress!
                                    let qp = qb.baseAddress!
                                    let cp = cb.baseAddress!
                                    let tp = tb.baseAddress!
                                    let ip = ib.baseAddress!
                                    let sp = sb.baseAddress!
                                    Kernels.linear(xp, m: t, layer.qkv, qp)
                                    let w = 3 * h
                                    for s in 0..<seqs.count {
                                        let base = offsets[s]
                                        let len = lengths[s]
                                        for head in 0..<Self.heads {
                                            let qo = head * Self.headDim
                                            let ko = h + head * Self.headDim
                                            let vo = 2 * h + head * Self.headDim
                                            for i in 0..<len {
                                                let q = qp + (base + i) * w + qo
                                                for j in 0..<len { sp[j] = Kernels.dot(q, qp + (base + j) * w + ko, Self.headDim) * scale }
                                                Kernels.softmax(sp, len)
                                                var a0 = Kernels.V8()
                                                var a1 = Kernels.V8()
                                                var a2 = Kernels.V8()
                                                var a3 = Kernels.V8()
                                                for j in 0..<len {
                                                    let pj = Kernels.V8(repeating: sp[j])
                                                    let v = qp + (base + j) * w + vo
                                                    a0 = a0.addingProduct(pj, Kernels.load8(v))
                                                    a1 = a1.addingProduct(pj, Kernels.load8(v + 8))
                                                    a2 = a2.addingProduct(pj, Kernels.load8(v + 16))
                                                    a3 = a3.addingProduct(pj, Kernels.load8(v + 24))
                                                }
                                                let dst = cp + (base + i) * h + qo
                                                Kernels.store8(a0, dst)
                                                Kernels.store8(a1, dst + 8)
                                                Kernels.store8(a2, dst + 16)
                                                Kernels.store8(a3, dst + 24)
                                            }
                                        }
                                    }
                                    Kernels.linear(cp, m: t, layer.attnOut, tp)
                                    Kernels.addLayerNorm(tp, residual: xp, m: t, d: h, gamma: layer.ln1g, beta: layer.ln1b, eps: Self.eps)
                                    Kernels.linear(tp, m: t, layer.up, ip)
                                    Kernels.gelu(ip, t * Self.intermediate)
                                    Kernels.linear(ip, m: t, layer.down, xp)
                                    Kernels.addLayerNorm(xp, residual: tp, m: t, d: h, gamma: layer.ln2g, beta: layer.ln2b, eps: Self.eps)
                                }
                            }
                        }
                    }
                }
            }
        }

        // mean pooling over all tokens, then L2 normalisation
        return (0..<seqs.count).map { s in
            var v = [Float](repeating: 0, count: h)
            for i in 0..<lengths[s] {
                let row = (offsets[s] + i) * h
                for d in 0..<h { v[d] += x[row + d] }
            }
            let n = Float(max(lengths[s], 1))
            for d in 0..<h { v[d] /= n }
            let norm = v.reduce(0) { $0 + $1 * $1 }.squareRoot()
            if norm > 0 { for d in 0..<h { v[d] /= norm } }
            return v
        }
    }
}
