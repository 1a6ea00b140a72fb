import CKernels
import Kernels
import SystemIO

/// Builds a `.cgm` file: metadata plus named tensors, each stored as f32, f16 or int8.
public struct ModelWriter {
    public var metadata: JSON
    private var entries: [(name: String, shape: [Int], dtype: DType, data: [UInt8])] = []
    private var names: Set<String> = []

    public init(metadata: JSON) {
        self.metadata = metadata
    }

    public var tensorNames: [String] { entries.map(\.name) }

    /// Adds a tensor; `values.count` must equal the product of `shape`. int8 storage quantizes
    /// symmetrically per channel (the last dimension) to [-int8Levels, int8Levels].
    public mutating func add(_ name: String, shape: [Int], values: UnsafeBufferPointer<Float>, storage: DType = .float32,
                             int8Levels: Float = Quantization.weightLevels) throws {
        guard !name.isEmpty, name.utf8.count <= 1024 else { throw CoverGenreError(.invalidArgument, "tensor name \"\(name)\" is empty or too long") }
        guard !names.contains(name) else { throw CoverGenreError(.invalidArgument, "tensor \"\(name)\" added twice") }
        guard shape.allSatisfy({ $0 >= 0 }), shape.reduce(1, *) == values.count else {
            throw CoverGenreError(.invalidArgument, "tensor \"\(name)\": shape \(shape) does not hold \(values.count) values")
        }
        if storage == .int8 {
            guard let (scales, quantized) = Quantization.symmetric(values, channels: shape.last ?? 0, levels: int8Levels) else {
                throw CoverGenreError(.invalidArgument, "tensor \"\(name)\": int8 storage needs finite values and a last dimension (channels)")
            }
            try addInt8(name, shape: shape, scales: scales, values: quantized)
            return
        }
        var data = [UInt8](repeating: 0, count: values.count * storage.size)
        if values.count > 0 {
            data.withUnsafeMutableBytes { raw in
                switch storage {
                case .float32: raw.copyMemory(from: UnsafeRawBufferPointer(values))
                case .float16: cgk_float_to_half(values.baseAddress!, raw.baseAddress!.assumingMemoryBound(to: UInt16.self), values.count)
                case .int8: preconditionFailure("quantized above")
                }
            }
        }
        names.insert(name)
        entries.append((name, shape, storage, data))
    }

    /// Adds an int8 tensor from its per-channel scales (finite, positive; one per index of the last
    /// dimension) and values.
    public mutating func addInt8(_ name: String, shape: [Int], scales: [Float], values: [Int8]) throws {
        guard !name.isEmpty, name.utf8.count <= 1024 else { throw CoverGenreError(.invalidArgument, "tensor name \"\(name)\" is empty or too long") }
        guard !names.contains(name) else { throw CoverGenreError(.invalidArgument, "tensor \"\(name)\" added twice") }
        guard let channels = shape.last, channels > 0, scales.count == channels, shape.allSatisfy({ $0 >= 0 }),
              shape.reduce(1, *) == values.count
        else {
            throw CoverGenreError(.invalidArgument, "int8 tensor \"\(name)\": shape \(shape), \(scales.count) scales and \(values.count) values disagree")
        }
        guard scales.allSatisfy({ $0.isFinite && $0 > 0 }) else {
            throw CoverGenreError(.invalidArgument, "int8 tensor \"\(name)\": a scale is not finite and positive")
        }
        var data: [UInt8] = []
        data.reserveCapacity(4 * channels + values.count)
        for scale in scales { data.appendLE(scale.bitPattern) }
        data.append(contentsOf: values.map { UInt8(bitPattern: $0) })
        names.insert(name)
        entries.append((name, shape, .int8, data))
    }

