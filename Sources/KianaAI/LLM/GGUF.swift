import Foundation
#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A read-only memory mapping of a whole file. The pages are the kernel's page cache: a model
/// is never copied into the heap, and several engines on one file share it.
/// `@unchecked`: the mapping is read-only (PROT_READ) and unmapped only in `deinit`.
public final class MappedFile: @unchecked Sendable {
    public let path: String
    public let base: UnsafeRawPointer
    public let count: Int

    public init(path: String) throws(KianaAIError) {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let why = String(cString: strerror(errno))
            throw KianaAIError(errno == ENOENT ? .modelMissing : .modelCorrupt, "cannot open \(path): \(why)")
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
            throw KianaAIError(.modelCorrupt, "\(path) is not a regular file")
        }
        count = Int(st.st_size)
        guard count > 0 else { throw KianaAIError(.modelCorrupt, "\(path) is empty") }
        guard let p = mmap(nil, count, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED else {
            throw KianaAIError(.modelCorrupt, "cannot map \(path): \(String(cString: strerror(errno)))")
        }
        base = UnsafeRawPointer(p)
    }

    deinit { munmap(UnsafeMutableRawPointer(mutating: base), count) }
}

/// The tensor element types this engine computes with (ggml's numbering).
public enum GGMLType: UInt32, Sendable, CustomStringConvertible {
    case f32 = 0
    case f16 = 1
    case q4_0 = 2
    case q4_1 = 3
    case q8_0 = 8

    /// Elements per block and bytes per block.
    public var blockSize: Int {
        switch self {
        case .f32, .f16: 1
        default: 32
        }
    }
    public var blockBytes: Int {
        switch self {
        case .f32: 4
        case .f16: 2
        case .q4_0: 18
        case .q4_1: 20
        case .q8_0: 34
        }
    }
    public var description: String {
        switch self {
        case .f32: "F32"
        case .f16: "F16"
        case .q4_0: "Q4_0"
        case .q4_1: "Q4_1"
        case .q8_0: "Q8_0"
        }
    }
    /// ggml's names for the types we do not compute with, for error messages.
    static func name(_ raw: UInt32) -> String {
        let names: [UInt32: String] = [
            6: "Q5_0", 7: "Q5_1", 9: "Q8_1", 10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K",
            14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S",
            20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16",
            26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M", 30: "BF16",
        ]
        return names[raw] ?? "type \(raw)"
    }
}

/// A GGUF metadata value (all thirteen value types of GGUF v3).
public enum GGUFValue: Sendable, Equatable {
    case uint(UInt64)
    case int(Int64)
    case float(Double)
    case bool(Bool)
    case string(String)
    case array([GGUFValue])
    /// Large arrays of strings (a tokenizer's vocabulary) are kept as one flat list.
    case strings([String])

    public var int: Int? {
        switch self {
        case .uint(let v): v <= UInt64(Int.max) ? Int(v) : nil
        case .int(let v): Int(v)
        default: nil
        }
    }
    public var double: Double? {
        switch self {
        case .float(let v): v
        case .uint(let v): Double(v)
        case .int(let v): Double(v)
        default: nil
        }
    }
    public var string: String? { if case .string(let s) = self { s } else { nil } }
    public var stringArray: [String]? {
        switch self {
        case .strings(let a): a
        case .array(let a): a.compactMap(\.string).count == a.count ? a.compactMap(\.string) : nil
        default: nil
        }
    }
    public var intArray: [Int]? {
        guard case .array(let a) = self else { return nil }
        let v = a.compactMap(\.int)
        return v.count == a.count ? v : nil
    }

    /// A short rendering for `kiana models show` and errors.
    public var summary: String {
        switch self {
        case .uint(let v): "\(v)"
        case .int(let v): "\(v)"
        case .float(let v): "\(v)"
        case .bool(let v): "\(v)"
        case .string(let s): s.count > 60 ? "\"\(s.prefix(57))…\"" : "\"\(s)\""
        case .array(let a): "[\(a.count) values]"
        case .strings(let a): "[\(a.count) strings]"
        }
    }
}

