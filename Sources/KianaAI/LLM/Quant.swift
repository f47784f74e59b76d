#if arch(x86_64)
    import _Builtin_intrinsics.intel
#endif

/// A weight matrix inside a mapped GGUF file, kept in its stored (quantised) form.
/// `rows` outputs, each a contiguous row of `cols` inputs.
/// `@unchecked`: it points into a read-only memory mapping that `MappedFile` keeps alive.
public struct WeightMatrix: @unchecked Sendable {
    public let base: UnsafeRawPointer
    public let type: GGMLType
    public let rows: Int
    public let cols: Int
    public var rowBytes: Int { cols / type.blockSize * type.blockBytes }

    @inline(__always) func row(_ r: Int) -> UnsafeRawPointer { base + r * rowBytes }

    /// Row `r` as floats (token embeddings).
    func dequantizeRow(_ r: Int, into out: UnsafeMutablePointer<Float>) {
        let p = row(r)
        switch type {
        case .f32: for i in 0..<cols { out[i] = p.loadUnaligned(fromByteOffset: 4 * i, as: Float.self) }
        case .f16: for i in 0..<cols { out[i] = Quant.half(p, 2 * i) }
        case .q8_0:
            for b in 0..<cols / 32 {
                let blk = p + b * 34
                let d = Quant.half(blk, 0)
                for j in 0..<32 { out[b * 32 + j] = d * Float(blk.load(fromByteOffset: 2 + j, as: Int8.self)) }
            }
        case .q4_0, .q4_1:
            let size = type.blockBytes
            let q0 = type == .q4_0 ? 2 : 4
            for b in 0..<cols / 32 {
                let blk = p + b * size
                let d = Quant.half(blk, 0)
                let m = type == .q4_1 ? Quant.half(blk, 2) : -8 * d
                for j in 0..<16 {
                    let v = blk.load(fromByteOffset: q0 + j, as: UInt8.self)
                    out[b * 32 + j] = d * Float(v & 0x0F) + m
                    out[b * 32 + j + 16] = d * Float(v >> 4) + m
                }
            }
        }
    }
}

/// Activations quantised to 8 bits in blocks of 32, as ggml's Q8_0/Q8_1 `vec_dot` types:
/// per block a scale `d` (rounded through f16, as ggml stores it) and `s = d·Σq`. The float
/// values are kept too, for F32/F16 weights.
struct QuantizedRows {
    var n: Int
    var count: Int
    var qs: UnsafeMutablePointer<Int8>
    var d: UnsafeMutablePointer<Float>
    var s: UnsafeMutablePointer<Float>
    var f: UnsafeMutablePointer<Float>

    init(n: Int, capacity: Int) {
        self.n = n
        count = capacity
        qs = .allocate(capacity: n * capacity)
        d = .allocate(capacity: n / 32 * capacity)
        s = .allocate(capacity: n / 32 * capacity)
        f = .allocate(capacity: n * capacity)
    }

    func deallocate() {
        qs.deallocate()
        d.deallocate()
        s.deallocate()
        f.deallocate()
    }

    /// Quantises `rows` rows of `n` floats.
    func set(_ x: UnsafePointer<Float>, rows: Int) {
        precondition(rows <= count)
        for r in 0..<rows { setRow(x + r * n, r) }
    }

    /// Quantises one row (`x` points at its n floats) into slot `r`. Rows are independent, so
    /// callers may fill different rows from different threads.
    func setRow(_ x: UnsafePointer<Float>, _ r: Int) {
        (f + r * n).update(from: x, count: n)
        let nb = n / 32
        for b in 0..<nb {
            let src = x + b * 32
            var amax = SIMD8<Float>()
            for k in 0..<4 {
                let v = Kernels.load8(src + 8 * k)
                amax = pointwiseMax(amax, pointwiseMax(v, -v))
            }
            let m = amax.max()
            let id: Float = m > 0 ? 127 / m : 0
            let dst = qs + r * n + b * 32
            var sum: Int32 = 0
            for k in 0..<4 {
                // (Swift's generic SIMD int conversions are element loops; this scalar one is faster.)
                let v = (Kernels.load8(src + 8 * k) * id).rounded(.toNearestOrEven)
                for j in 0..<8 {
                    let q = Int8(v[j])
                    dst[8 * k + j] = q
                    sum += Int32(q)
                }
            }
            d[r * nb + b] = Quant.roundHalf(m / 127)
            s[r * nb + b] = Quant.roundHalf(m / 127 * Float(sum))
        }
    }
}

