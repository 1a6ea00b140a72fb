import CKernels
import Kernels
import SystemIO

/// Storage types of tensors in a model file.
public enum DType: UInt8, Sendable, CaseIterable {
    case float32 = 0
    case float16 = 1
    /// Symmetric per-channel int8 (format version 2): one float32 scale per index of the last
    /// dimension (a convolution's or linear layer's output channel), then the values; the zero
    /// point is 0 and a value is `q * scale[channel]`. See docs/model-format.md.
    case int8 = 2

    /// Bytes per element (int8's scales come on top: `byteCount(shape:)`).
    public var size: Int {
        switch self {
        case .float32: return 4
        case .float16: return 2
        case .int8: return 1
        }
    }

    public var name: String {
        switch self {
        case .float32: return "f32"
        case .float16: return "f16"
        case .int8: return "i8"
        }
    }

    /// The first format version that can hold this storage type.
    public var formatVersion: UInt32 { self == .int8 ? 2 : 1 }

    /// Stored bytes of a tensor of `shape`: its elements, and for int8 one 4-byte scale per
    /// channel (the last dimension) before them. Nil when int8 has no channel dimension.
    public func byteCount(shape: [Int]) -> Int? {
        let elements = shape.reduce(1, *)
        guard self == .int8 else { return elements * size }
        guard let channels = shape.last, channels > 0 else { return nil }
        return 4 * channels + elements
    }
}

/// One entry of the tensor table.
public struct TensorInfo: Equatable, Sendable {
    public let name: String
    public let dtype: DType
    public let shape: [Int]
    /// Absolute file offset of the first byte; a multiple of 64.
    public let offset: Int
    public let byteCount: Int

    public var elementCount: Int { shape.reduce(1, *) }
    /// Channels of an int8 tensor: one scale each (the last dimension).
    public var channels: Int { shape.last ?? 1 }
}

/// Bounds the reader enforces before it trusts anything in a file. All are configurable
/// (the C API's load options) and documented in docs/model-format.md.
public struct ModelFileLimits: Sendable {
    public var maxFileBytes = 2 << 30
    public var maxMetadataBytes = 16 << 20
    public var maxTensors = 1 << 16
    public var maxRank = 8
    public var maxNameBytes = 1024
    /// Verifying reads every byte once (about 2 ms per 20 MB here); turning it off makes loading
    /// lazier but lets a damaged file produce wrong answers.
    public var verifyChecksum = true

    public init() {}
}

/// The `.cgm` container: header, JSON metadata, tensor table, 64-byte-aligned little-endian data.
/// See docs/model-format.md for the byte layout.
public enum ModelFileLayout {
    public static let magic: [UInt8] = [0x89, 0x43, 0x47, 0x4D, 0x0D, 0x0A, 0x1A, 0x0A] // "\x89CGM\r\n\x1a\n"
    /// The newest version this library reads and writes. A file is written as version 1 unless it
    /// holds int8 tensors, so readers from before int8 still read every float model.
    public static let version: UInt32 = 2
    public static let versions: ClosedRange<UInt32> = 1...2
    public static let headerSize = 64
    public static let alignment = 64
    /// The checksum covers every byte after its own field.
    public static let checksumStart = 32

    public static func aligned(_ n: Int) -> Int { (n + alignment - 1) / alignment * alignment }
}

/// A validated, read-only model file. Float32 tensors are used in place (memory-mapped or in an
/// aligned copy of the caller's bytes); float16 tensors are widened on request.
public final class ModelFile: @unchecked Sendable {
    public let version: Int
    public let metadata: JSON
    public let tensors: [TensorInfo]
    public let fileSize: Int
    public let checksum: UInt64
    private let index: [String: Int]
    private let base: UnsafeRawBufferPointer
    private let owner: AnyObject

    /// Memory-maps and validates the file at `path`.
    public convenience init(path: String, limits: ModelFileLimits = ModelFileLimits()) throws {
        let mapped = try MappedFile(path: path, maxBytes: limits.maxFileBytes)
        try self.init(bytes: mapped.bytes, owner: mapped, limits: limits, source: path)
    }

