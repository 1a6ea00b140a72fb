import ModelFormat
import SystemIO

/// Reads `.safetensors` files: an 8-byte little-endian header length, a JSON header mapping names
/// to {dtype, shape, data_offsets}, then the data. The format's own rules are enforced: offsets
/// inside the data section, sizes matching shapes, no overlaps, a bounded header.
public enum SafeTensors {
    public static let maxHeaderBytes = 100 << 20

    public static func read(path: String, maxBytes: Int = 4 << 30) throws -> StateDict {
        let file = try MappedFile(path: path, maxBytes: maxBytes)
        do {
            return try read(file.bytes)
        } catch let error as CoverGenreError {
            throw CoverGenreError(error.code, "\(path): \(error.message)")
        }
    }

    public static func read(_ bytes: UnsafeRawBufferPointer) throws -> StateDict {
        func fail(_ what: String) -> CoverGenreError { CoverGenreError(.modelFormat, "safetensors: \(what)") }
        guard bytes.count >= 8 else { throw fail("file too short for a header") }
        let headerLength = UInt64(littleEndian: bytes.loadUnaligned(as: UInt64.self))
        guard headerLength <= UInt64(maxHeaderBytes), headerLength <= UInt64(bytes.count - 8) else {
            throw fail("header length \(headerLength) is larger than the file or the limit")
        }
        let header = try JSON.parse(UnsafeRawBufferPointer(rebasing: bytes[8..<(8 + Int(headerLength))]))
        guard case .object(let entries) = header else { throw fail("header is not a JSON object") }
        let dataStart = 8 + Int(headerLength)
        let dataSize = bytes.count - dataStart
        var ranges: [(Range<Int>, String)] = []
        var parsed: [(String, TorchDType, [Int], Range<Int>)] = []
        for (name, value) in entries where name != "__metadata__" {
            guard case .object(let e) = value, let dtypeName = e["dtype"]?.string,
                  let shapeItems = e["shape"]?.array, let offsets = e["data_offsets"]?.array, offsets.count == 2,
                  let begin = offsets[0].int, let end = offsets[1].int else {
                throw fail("\(name): entry needs dtype, shape and data_offsets")
            }
            guard let dtype = dtypes[dtypeName] else { throw fail("\(name): unsupported dtype \(dtypeName)") }
            let shape = shapeItems.compactMap { $0.int }
            guard shape.count == shapeItems.count, shape.count <= 8, shape.allSatisfy({ $0 >= 0 && $0 <= Int(Int32.max) }) else {
                throw fail("\(name): malformed shape")
            }
            var count = 1
            for d in shape {
                let (p, overflow) = count.multipliedReportingOverflow(by: d)
                guard !overflow, p <= dataSize else { throw fail("\(name): shape larger than the file") }
                count = p
            }
            guard begin >= 0, end >= begin, end <= dataSize, end - begin == count * dtype.size else {
                throw fail("\(name): data_offsets [\(begin), \(end)) do not fit its shape or the file")
            }
            ranges.append((begin..<end, name))
            parsed.append((name, dtype, shape, begin..<end))
        }
        ranges.sort { $0.0.lowerBound < $1.0.lowerBound }
        for (a, b) in zip(ranges, ranges.dropFirst()) where a.0.upperBound > b.0.lowerBound {
            throw fail("tensors \(a.1) and \(b.1) overlap")
        }
        var result = StateDict()
        // Checkpoint order: by offset, which is the order writers store tensors in.
        for (name, dtype, shape, range) in parsed.sorted(by: { $0.3.lowerBound < $1.3.lowerBound }) {
            let storage = StorageReference(key: name, dtype: dtype, elementCount: range.count / dtype.size)
            let reference = TensorReference(storage: storage, offset: 0, shape: shape, stride: TorchCheckpoint.contiguousStrides(shape))
            let data = UnsafeRawBufferPointer(rebasing: bytes[(dataStart + range.lowerBound)..<(dataStart + range.upperBound)])
            try result.insert(name, try TorchCheckpoint.materialize(reference, name: name, bytes: data))
        }
        return result
    }

    static let dtypes: [String: TorchDType] = [
        "F32": .float32, "F16": .float16, "BF16": .bfloat16, "F64": .float64, "I64": .int64, "I32": .int32,
        "I16": .int16, "I8": .int8, "U8": .uint8, "BOOL": .bool,
    ]
}