enum Quant {
    @inline(__always) static func half(_ p: UnsafeRawPointer, _ off: Int) -> Float {
        Float(Float16(bitPattern: p.loadUnaligned(fromByteOffset: off, as: UInt16.self)))
    }
    @inline(__always) static func roundHalf(_ x: Float) -> Float { Float(Float16(x)) }

    /// Dot product of weight row `w` (of `type`, `n` elements) with activation row `r` of `a`.
    @inline(__always)
    static func dot(_ type: GGMLType, _ w: UnsafeRawPointer, _ a: QuantizedRows, _ r: Int) -> Float {
        let n = a.n
        let nb = n / 32
        let qs = UnsafeRawPointer(a.qs + r * n)
        let d = a.d + r * nb
        let s = a.s + r * nb
        switch type {
        case .q4_1: return dotQ4(w, blockBytes: 20, hasMin: true, qs, d, s, nb)
        case .q4_0: return dotQ4(w, blockBytes: 18, hasMin: false, qs, d, s, nb)
        case .q8_0: return dotQ8(w, qs, d, nb)
        case .f32: return Kernels.dot(w.assumingMemoryBound(to: Float.self), a.f + r * n, n)
        case .f16: return dotF16(w, a.f + r * n, n)
        }
    }

    /// Four activation rows (t0…t0+3) against one weight row: each weight block is unpacked once
    /// and used four times (prompt processing). Other types fall back to single dots.
    @inline(__always)
    static func dot4(_ type: GGMLType, _ w: UnsafeRawPointer, _ a: QuantizedRows, _ t0: Int) -> SIMD4<Float> {
        #if arch(x86_64)
            if type == .q4_1 || type == .q4_0 { return dotQ4x4(w, blockBytes: type.blockBytes, hasMin: type == .q4_1, a, t0) }
        #endif
        return SIMD4(dot(type, w, a, t0), dot(type, w, a, t0 + 1), dot(type, w, a, t0 + 2), dot(type, w, a, t0 + 3))
    }