    /// Validates a copy of `bytes` (the caller's buffer may be freed afterwards).
    public convenience init(copying bytes: UnsafeRawBufferPointer, limits: ModelFileLimits = ModelFileLimits()) throws {
        guard bytes.count <= limits.maxFileBytes else {
            throw CoverGenreError(.limitExceeded, "model is \(bytes.count) bytes; the limit is \(limits.maxFileBytes)")
        }
        guard let copy = ByteBuffer(count: bytes.count) else {
            throw CoverGenreError(.outOfMemory, "cannot allocate \(bytes.count) bytes for the model")
        }
        if bytes.count > 0 { copy.pointer.copyMemory(from: bytes.baseAddress!, byteCount: bytes.count) }
        try self.init(bytes: UnsafeRawBufferPointer(start: copy.pointer, count: bytes.count), owner: copy,
                      limits: limits, source: "model in memory")
    }

    private init(bytes: UnsafeRawBufferPointer, owner: AnyObject, limits: ModelFileLimits, source: String) throws {
        func invalid(_ what: String) -> CoverGenreError { CoverGenreError(.modelFormat, "\(source): \(what)") }
        let size = bytes.count
        guard size >= ModelFileLayout.headerSize else {
            throw invalid(size == 0 ? "empty file" : "\(size) bytes is too short for a model header")
        }
        guard ModelFileLayout.magic.indices.allSatisfy({ bytes[$0] == ModelFileLayout.magic[$0] }) else {
            throw invalid("not a CoverGenre model (bad magic bytes)")
        }
        var reader = ByteReader(bytes: bytes, position: 8)
        let version = try reader.u32()
        guard ModelFileLayout.versions.contains(version) else {
            throw CoverGenreError(.modelUnsupported, "\(source): model format version \(version); this library reads versions "
                                  + "\(ModelFileLayout.versions.lowerBound) to \(ModelFileLayout.versions.upperBound)")
        }
        let headerSize = try reader.u32()
        guard headerSize == ModelFileLayout.headerSize else { throw invalid("header size \(headerSize), expected 64") }
        let declaredSize = try reader.u64()
        guard declaredSize == UInt64(size) else {
            throw invalid(declaredSize > UInt64(size)
                ? "truncated: the header says \(declaredSize) bytes, the file has \(size)"
                : "\(UInt64(size) - declaredSize) unexpected bytes after the declared end")
        }
        let checksum = try reader.u64()
        if limits.verifyChecksum {
            let actual = cgk_xxh64(bytes.baseAddress! + ModelFileLayout.checksumStart, size - ModelFileLayout.checksumStart, 0)
            guard actual == checksum else {
                throw CoverGenreError(.checksum, "\(source): checksum mismatch (file damaged or modified)")
            }
        }
        let metadataOffset = try reader.u64(), metadataSize = try reader.u64()
        let tableOffset = try reader.u64()
        let tableSize = Int(try reader.u32()), tensorCount = Int(try reader.u32())

        guard metadataSize <= UInt64(limits.maxMetadataBytes) else {
            throw CoverGenreError(.limitExceeded, "\(source): metadata is \(metadataSize) bytes; the limit is \(limits.maxMetadataBytes)")
        }
        guard tensorCount <= limits.maxTensors else {
            throw CoverGenreError(.limitExceeded, "\(source): \(tensorCount) tensors; the limit is \(limits.maxTensors)")
        }
        let metadataRange = try ModelFile.range(metadataOffset, metadataSize, within: size, what: "metadata", invalid)
        let tableRange = try ModelFile.range(tableOffset, UInt64(tableSize), within: size, what: "tensor table", invalid)
        guard metadataRange.lowerBound >= ModelFileLayout.headerSize, tableRange.lowerBound >= ModelFileLayout.headerSize,
              !metadataRange.overlaps(tableRange) else { throw invalid("metadata and tensor table overlap the header or each other") }

        let metadata = try JSON.parse(UnsafeRawBufferPointer(rebasing: bytes[metadataRange]))
        guard case .object = metadata else { throw invalid("metadata is not a JSON object") }

        let dataStart = max(metadataRange.upperBound, tableRange.upperBound)
        var table = ByteReader(bytes: UnsafeRawBufferPointer(rebasing: bytes[tableRange]), position: 0)
        var tensors: [TensorInfo] = []
        tensors.reserveCapacity(tensorCount)
        var index: [String: Int] = [:]
        for i in 0..<tensorCount {
            let entry = try ModelFile.readEntry(&table, limits: limits, dataStart: dataStart, fileSize: size) {
                invalid("tensor #\(i): \($0)")
            }
            guard entry.dtype.formatVersion <= version else {
                throw invalid("tensor \"\(entry.name)\": \(entry.dtype.name) storage needs format version \(entry.dtype.formatVersion), the file says \(version)")
            }
            if entry.dtype == .int8 {
                // The scales come before the values; a scale that is not finite and positive would
                // make every value of its channel meaningless.
                let scales = UnsafeRawBufferPointer(rebasing: bytes[entry.offset..<(entry.offset + 4 * entry.channels)])
                for c in 0..<entry.channels {
                    let scale = Float(bitPattern: UInt32(littleEndian: scales.loadUnaligned(fromByteOffset: 4 * c, as: UInt32.self)))
                    guard scale.isFinite, scale > 0 else {
                        throw invalid("tensor \"\(entry.name)\": int8 scale of channel \(c) is \(scale), not finite and positive")
                    }
                }
            }
            guard index[entry.name] == nil else { throw invalid("tensor name \"\(entry.name)\" appears twice") }
            index[entry.name] = i
            tensors.append(entry)
        }
        guard table.position == tableRange.count else { throw invalid("tensor table has \(tableRange.count - table.position) trailing bytes") }
        let byOffset = tensors.sorted { $0.offset < $1.offset }
        for (a, b) in zip(byOffset, byOffset.dropFirst()) where a.offset + a.byteCount > b.offset {
            throw invalid("tensors \"\(a.name)\" and \"\(b.name)\" overlap")
        }

        self.version = Int(version)
        self.metadata = metadata
        self.tensors = tensors
        self.index = index
        self.fileSize = size
        self.checksum = checksum
        self.base = bytes
        self.owner = owner
    }