/// A GGUF v2/v3 file (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md): header,
/// metadata, tensor infos, aligned tensor data. Memory-mapped; every count, length and offset
/// is checked against the file before use, so a truncated or hostile file is an error, never
/// a crash.
public struct GGUFFile: Sendable {
    public struct Tensor: Sendable {
        public var name: String
        /// ggml order: dims[0] is the contiguous (input) dimension.
        public var dims: [Int]
        public var type: GGMLType
        /// Byte offset from the start of the file.
        public var offset: Int
        public var bytes: Int
        public var elements: Int { dims.reduce(1, *) }
    }

    public let file: MappedFile
    public let version: UInt32
    public let metadata: [String: GGUFValue]
    public let tensors: [String: Tensor]
    public let tensorOrder: [String]
    public let alignment: Int
    public var path: String { file.path }

    public init(path: String) throws(KianaAIError) {
        try self.init(file: try MappedFile(path: path))
    }

    public init(file: MappedFile) throws(KianaAIError) {
        self.file = file
        var r = Reader(base: file.base, count: file.count, path: file.path)
        let magic = try r.bytes(4)
        guard magic == Array("GGUF".utf8) else { throw r.corrupt("not a GGUF file (bad magic)") }
        version = try r.u32()
        guard version == 2 || version == 3 else {
            throw KianaAIError(.modelCorrupt, "\(file.path): GGUF version \(version) is not supported (2 and 3 are)")
        }
        let nTensors = try r.u64()
        let nKV = try r.u64()
        // Every tensor info and key-value pair takes at least 8+4 bytes: counts beyond that are lies.
        guard nTensors <= UInt64(file.count / 12), nKV <= UInt64(file.count / 12) else { throw r.corrupt("tensor or metadata count exceeds the file") }
        var meta: [String: GGUFValue] = [:]
        for _ in 0..<nKV {
            let key = try r.string()
            let type = try r.u32()
            meta[key] = try r.value(type, depth: 0)
        }
        metadata = meta
        let align = meta["general.alignment"]?.int ?? 32
        guard align > 0, align & (align - 1) == 0, align <= 1 << 16 else { throw r.corrupt("general.alignment \(align) is not a power of two") }
        alignment = align
        var infos: [(String, [Int], UInt32, UInt64)] = []
        for _ in 0..<nTensors {
            let name = try r.string()
            let nd = try r.u32()
            guard nd >= 1, nd <= 4 else { throw r.corrupt("tensor \(name) has \(nd) dimensions") }
            var dims: [Int] = []
            for _ in 0..<nd {
                let d = try r.u64()
                guard d >= 1, d < 1 << 32 else { throw r.corrupt("tensor \(name) has dimension \(d)") }
                dims.append(Int(d))
            }
            infos.append((name, dims, try r.u32(), try r.u64()))
        }
        let dataStart = (r.offset + align - 1) / align * align
        var out: [String: Tensor] = [:]
        var order: [String] = []
        for (name, dims, rawType, off) in infos {
            guard let type = GGMLType(rawValue: rawType) else {
                throw KianaAIError(
                    .modelCorrupt,
                    "\(file.path): tensor \(name) has type \(GGMLType.name(rawType)), which this engine does not support (F32, F16, Q4_0, Q4_1, Q8_0 are)")
            }
            let elements = dims.reduce(1) { $0.multipliedReportingOverflow(by: $1).partialValue }
            guard elements < 1 << 40, dims[0] % type.blockSize == 0 else { throw r.corrupt("tensor \(name) has a shape that does not fit \(type)") }
            let bytes = elements / type.blockSize * type.blockBytes
            guard off % UInt64(align) == 0, off < UInt64(file.count), dataStart + Int(off) + bytes <= file.count else {
                throw KianaAIError(.modelCorrupt, "\(file.path) is truncated or damaged: tensor \(name) lies outside the file (the download may be incomplete)")
            }
            guard out[name] == nil else { throw r.corrupt("tensor \(name) appears twice") }
            out[name] = Tensor(name: name, dims: dims, type: type, offset: dataStart + Int(off), bytes: bytes)
            order.append(name)
        }
        tensors = out
        tensorOrder = order
    }