    #if arch(x86_64)
        @inline(__always)
        static func dotQ4x4(_ w: UnsafeRawPointer, blockBytes: Int, hasMin: Bool, _ a: QuantizedRows, _ t0: Int) -> SIMD4<Float> {
            let n = a.n
            let nb = n / 32
            var acc0 = _mm256_setzero_ps()
            var acc1 = _mm256_setzero_ps()
            var acc2 = _mm256_setzero_ps()
            var acc3 = _mm256_setzero_ps()
            let mask = _mm_set1_epi8(0x0F)
            let ones = _mm256_set1_epi16(1)
            var mins = SIMD4<Float>()
            let q0 = hasMin ? 4 : 2
            let y0 = UnsafeRawPointer(a.qs + t0 * n)
            let y1 = y0 + n
            let y2 = y1 + n
            let y3 = y2 + n
            let d0 = a.d + t0 * nb
            let d1 = d0 + nb
            let d2 = d1 + nb
            let d3 = d2 + nb
            let s0 = a.s + t0 * nb
            let s1 = s0 + nb
            let s2 = s1 + nb
            let s3 = s2 + nb
            for b in 0..<nb {
                let blk = w + b * blockBytes
                let dw = half(blk, 0)
                let m = hasMin ? half(blk, 2) : -8 * dw
                let raw = _mm_loadu_si128(blk.advanced(by: q0).assumingMemoryBound(to: __m128i_u.self))
                let q = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(raw, 4), mask), _mm_and_si128(raw, mask))
                @inline(__always) func one(_ y: UnsafeRawPointer, _ d: UnsafePointer<Float>, _ acc: inout __m256) {
                    let v = _mm256_loadu_si256(y.advanced(by: b * 32).assumingMemoryBound(to: __m256i_u.self))
                    let p = _mm256_madd_epi16(_mm256_maddubs_epi16(q, v), ones)
                    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dw * d[b]), acc)
                }
                one(y0, d0, &acc0)
                one(y1, d1, &acc1)
                one(y2, d2, &acc2)
                one(y3, d3, &acc3)
                mins += m * SIMD4(s0[b], s1[b], s2[b], s3[b])
            }
            return SIMD4(hsum(acc0), hsum(acc1), hsum(acc2), hsum(acc3)) + mins
        }

        @inline(__always) static func hsum(_ v: __m256) -> Float { v.sum() }

        /// Q4_0 / Q4_1 weights · Q8 activations: unsigned nibbles × signed bytes with vpmaddubsw,
        /// the block scale applied in float, the Q4_1 minimum (or Q4_0's −8 offset) through `s`.
        @inline(__always)
        static func dotQ4(
            _ w: UnsafeRawPointer, blockBytes: Int, hasMin: Bool, _ qs: UnsafeRawPointer,
            _ d: UnsafePointer<Float>, _ s: UnsafePointer<Float>, _ nb: Int
        ) -> Float {
            var acc = _mm256_setzero_ps()
            let mask = _mm_set1_epi8(0x0F)
            let ones = _mm256_set1_epi16(1)
            var mins: Float = 0
            let q0 = hasMin ? 4 : 2
            for b in 0..<nb {
                let blk = w + b * blockBytes
                let dw = half(blk, 0)
                let m = hasMin ? half(blk, 2) : -8 * dw
                let raw = _mm_loadu_si128(blk.advanced(by: q0).assumingMemoryBound(to: __m128i_u.self))
                let lo = _mm_and_si128(raw, mask)
                let hi = _mm_and_si128(_mm_srli_epi16(raw, 4), mask)
                let q = _mm256_set_m128i(hi, lo)
                let y = _mm256_loadu_si256(qs.advanced(by: b * 32).assumingMemoryBound(to: __m256i_u.self))
                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(q, y), ones)
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dw * d[b]), acc)
                mins += m * s[b]
            }
            return hsum(acc) + mins
        }

        /// Q8_0 weights · Q8 activations (|x| × sign-adjusted y, as ggml does for signed × signed).
        @inline(__always)
        static func dotQ8(_ w: UnsafeRawPointer, _ qs: UnsafeRawPointer, _ d: UnsafePointer<Float>, _ nb: Int) -> Float {
            var acc = _mm256_setzero_ps()
            let ones = _mm256_set1_epi16(1)
            for b in 0..<nb {
                let blk = w + b * 34
                let x = _mm256_loadu_si256(blk.advanced(by: 2).assumingMemoryBound(to: __m256i_u.self))
                let y = _mm256_loadu_si256(qs.advanced(by: b * 32).assumingMemoryBound(to: __m256i_u.self))
                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x)), ones)
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(half(blk, 0) * d[b]), acc)
            }
            return hsum(acc)
        }

        @inline(__always)
        static func dotF16(_ w: UnsafeRawPointer, _ x: UnsafePointer<Float>, _ n: Int) -> Float {
            var acc = _mm256_setzero_ps()
            var i = 0
            while i + 8 <= n {
                let h = _mm_loadu_si128(w.advanced(by: 2 * i).assumingMemoryBound(to: __m128i_u.self))
                let xv = Kernels.load8(x + i)
                acc = _mm256_fmadd_ps(_mm256_cvtph_ps(h), xv, acc)
                i += 8
            }
            var sum = hsum(acc)
            while i < n {
                sum += half(w, 2 * i) * x[i]
                i += 1
            }
            return sum
        }
    #else
        static func dotQ4(
            _ w: UnsafeRawPointer, blockBytes: Int, hasMin: Bool, _ qs: UnsafeRawPointer,
            _ d: UnsafePointer<Float>, _ s: UnsafePointer<Float>, _ nb: Int
        ) -> Float {
            var sum: Float = 0
            let q0 = hasMin ? 4 : 2
            for b in 0..<nb {
                let blk = w + b * blockBytes
                let dw = half(blk, 0)
                let m = hasMin ? half(blk, 2) : -8 * dw
                var isum: Int32 = 0
                for j in 0..<16 {
                    let v = blk.load(fromByteOffset: q0 + j, as: UInt8.self)
                    isum += Int32(v & 0x0F) * Int32(qs.load(fromByteOffset: b * 32 + j, as: Int8.self))
                    isum += Int32(v >> 4) * Int32(qs.load(fromByteOffset: b * 32 + j + 16, as: Int8.self))
                }
                sum += dw * d[b] * Float(isum) + m * s[b]
            }
            return sum
        }

        static func dotQ8(_ w: UnsafeRawPointer, _ qs: UnsafeRawPointer, _ d: UnsafePointer<Float>, _ nb: Int) -> Float {
            var sum: Float = 0
            for b in 0..<nb {
                let blk = w + b * 34
                var isum: Int32 = 0
                for j in 0..<32 {
                    isum += Int32(blk.load(fromByteOffset: 2 + j, as: Int8.self)) * Int32(qs.load(fromByteOffset: b * 32 + j, as: Int8.self))
                }
                sum += half(blk, 0) * d[b] * Float(isum)
            }
            return sum
        }

        static func dotF16(_ w: UnsafeRawPointer, _ x: UnsafePointer<Float>, _ n: Int) -> Float {
            var sum: Float = 0
            for i in 0..<n { sum += half(w, 2 * i) * x[i] }
            return sum
        }
    #endif
}