    private static func range(_ offset: UInt64, _ count: UInt64, within size: Int, what: String,
                              _ invalid: (String) -> CoverGenreError) throws -> Range<Int> {
        guard offset <= UInt64(size), count <= UInt64(size) - offset else {
            throw invalid("\(what) (\(count) bytes at \(offset)) lies outside the \(size)-byte file")
        }
        return Int(offset)..<Int(offset + count)
    }

    private static func readEntry(_ r: inout ByteReader, limits: ModelFileLimits, dataStart: Int, fileSize: Int,
                                  _ invalid: (String) -> CoverGenreError) throws -> TensorInfo {
        let nameLength = Int(try r.u16())
        guard nameLength > 0, nameLength <= limits.maxNameBytes else { throw invalid("name length \(nameLength)") }
        let nameBytes = try r.bytes(nameLength)
        guard let name = String(validating: nameBytes, as: UTF8.self) else { throw invalid("name is not UTF-8") }
        guard let dtype = DType(rawValue: try r.u8()) else { throw invalid("\(name): unknown dtype") }
        let rank = Int(try r.u8())
        guard rank <= limits.maxRank else { throw invalid("\(name): rank \(rank) exceeds \(limits.maxRank)") }
        var shape: [Int] = []
        var elements: UInt64 = 1
        for _ in 0..<rank {
            let d = try r.u64()
            guard d <= UInt64(Int32.max) else { throw invalid("\(name): dimension \(d) too large") }
            let (product, overflow) = elements.multipliedReportingOverflow(by: d)
            guard !overflow, product <= UInt64(fileSize) else { throw invalid("\(name): shape larger than the file") }
            elements = product
            shape.append(Int(d))
        }
        let offset = try r.u64(), byteCount = try r.u64()
        guard let expected = dtype.byteCount(shape: shape) else {
            throw invalid("\(name): \(dtype.name) storage needs a last dimension of at least 1 (its channels), shape is \(shape)")
        }
        guard byteCount == UInt64(expected) else {
            throw invalid("\(name): \(byteCount) bytes do not match shape \(shape) of \(dtype.name)")
        }
        guard offset % UInt64(ModelFileLayout.alignment) == 0 else { throw invalid("\(name): offset \(offset) is not 64-byte aligned") }
        guard offset >= UInt64(dataStart), offset <= UInt64(fileSize), byteCount <= UInt64(fileSize) - offset else {
            throw invalid("\(name): data (\(byteCount) bytes at \(offset)) lies outside the data section")
        }
        return TensorInfo(name: name, dtype: dtype, shape: shape, offset: Int(offset), byteCount: Int(byteCount))
    }

    public func info(_ name: String) -> TensorInfo? { index[name].map { tensors[$0] } }

