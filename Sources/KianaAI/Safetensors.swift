import Foundation

/// A safetensors file (https://huggingface.co/docs/safetensors): an 8-byte little-endian header
/// length, a JSON header naming each tensor's dtype, shape and byte range, then the data.
/// The file is memory-mapped; tensors are validated against the file size before use.
public struct Safetensors: Sendable {
    public struct TensorInfo: Sendable, Equatable {
        public var dtype: String
        public var shape: [Int]
        public var range: Range<Int>
    }

    public let path: String
    public let tensors: [String: TensorInfo]
    private let data: Data
    private let dataStart: Int

    /// Header limit: real headers are kilobytes; a bigger one is a corrupt or hostile file.
    public static let maxHeaderBytes = 16 * 1024 * 1024

    public init(path: String) throws(KianaAIError) {
        let d: Data
        do { d = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped) } catch {
            throw KianaAIError(.modelMissing, "cannot read \(path): \(error.localizedDescription)")
        }
        try self.init(data: d, path: path)
    }

    public init(data d: Data, path: String = "<memory>") throws(KianaAIError) {
        self.path = path
        func corrupt(_ why: String) -> KianaAIError { KianaAIError(.modelCorrupt, "\(path) is not a valid safetensors file: \(why)") }
        guard d.count >= 8 else { throw corrupt("shorter than its header length") }
        let n = d.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        guard n >= 2, n <= UInt64(Self.maxHeaderBytes), Int(n) <= d.count - 8 else { throw corrupt("header length \(n) out of range") }
        let header = d.subdata(in: 8..<(8 + Int(n)))
        guard let json = try? JSONSerialization.jsonObject(with: header) as? [String: Any] else { throw corrupt("header is not a JSON object") }
        let start = 8 + Int(n)
        let size = d.count - start
        var infos: [String: TensorInfo] = [:]
        for (name, value) in json where name != "__metadata__" {
            guard let o = value as? [String: Any], let dtype = o["dtype"] as? String,
                let shape = (o["shape"] as? [Any])?.compactMap({ ($0 as? NSNumber)?.intValue }),
                let offs = (o["data_offsets"] as? [Any])?.compactMap({ ($0 as? NSNumber)?.intValue }), offs.count == 2
            else { throw corrupt("tensor \(name) has a malformed entry") }
            guard offs[0] >= 0, offs[0] <= offs[1], offs[1] <= size else { throw corrupt("tensor \(name) lies outside the file") }
            guard shape.allSatisfy({ $0 >= 0 && $0 < 1 << 31 }) else { throw corrupt("tensor \(name) has a bad shape") }
            let width: Int
            switch dtype {
            case "F32", "I32": width = 4
            case "F16", "BF16", "I16": width = 2
            case "I64", "F64": width = 8
            case "U8", "I8", "BOOL": width = 1
            default: throw corrupt("tensor \(name) has unknown dtype \(dtype)")
            }
            guard shape.reduce(1, *) * width == offs[1] - offs[0] else { throw corrupt("tensor \(name) size does not match its shape") }
            infos[name] = TensorInfo(dtype: dtype, shape: shape, range: offs[0]..<offs[1])
        }
        tensors = infos
        data = d
        dataStart = start
    }

    /// A float32 tensor's values, checked against the expected shape.
    public func floats(_ name: String, shape: [Int]) throws(KianaAIError) -> [Float] {
        guard let t = tensors[name] else { throw KianaAIError(.modelCorrupt, "\(path) has no tensor \(name)") }
        guard t.dtype == "F32" else { throw KianaAIError(.modelCorrupt, "tensor \(name) is \(t.dtype), expected F32") }
        guard t.shape == shape else { throw KianaAIError(.modelCorrupt, "tensor \(name) has shape \(t.shape), expected \(shape)") }
        let count = t.range.count / 4
        var out = [Float](repeating: 0, count: count)
        out.withUnsafeMutableBytes { dst in
            data.withUnsafeBytes { src in
                dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[(dataStart + t.range.lowerBound)..<(dataStart + t.range.upperBound)]))
            }
        }
        #if _endian(big)
            out = out.map { Float(bitPattern: $0.bitPattern.byteSwapped) }
        #endif
        return out
    }
}