    /// Adds a tensor of `file` exactly as stored there (no conversion, no requantization).
    public mutating func add(copying tensor: TensorInfo, of file: ModelFile) throws {
        guard !names.contains(tensor.name) else { throw CoverGenreError(.invalidArgument, "tensor \"\(tensor.name)\" added twice") }
        names.insert(tensor.name)
        entries.append((tensor.name, tensor.shape, tensor.dtype, Array(file.rawBytes(tensor))))
    }

    public mutating func add(_ name: String, shape: [Int], values: [Float], storage: DType = .float32,
                             int8Levels: Float = Quantization.weightLevels) throws {
        try values.withUnsafeBufferPointer { try add(name, shape: shape, values: $0, storage: storage, int8Levels: int8Levels) }
    }

    /// The complete file.
    public func serialize() -> [UInt8] {
        let metadataBytes = Array(metadata.serialized.utf8)
        var table: [UInt8] = []
        let metadataOffset = ModelFileLayout.headerSize
        let tableOffset = metadataOffset + metadataBytes.count
        // Each entry's size is known before offsets are assigned: 2 + name + 2 + 8*rank + 16.
        let tableSize = entries.reduce(0) { $0 + 2 + $1.name.utf8.count + 2 + 8 * $1.shape.count + 16 }
        var offset = ModelFileLayout.aligned(tableOffset + tableSize)
        var offsets: [Int] = []
        for entry in entries {
            offsets.append(offset)
            offset = ModelFileLayout.aligned(offset + entry.data.count)
        }
        let fileSize = entries.isEmpty ? tableOffset + tableSize : offsets.last! + entries.last!.data.count
        for (entry, dataOffset) in zip(entries, offsets) {
            table.appendLE(UInt16(entry.name.utf8.count))
            table.append(contentsOf: entry.name.utf8)
            table.append(entry.dtype.rawValue)
            table.append(UInt8(entry.shape.count))
            for d in entry.shape { table.appendLE(UInt64(d)) }
            table.appendLE(UInt64(dataOffset))
            table.appendLE(UInt64(entry.data.count))
        }
        precondition(table.count == tableSize)

        var file = [UInt8](repeating: 0, count: fileSize)
        file.replaceSubrange(0..<8, with: ModelFileLayout.magic)
        var header: [UInt8] = []
        // Version 1 unless a tensor needs more: older readers keep reading float models.
        header.appendLE(entries.map(\.dtype.formatVersion).max() ?? 1)
        header.appendLE(UInt32(ModelFileLayout.headerSize))
        header.appendLE(UInt64(fileSize))
        header.appendLE(UInt64(0)) // checksum, filled in below
        header.appendLE(UInt64(metadataOffset))
        header.appendLE(UInt64(metadataBytes.count))
        header.appendLE(UInt64(tableOffset))
        header.appendLE(UInt32(tableSize))
        header.appendLE(UInt32(entries.count))
        file.replaceSubrange(8..<(8 + header.count), with: header)
        file.replaceSubrange(metadataOffset..<(metadataOffset + metadataBytes.count), with: metadataBytes)
        file.replaceSubrange(tableOffset..<(tableOffset + tableSize), with: table)
        for (entry, dataOffset) in zip(entries, offsets) {
            file.replaceSubrange(dataOffset..<(dataOffset + entry.data.count), with: entry.data)
        }
        let checksum = file.withUnsafeBytes { raw in
            cgk_xxh64(raw.baseAddress! + ModelFileLayout.checksumStart, fileSize - ModelFileLayout.checksumStart, 0)
        }
        var checksumBytes: [UInt8] = []
        checksumBytes.appendLE(checksum)
        file.replaceSubrange(24..<32, with: checksumBytes)
        return file
    }

    /// Writes the file atomically (temporary file, fsync, rename).
    public func write(to path: String) throws {
        try Files.writeAtomically(path, serialize())
    }
}

extension [UInt8] {
    mutating func appendLE<T: FixedWidthInteger>(_ value: T) {
        Swift.withUnsafeBytes(of: value.littleEndian) { append(contentsOf: $0) }
    }
}