    /// The stored bytes of a tensor (valid while this object lives).
    public func rawBytes(_ tensor: TensorInfo) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: base[tensor.offset..<(tensor.offset + tensor.byteCount)])
    }

    /// An int8 tensor's per-channel scales and values (valid while this object lives), else nil.
    public func int8(_ tensor: TensorInfo) -> (scales: UnsafePointer<Float>, values: UnsafePointer<Int8>)? {
        guard tensor.dtype == .int8 else { return nil }
        // Offsets are 64-byte aligned, so the scales are aligned floats and the values follow them.
        let raw = rawBytes(tensor).baseAddress!
        return (raw.assumingMemoryBound(to: Float.self), (raw + 4 * tensor.channels).assumingMemoryBound(to: Int8.self))
    }

    /// A tensor as float32: in place for f32 storage, widened into a new buffer for f16,
    /// dequantized (`q * scale[channel]`) for int8.
    public func floats(_ name: String) throws -> FloatTensor {
        guard let tensor = info(name) else { throw CoverGenreError(.modelFormat, "model has no tensor \"\(name)\"") }
        let raw = rawBytes(tensor)
        switch tensor.dtype {
        case .float32:
            let pointer = raw.baseAddress.map { $0.assumingMemoryBound(to: Float.self) }
            return FloatTensor(shape: tensor.shape, pointer: pointer ?? FloatTensor.empty, owner: self)
        case .float16:
            guard let buffer = FloatBuffer(uninitializedCount: tensor.elementCount) else {
                throw CoverGenreError(.outOfMemory, "cannot allocate tensor \"\(name)\"")
            }
            if tensor.elementCount > 0 {
                cgk_half_to_float(raw.baseAddress!.assumingMemoryBound(to: UInt16.self), buffer.pointer, tensor.elementCount)
            }
            return FloatTensor(shape: tensor.shape, pointer: buffer.pointer, owner: buffer)
        case .int8:
            guard let buffer = FloatBuffer(uninitializedCount: tensor.elementCount) else {
                throw CoverGenreError(.outOfMemory, "cannot allocate tensor \"\(name)\"")
            }
            let (scales, values) = int8(tensor)!
            let channels = tensor.channels
            for i in 0..<tensor.elementCount { buffer.pointer[i] = Float(values[i]) * scales[i % channels] }
            return FloatTensor(shape: tensor.shape, pointer: buffer.pointer, owner: buffer)
        }
    }
}

/// A read-only float32 tensor whose memory is kept alive by `owner`.
public struct FloatTensor: @unchecked Sendable {
    public let shape: [Int]
    public let pointer: UnsafePointer<Float>
    public let owner: AnyObject

    static let emptyStorage = FloatBuffer(count: 1)!
    static var empty: UnsafePointer<Float> { UnsafePointer(emptyStorage.pointer) }

    public init(shape: [Int], pointer: UnsafePointer<Float>, owner: AnyObject) {
        self.shape = shape
        self.pointer = pointer
        self.owner = owner
    }

    public var count: Int { shape.reduce(1, *) }

    /// A copy of the values. (A view would dangle once this struct, the last owner of a widened
    /// f16 buffer, is released; callers that need the pointer keep `owner` alive themselves.)
    public var array: [Float] { withExtendedLifetime(owner) { Array(UnsafeBufferPointer(start: pointer, count: count)) } }
}

/// A 64-byte-aligned byte block owned by a class, so pointers into it stay valid while it lives.
final class ByteBuffer {
    let pointer: UnsafeMutableRawPointer

    init?(count: Int) {
        guard let p = FloatBuffer(count: (count + 3) / 4) else { return nil }
        storage = p
        pointer = UnsafeMutableRawPointer(p.pointer)
    }

    private let storage: FloatBuffer
}

/// Little-endian reads that check every access against the buffer end.
struct ByteReader {
    let bytes: UnsafeRawBufferPointer
    var position: Int

    private mutating func take(_ n: Int) throws -> UnsafeRawBufferPointer {
        guard n <= bytes.count - position else {
            throw CoverGenreError(.modelFormat, "model table ends in the middle of an entry")
        }
        defer { position += n }
        return UnsafeRawBufferPointer(rebasing: bytes[position..<(position + n)])
    }

    mutating func u8() throws -> UInt8 { try take(1)[0] }
    mutating func u16() throws -> UInt16 { UInt16(littleEndian: try take(2).loadUnaligned(as: UInt16.self)) }
    mutating func u32() throws -> UInt32 { UInt32(littleEndian: try take(4).loadUnaligned(as: UInt32.self)) }
    mutating func u64() throws -> UInt64 { UInt64(littleEndian: try take(8).loadUnaligned(as: UInt64.self)) }
    mutating func bytes(_ n: Int) throws -> [UInt8] { Array(try take(n)) }
}
