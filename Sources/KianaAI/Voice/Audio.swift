import Foundation
import KianaCore

/// Mono 16-bit PCM audio: what the speech engines take and give.
public struct PCMAudio: Sendable, Equatable {
    public var sampleRate: Int
    public var samples: [Int16]

    public init(sampleRate: Int, samples: [Int16]) {
        self.sampleRate = sampleRate
        self.samples = samples
    }

    public var seconds: Double { sampleRate > 0 ? Double(samples.count) / Double(sampleRate) : 0 }

    /// The same sound at `rate` (windowed-sinc resampling; see `Resampler`).
    public func resampled(to rate: Int) -> PCMAudio {
        guard rate != sampleRate, !samples.isEmpty else { return PCMAudio(sampleRate: rate, samples: samples) }
        return PCMAudio(sampleRate: rate, samples: Resampler.resample(samples, from: sampleRate, to: rate))
    }
}

/// How much audio a request may bring: bytes of the upload and seconds of sound.
public struct AudioLimits: Sendable {
    public var maxBytes: Int
    public var maxSeconds: Double
    /// Sample rates accepted on input (every common one from telephone to studio).
    public var rates: ClosedRange<Int>

    public init(maxBytes: Int = 25 << 20, maxSeconds: Double = 120, rates: ClosedRange<Int> = 8_000...96_000) {
        self.maxBytes = maxBytes
        self.maxSeconds = maxSeconds
        self.rates = rates
    }
}

/// RIFF/WAVE reading and writing. Reads integer PCM (8, 16, 24, 32 bit), IEEE float (32, 64 bit)
/// and WAVE_FORMAT_EXTENSIBLE of those, any channel count (mixed down to mono), skipping chunks it
/// does not need; a data chunk whose size is unknown (0 or 0xFFFFFFFF, as streamed WAV writes it)
/// runs to the end of the bytes. Writes 16-bit mono PCM.
public enum WAV {
    /// Decodes `bytes`, checked against `limits` before any sample is converted.
    public static func decode(_ bytes: [UInt8], limits: AudioLimits = AudioLimits()) throws(KianaAIError) -> PCMAudio {
        guard bytes.count <= limits.maxBytes else {
            throw KianaAIError(.tooLarge, "the audio is \(bytes.count) bytes; at most \(limits.maxBytes) are taken")
        }
        guard bytes.count >= 12, bytes[0..<4].elementsEqual(Array("RIFF".utf8)), bytes[8..<12].elementsEqual(Array("WAVE".utf8)) else {
            throw KianaAIError(.unsupportedMediaType, "the audio is not a WAV file (RIFF/WAVE); send 16-bit PCM WAV")
        }
        var format: (tag: Int, channels: Int, rate: Int, bits: Int, block: Int)?
        var data: Range<Int>?
        var at = 12
        while at + 8 <= bytes.count, data == nil {
            let id = String(decoding: bytes[at..<at + 4], as: UTF8.self)
            let size = Int(le32(bytes, at + 4))
            let body = at + 8
            if id == "data" {
                // Streamed WAV leaves the size unknown; a size past the end is cut to what came.
                let end = (size == 0 || size == 0xFFFF_FFFF || body + size > bytes.count) ? bytes.count : body + size
                data = body..<end
                break
            }
            guard size <= bytes.count - body else {
                let shown = id.unicodeScalars.allSatisfy { $0.value >= 0x20 && $0.value < 0x7F } ? "“\(id.trimmingCharacters(in: .whitespaces))”" : "a"
                throw KianaAIError(.malformedEncoding, "the WAV file's \(shown) chunk runs past the end of the file")
            }
            if id == "fmt " {
                guard size >= 16 else { throw KianaAIError(.malformedEncoding, "the WAV file's fmt chunk is too short") }
                var tag = Int(le16(bytes, body))
                if tag == 0xFFFE {
                    guard size >= 40 else { throw KianaAIError(.malformedEncoding, "the WAV file's extensible fmt chunk is too short") }
                    tag = Int(le16(bytes, body + 24))  // the sub-format GUID starts with the format tag
                }
                format = (tag, Int(le16(bytes, body + 2)), Int(le32(bytes, body + 4)), Int(le16(bytes, body + 14)), Int(le16(bytes, body + 12)))
            }
            // Chunks are padded to an even length; some writers leave the pad byte out, so an odd
            // chunk followed directly by a known chunk ID is read that way.
            at = body + size
            if size & 1 == 1 {
                let known = ["fmt ", "data", "LIST", "fact", "cue ", "bext", "JUNK", "id3 ", "PEAK", "smpl", "inst"]
                let unpadded = at + 4 <= bytes.count ? String(decoding: bytes[at..<at + 4], as: UTF8.self) : ""
                if !known.contains(unpadded) { at += 1 }
            }
        }
        guard let f = format else { throw KianaAIError(.malformedEncoding, "the WAV file has no fmt chunk") }
        guard let data else { throw KianaAIError(.malformedEncoding, "the WAV file has no data chunk") }
        guard (1...16).contains(f.channels) else { throw KianaAIError(.invalidInput, "the WAV file has \(f.channels) channels; 1 to 16 are taken") }
        guard limits.rates.contains(f.rate) else {
            throw KianaAIError(
                .invalidInput, "the sample rate \(f.rate) Hz is not supported; send \(limits.rates.lowerBound)–\(limits.rates.upperBound) Hz (16000 is best)")
        }
        let isFloat = f.tag == 3
        guard f.tag == 1 || isFloat else {
            throw KianaAIError(.unsupportedMediaType, "the WAV file is compressed (format \(f.tag)); send uncompressed PCM")
        }
        let validBits: Set<Int> = isFloat ? [32, 64] : [8, 16, 24, 32]
        guard validBits.contains(f.bits) else { throw KianaAIError(.unsupportedMediaType, "\(f.bits)-bit \(isFloat ? "float" : "PCM") WAV is not supported") }
        let width = f.bits / 8
        let frame = width * f.channels
        let frames = data.count / frame
        guard frames > 0 else { throw KianaAIError(.invalidInput, "the WAV file holds no sound (zero length)") }
        let seconds = Double(frames) / Double(f.rate)
        guard seconds <= limits.maxSeconds else {
            throw KianaAIError(.tooLarge, "the audio is \(Int(seconds.rounded())) s long; at most \(Int(limits.maxSeconds)) s are taken")
        }
        var out = [Int16](repeating: 0, count: frames)
        bytes.withUnsafeBufferPointer { b in
            for i in 0..<frames {
                var sum = 0.0
                for c in 0..<f.channels {
                    let p = data.lowerBound + i * frame + c * width
                    sum += sample(b, p, width: width, float: isFloat)
                }
                let v = (sum / Double(f.channels) * 32768).rounded()
                out[i] = Int16(max(-32768, min(32767, v)))
            }
        }
        return PCMAudio(sampleRate: f.rate, samples: out)
    }

