import Foundation
@testable import KianaAI
import Testing

/// The quantised dot kernels against plain float arithmetic on the dequantised weights, for
/// every weight type (the default model exercises only Q4_1, Q8_0 and F32).
@Suite struct QuantKernelTests {
    /// A random weight row of `type` with `n` elements, as ggml lays it out.
    static func row(_ type: GGMLType, _ n: Int, _ g: inout SplitMix64) -> [UInt8] {
        func f16(_ x: Float) -> [UInt8] {
            let b = Float16(x).bitPattern
            return [UInt8(b & 0xFF), UInt8(b >> 8)]
        }
        func r() -> Float { Float(g.next() >> 40) / Float(1 << 24) * 2 - 1 }
        var out: [UInt8] = []
        switch type {
        case .f32: for _ in 0..<n { withUnsafeBytes(of: r()) { out += $0 } }
        case .f16: for _ in 0..<n { out += f16(r()) }
        case .q8_0:
            for _ in 0..<(n / 32) {
                out += f16(r() * 0.02)
                for _ in 0..<32 { out.append(UInt8(truncatingIfNeeded: Int8(truncatingIfNeeded: g.next()))) }
            }
        case .q4_0:
            for _ in 0..<(n / 32) {
                out += f16(r() * 0.1)
                for _ in 0..<16 { out.append(UInt8(truncatingIfNeeded: g.next())) }
            }
        case .q4_1:
            for _ in 0..<(n / 32) {
                out += f16(r() * 0.1) + f16(r())
                for _ in 0..<16 { out.append(UInt8(truncatingIfNeeded: g.next())) }
            }
        }
        return out
    }

    @Test(
        "dot(W row, quantised x) ≈ Σ dequantised(W)·x, and the 4-token kernel equals four single dots",
        arguments: [GGMLType.f32, .f16, .q8_0, .q4_0, .q4_1])
    func kernel(_ type: GGMLType) {
        var g = SplitMix64(seed: UInt64(type.rawValue) + 11)
        let n = 576
        let rows = 6
        let bytes = (0..<rows).flatMap { _ in Self.row(type, n, &g) }
        let xs = (0..<(4 * n)).map { _ in Float(g.next() >> 40) / Float(1 << 24) * 4 - 2 }
        bytes.withUnsafeBytes { wb in
            let w = WeightMatrix(base: wb.baseAddress!, type: type, rows: rows, cols: n)
            let act = QuantizedRows(n: n, capacity: 4)
            defer { act.deallocate() }
            xs.withUnsafeBufferPointer { act.set($0.baseAddress!, rows: 4) }
            var deq = [Float](repeating: 0, count: n)
            for r in 0..<rows {
                deq.withUnsafeMutableBufferPointer { w.dequantizeRow(r, into: $0.baseAddress!) }
                let four = Quant.dot4(type, w.row(r), act, 0)
                for t in 0..<4 {
                    let exact = (0..<n).reduce(Float(0)) { $0 + deq[$1] * xs[t * n + $1] }
                    let magnitude = (0..<n).reduce(Float(0)) { $0 + abs(deq[$1] * xs[t * n + $1]) }
                    let got = Quant.dot(type, w.row(r), act, t)
                    // 8-bit activations: error well under 1 % of Σ|w·x| (exact for float weights).
                    let tolerance = type == .f32 || type == .f16 ? magnitude * 1e-5 : magnitude * 0.01
                    #expect(abs(got - exact) <= tolerance, "\(type) row \(r) token \(t): \(got) vs \(exact)")
                    #expect(four[t] == got)
                }
            }
        }
    }

    @Test func activationQuantisationMatchesGgml() {
        let act = QuantizedRows(n: 32, capacity: 1)
        defer { act.deallocate() }
        let x: [Float] = (0..<32).map { Float($0) - 12.7 }
        x.withUnsafeBufferPointer { act.set($0.baseAddress!, rows: 1) }
        let amax: Float = 18.3  // max |i − 12.7| over 0…31
        #expect(act.d[0] == Float(Float16(amax / 127)))
        for i in 0..<32 { #expect(Int(act.qs[i]) == Int((x[i] * 127 / amax).rounded(.toNearestOrEven))) }
        let sum = (0..<32).reduce(0) { $0 + Int(act.qs[$1]) }
        #expect(act.s[0] == Float(Float16(amax / 127 * Float(sum))))
    }
}
