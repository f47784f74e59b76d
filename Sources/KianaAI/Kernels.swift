import Foundation

/// Dense float kernels for the embedder and the vector index: a packed GEMM micro-kernel,
/// LayerNorm, GELU, softmax and dot products, written with SIMD8<Float> (AVX2 + FMA on x86_64,
/// see docs/decisions.md).
enum Kernels {
    typealias V8 = SIMD8<Float>

    @inline(__always)
    static func load8(_ p: UnsafePointer<Float>) -> V8 { UnsafeRawPointer(p).loadUnaligned(as: V8.self) }

    @inline(__always)
    static func store8(_ v: V8, _ p: UnsafeMutablePointer<Float>) { UnsafeMutableRawPointer(p).storeBytes(of: v, as: V8.self) }

    /// Dot product of two float vectors.
    @inline(__always)
    static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
        var s0 = V8()
        var s1 = V8()
        var s2 = V8()
        var s3 = V8()
        var i = 0
        while i + 32 <= n {
            s0 = s0.addingProduct(load8(a + i), load8(b + i))
            s1 = s1.addingProduct(load8(a + i + 8), load8(b + i + 8))
            s2 = s2.addingProduct(load8(a + i + 16), load8(b + i + 16))
            s3 = s3.addingProduct(load8(a + i + 24), load8(b + i + 24))
            i += 32
        }
        while i + 8 <= n {
            s0 = s0.addingProduct(load8(a + i), load8(b + i))
            i += 8
        }
        var s = ((s0 + s1) + (s2 + s3)).sum()
        while i < n {
            s += a[i] * b[i]
            i += 1
        }
        return s
    }

    /// A linear layer's weight (PyTorch layout [out, in]) packed into 16-column panels:
    /// panel p holds, for each k, the 16 values W[16p + j, k] (zero-padded past `out`).
    struct PackedWeight: Sendable {
        let rows: Int  // in (K)
        let cols: Int  // out (N)
        let panels: Int
        let data: [Float]
        let bias: [Float]

        init(weight w: UnsafeBufferPointer<Float>, out: Int, in k: Int, bias: [Float]) {
            rows = k
            cols = out
            panels = (out + 15) / 16
            var d = [Float](repeating: 0, count: panels * 16 * k)
            for p in 0..<panels {
                for j in 0..<16 where p * 16 + j < out {
                    let src = (p * 16 + j) * k
                    for kk in 0..<k { d[(p * k + kk) * 16 + j] = w[src + kk] }
                }
            }
            data = d
            self.bias = bias
        }
    }

    /// C[m × N] = A[m × K] · Wᵀ + bias, A row-major with stride K, C with stride N.
    static func linear(_ a: UnsafePointer<Float>, m: Int, _ w: PackedWeight, _ c: UnsafeMutablePointer<Float>) {
        let k = w.rows
        let n = w.cols
        w.data.withUnsafeBufferPointer { wb in
            w.bias.withUnsafeBufferPointer { bb in
                let wp = wb.baseAddress!
                let bp = bb.baseAddress!
                var r = 0
                while r < m {
                    let rows = min(6, m - r)
                    for p in 0..<w.panels {
                        micro(a + r * k, k, rows, wp + p * k * 16, bp, p * 16, n, c + r * n)
                    }
                    r += rows
                }
            }
        }
    }

    /// 6 × 16 micro-kernel (12 accumulators) over the full K, with bias and edge handling.
    @inline(__always)
    static func micro(
        _ a: UnsafePointer<Float>, _ k: Int, _ rows: Int, _ panel: UnsafePointer<Float>,
        _ bias: UnsafePointer<Float>, _ col: Int, _ n: Int, _ c: UnsafeMutablePointer<Float>
    ) {
        var c00 = V8()
        var c01 = V8()
        var c10 = V8()
        var c11 = V8()
        var c20 = V8()
        var c21 = V8()
        var c30 = V8()
        var c31 = V8()
        var c40 = V8()
        var c41 = V8()
        var c50 = V8()
        var c51 = V8()
        let a0 = a
        let a1 = a + (rows > 1 ? k : 0)
        let a2 = a + (rows > 2 ? 2 * k : 0)
        let a3 = a + (rows > 3 ? 3 * k : 0)
        let a4 = a + (rows > 4 ? 4 * k : 0)
        let a5 = a + (rows > 5 ? 5 * k : 0)
        var bp = panel
        for kk in 0..<k {
            let b0 = load8(bp)
            let b1 = load8(bp + 8)
            var x = V8(repeating: a0[kk])
            c00 = c00.addingProduct(x, b0)
            c01 = c01.addingProduct(x, b1)
            x = V8(repeating: a1[kk])
            c10 = c10.addingProduct(x, b0)
            c11 = c11.addingProduct(x, b1)
            x = V8(repeating: a2[kk])
            c20 = c20.addingProduct(x, b0)
            c21 = c21.addingProduct(x, b1)
            x = V8(repeating: a3[kk])
            c30 = c30.addingProduct(x, b0)
            c31 = c31.addingProduct(x, b1)
            x = V8(repeating: a4[kk])
            c40 = c40.addingProduct(x, b0)
            c41 = c41.addingProduct(x, b1)
            x = V8(repeating: a5[kk])
            c50 = c50.addingProduct(x, b0)
            c51 = c51.addingProduct(x, b1)
            bp += 16
        }
        let full = col + 16 <= n
        let bb0: V8
        let bb1: V8
        if full {
            bb0 = load8(bias + col)
            bb1 = load8(bias + col + 8)
        } else {
            var t = [Float](repeating: 0, count: 16)
            for j in 0..<(n - col) { t[j] = bias[col + j] }
            bb0 = V8(t[0..<8])
            bb1 = V8(t[8..<16])
        }
        @inline(__always) func put(_ r: Int, _ v0: V8, _ v1: V8) {
            guard r < rows else { return }
            let dst = c + r * n + col
            if full {
                store8(v0 + bb0, dst)
                store8(v1 + bb1, dst + 8)
            } else {
                let s0 = v0 + bb0
                let s1 = v1 + bb1
                for j in 0..<(n - col) { dst[j] = j < 8 ? s0[j] : s1[j - 8] }
            }
        }
        put(0, c00, c01)
        put(1, c10, c11)
        put(2, c20, c21)
        put(3, c30, c31)
        put(4, c40, c41)
        put(5, c50, c51)
    }

    /// In place: x[r] = LayerNorm(x[r] + residual[r]) · gamma + beta, for m rows of width d.
    static func addLayerNorm(
        _ x: UnsafeMutablePointer<Float>, residual: UnsafePointer<Float>?, m: Int, d: Int,
        gamma: [Float], beta: [Float], eps: Float
    ) {
        gamma.withUnsafeBufferPointer { g in
            beta.withUnsafeBufferPointer { b in
                for r in 0..<m {
                    let row = x + r * d
                    if let residual {
                        let res = residual + r * d
                        var i = 0
                        while i + 8 <= d {
                            store8(load8(row + i) + load8(res + i), row + i)
                            i += 8
                        }
                        while i < d {
                            row[i] += res[i]
                            i += 1
                        }
                    }
                    var sum = V8()
                    var i = 0
                    while i + 8 <= d {
                        sum += load8(row + i)
                        i += 8
                    }
                    var mean = sum.sum()
                    while i < d {
                        mean += row[i]
                        i += 1
                    }
                    mean /= Float(d)
                    let mv = V8(repeating: mean)
                    var sq = V8()
                    i = 0
                    while i + 8 <= d {
                        let t = load8(row + i) - mv
                        sq = sq.addingProduct(t, t)
                        i += 8
                    }
                    var variance = sq.sum()
                    while i < d {
                        let t = row[i] - mean
                        variance += t * t
                        i += 1
                    }
                    variance /= Float(d)
                    let inv = 1 / (variance + eps).squareRoot()
                    let iv = V8(repeating: inv)
                    i = 0
                    while i + 8 <= d {
                        store8((load8(row + i) - mv) * iv * load8(g.baseAddress! + i) + load8(b.baseAddress! + i), row + i)
                        i += 8
                    }
                    while i < d {
                        row[i] = (row[i] - mean) * inv * g[i] + b[i]
                        i += 1
                    }
                }
            }
        }
    }

    /// e^x for SIMD lanes (Cephes-style range reduction, relative error ≈ 2e-7 on [-87, 88]).
    @inline(__always)
    static func exp(_ x0: V8) -> V8 {
        let x = x0.clamped(lowerBound: V8(repeating: -87.3), upperBound: V8(repeating: 88.3))
        let log2e: Float = 1.44269504088896341
        var fx = (x * log2e + 0.5)
        fx = fx.rounded(.down)
        // x - fx·ln2 in two parts for precision
        var r = x - fx * 0.693359375
        r = r - fx * -2.12194440e-4
        let r2 = r * r
        var y = V8(repeating: 1.9875691500e-4)
        y = y * r + 1.3981999507e-3
        y = y * r + 8.3334519073e-3
        y = y * r + 4.1665795894e-2
        y = y * r + 1.6666665459e-1
        y = y * r + 5.0000001201e-1
        y = y * r2 + r + 1
        let n = (SIMD8<Int32>(fx, rounding: .towardZero) &+ 127) &<< 23
        return y * unsafeBitCast(n, to: V8.self)
    }

    /// Exact-form GELU, x·Φ(x) = x/2·(1 + erf(x/√2)), with erf by Abramowitz–Stegun 7.1.26
    /// refined (|error| < 1.5e-7), applied in place to n values.
    static func gelu(_ x: UnsafeMutablePointer<Float>, _ n: Int) {
        let inv2 = V8(repeating: 0.70710678118654752)
        var i = 0
        while i + 8 <= n {
            let v = load8(x + i)
            let z = v * inv2
            let az = z.replacing(with: -z, where: z .< 0)
            let t = 1 / (az * 0.3275911 + 1)
            var p = V8(repeating: 1.061405429)
            p = p * t - 1.453152027
            p = p * t + 1.421413741
            p = p * t - 0.284496736
            p = p * t + 0.254829592
            p = p * t
            let e = 1 - p * Kernels.exp(-az * az)
            let erf = e.replacing(with: -e, where: z .< 0)
            store8(v * 0.5 * (1 + erf), x + i)
            i += 8
        }
        while i < n {
            let v = x[i]
            x[i] = v * 0.5 * (1 + Foundation.erf(v * 0.70710678118654752))
            i += 1
        }
    }

    /// Softmax of a row in place.
    static func softmax(_ x: UnsafeMutablePointer<Float>, _ n: Int) {
        var mx = -Float.infinity
        for i in 0..<n { mx = max(mx, x[i]) }
        var sum: Float = 0
        var i = 0
        let mv = V8(repeating: mx)
        var sv = V8()
        while i + 8 <= n {
            let e = exp(load8(x + i) - mv)
            store8(e, x + i)
            sv += e
            i += 8
        }
        sum = sv.sum()
        while i < n {
            let e = Foundation.exp(x[i] - mx)
            x[i] = e
            sum += e
            i += 1
        }
        let inv = 1 / sum
        for j in 0..<n { x[j] *= inv }
    }
}