    /// One sample as -1…1.
    @inline(__always) static func sample(_ b: UnsafeBufferPointer<UInt8>, _ p: Int, width: Int, float: Bool) -> Double {
        if float {
            if width == 4 {
                let v = Double(Float(bitPattern: UInt32(b[p]) | UInt32(b[p + 1]) << 8 | UInt32(b[p + 2]) << 16 | UInt32(b[p + 3]) << 24))
                return v.isFinite ? max(-1, min(1, v)) : 0
            }
            var bits: UInt64 = 0
            for k in 0..<8 { bits |= UInt64(b[p + k]) << (8 * UInt64(k)) }
            let v = Double(bitPattern: bits)
            return v.isFinite ? max(-1, min(1, v)) : 0
        }
        switch width {
        case 1: return (Double(b[p]) - 128) / 128  // 8-bit WAV is unsigned
        case 2: return Double(Int16(bitPattern: UInt16(b[p]) | UInt16(b[p + 1]) << 8)) / 32768
        case 3:
            let u = Int32(bitPattern: (UInt32(b[p]) << 8 | UInt32(b[p + 1]) << 16 | UInt32(b[p + 2]) << 24))
            return Double(u >> 8) / 8_388_608
        default:
            let u = Int32(bitPattern: UInt32(b[p]) | UInt32(b[p + 1]) << 8 | UInt32(b[p + 2]) << 16 | UInt32(b[p + 3]) << 24)
            return Double(u) / 2_147_483_648
        }
    }