    public func tensor(_ name: String) throws(KianaAIError) -> Tensor {
        guard let t = tensors[name] else { throw KianaAIError(.modelCorrupt, "\(path) has no tensor \(name)") }
        return t
    }

    public func pointer(_ t: Tensor) -> UnsafeRawPointer { file.base + t.offset }

    /// Total bytes of tensor data, and the parameter count.
    public var tensorBytes: Int { tensors.values.reduce(0) { $0 + $1.bytes } }
    public var parameterCount: Int { tensors.values.reduce(0) { $0 + $1.elements } }

    /// The most common weight type among matrices, as "Q4_1" (a quantisation label).
    public var quantisation: String {
        var count: [GGMLType: Int] = [:]
        for t in tensors.values where t.dims.count >= 2 { count[t.type, default: 0] += t.bytes }
        return count.max { $0.value < $1.value }?.key.description ?? "F32"
    }

    struct Reader {
        let base: UnsafeRawPointer
        let count: Int
        let path: String
        var offset = 0

        func corrupt(_ why: String) -> KianaAIError {
            KianaAIError(.modelCorrupt, "\(path) is not a valid GGUF file: \(why)")
        }
        mutating func need(_ n: Int) throws(KianaAIError) {
            guard n >= 0, n <= count - offset else {
                throw KianaAIError(.modelCorrupt, "\(path) is truncated (ends inside its header at byte \(count)); fetch it again")
            }
        }
        mutating func bytes(_ n: Int) throws(KianaAIError) -> [UInt8] {
            try need(n)
            defer { offset += n }
            return Array(UnsafeRawBufferPointer(start: base + offset, count: n))
        }
        mutating func load<T: FixedWidthInteger>(_: T.Type) throws(KianaAIError) -> T {
            try need(MemoryLayout<T>.size)
            defer { offset += MemoryLayout<T>.size }
            return T(littleEndian: base.loadUnaligned(fromByteOffset: offset, as: T.self))
        }
        mutating func u32() throws(KianaAIError) -> UInt32 { try load(UInt32.self) }
        mutating func u64() throws(KianaAIError) -> UInt64 { try load(UInt64.self) }
        mutating func string() throws(KianaAIError) -> String {
            let n = try u64()
            guard n <= UInt64(count - offset) else { throw corrupt("a string of \(n) bytes exceeds the file") }
            try need(Int(n))
            defer { offset += Int(n) }
            return String(decoding: UnsafeRawBufferPointer(start: base + offset, count: Int(n)), as: UTF8.self)
        }
        mutating func value(_ type: UInt32, depth: Int) throws(KianaAIError) -> GGUFValue {
            switch type {
            case 0: return .uint(UInt64(try load(UInt8.self)))
            case 1: return .int(Int64(try load(Int8.self)))
            case 2: return .uint(UInt64(try load(UInt16.self)))
            case 3: return .int(Int64(try load(Int16.self)))
            case 4: return .uint(UInt64(try load(UInt32.self)))
            case 5: return .int(Int64(try load(Int32.self)))
            case 6: return .float(Double(Float(bitPattern: try load(UInt32.self))))
            case 7:
                let b = try load(UInt8.self)
                guard b <= 1 else { throw corrupt("a bool holds \(b)") }
                return .bool(b == 1)
            case 8: return .string(try string())
            case 9:
                guard depth < 4 else { throw corrupt("arrays nested too deeply") }
                let et = try u32()
                let n = try u64()
                guard n <= UInt64(count - offset) else { throw corrupt("an array of \(n) values exceeds the file") }
                if et == 8 {
                    var a: [String] = []
                    a.reserveCapacity(Int(n))
                    for _ in 0..<n { a.append(try string()) }
                    return .strings(a)
                }
                var a: [GGUFValue] = []
                a.reserveCapacity(Int(n))
                for _ in 0..<n { a.append(try value(et, depth: depth + 1)) }
                return .array(a)
            case 10: return .uint(try load(UInt64.self))
            case 11: return .int(try load(Int64.self))
            case 12: return .float(Double(bitPattern: try load(UInt64.self)))
            default: throw corrupt("unknown metadata value type \(type)")
            }
        }
    }
}