    /// A 16-bit mono WAV file of `audio`.
    public static func encode(_ audio: PCMAudio) -> [UInt8] {
        var out = header(sampleRate: audio.sampleRate, dataBytes: audio.samples.count * 2)
        out.reserveCapacity(out.count + audio.samples.count * 2)
        appendSamples(audio.samples, to: &out)
        return out
    }

    /// The 44-byte header of a 16-bit mono WAV file; `dataBytes` nil writes the unknown size
    /// (0xFFFFFFFF) a streamed file carries.
    public static func header(sampleRate: Int, dataBytes: Int?) -> [UInt8] {
        let size = UInt32(clamping: dataBytes ?? Int(UInt32.max))
        var h: [UInt8] = []
        h += Array("RIFF".utf8) + u32(dataBytes == nil ? UInt32.max : size &+ 36) + Array("WAVE".utf8)
        h += Array("fmt ".utf8) + u32(16) + u16(1) + u16(1) + u32(UInt32(sampleRate)) + u32(UInt32(sampleRate * 2)) + u16(2) + u16(16)
        h += Array("data".utf8) + u32(size)
        return h
    }

    /// Little-endian bytes of `samples`.
    public static func appendSamples(_ samples: [Int16], to out: inout [UInt8]) {
        for s in samples {
            let u = UInt16(bitPattern: s)
            out.append(UInt8(u & 0xFF))
            out.append(UInt8(u >> 8))
        }
    }

    static func u32(_ v: UInt32) -> [UInt8] { [UInt8(v & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v >> 16 & 0xFF), UInt8(v >> 24)] }
    static func u16(_ v: UInt16) -> [UInt8] { [UInt8(v & 0xFF), UInt8(v >> 8)] }
    static func le16(_ b: [UInt8], _ i: Int) -> UInt16 { UInt16(b[i]) | UInt16(b[i + 1]) << 8 }
    static func le32(_ b: [UInt8], _ i: Int) -> UInt32 {
        UInt32(b[i]) | UInt32(b[i + 1]) << 8 | UInt32(b[i + 2]) << 16 | UInt32(b[i + 3]) << 24
    }
}

/// Sample-rate conversion by a Hann-windowed sinc filter (16 zero crossings each side), cut off
/// below the lower Nyquist frequency, so 44.1/48 kHz speech comes down to 16 kHz without aliasing.
public enum Resampler {
    public static func resample(_ input: [Int16], from source: Int, to target: Int) -> [Int16] {
        guard source > 0, target > 0, !input.isEmpty else { return [] }
        if source == target { return input }
        let ratio = Double(target) / Double(source)
        let count = Int((Double(input.count) * ratio).rounded())
        let cutoff = min(1.0, ratio) * 0.95  // of the source's Nyquist
        let zeros = 16.0
        let half = zeros / cutoff  // filter half-width in source samples
        // The windowed sinc, tabulated at 1/256 steps over 0…zeros and read with linear interpolation.
        let steps = 256
        let table: [Double] = (0...Int(zeros) * steps + 1).map { n in
            let t = Double(n) / Double(steps)
            guard t < zeros else { return 0 }
            let sinc = t == 0 ? 1.0 : sin(Double.pi * t) / (Double.pi * t)
            return sinc * (0.5 + 0.5 * cos(Double.pi * t / zeros))
        }
        var out = [Int16](repeating: 0, count: count)
        input.withUnsafeBufferPointer { x in
            table.withUnsafeBufferPointer { k in
                for j in 0..<count {
                    let center = Double(j) / ratio
                    let lo = max(0, Int((center - half).rounded(.up)))
                    let hi = min(x.count - 1, Int((center + half).rounded(.down)))
                    var acc = 0.0
                    var norm = 0.0
                    if lo <= hi {
                        for i in lo...hi {
                            let pos = abs(Double(i) - center) * cutoff * Double(steps)
                            let n = Int(pos)
                            guard n + 1 < k.count else { continue }
                            let f = pos - Double(n)
                            let w = k[n] + (k[n + 1] - k[n]) * f
                            acc += Double(x[i]) * w
                            norm += w
                        }
                    }
                    let v = norm == 0 ? 0 : (acc / norm).rounded()
                    out[j] = Int16(max(-32768, min(32767, v)))
                }
            }
        }
        return out
    }
}
