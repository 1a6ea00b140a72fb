import CCoverGenreAPI
import CKernels
import CoverGenre
import Graph
import ImageIO
import ModelFormat
import SystemIO

#if canImport(Glibc)
import Glibc
#endif

// The C API of include/covergenre.h. Every function validates its arguments, turns Swift errors
// into a cg_status plus a thread-local message, and never lets an error escape as a trap.

private let versionString: UnsafePointer<CChar> = UnsafePointer(strdup(CoverGenreVersion.string)!)

@_cdecl("cg_api_version")
public func cg_api_version() -> UInt32 { UInt32(CG_API_VERSION_MAJOR * 10000 + CG_API_VERSION_MINOR * 100 + CG_API_VERSION_PATCH) }

@_cdecl("cg_version_string")
public func cg_version_string() -> UnsafePointer<CChar> { versionString }

@_cdecl("cg_kernel_variant")
public func cg_kernel_variant() -> UnsafePointer<CChar> { cgk_isa_name(cgk_isa()) }

// Indexed by status value: the codes are 1, 2, ... in order (CoverGenreError.Code), their names
// the one list in CoverGenreError.Code.name.
private let statusNames: [UnsafePointer<CChar>] = (["CG_OK"] + CoverGenreError.Code.allCases.map { "CG_ERR_" + $0.name.uppercased() })
    .map { UnsafePointer(strdup($0)!) }
private let unknownStatus: UnsafePointer<CChar> = UnsafePointer(strdup("CG_ERR_UNKNOWN")!)

@_cdecl("cg_status_string")
public func cg_status_string(_ status: cg_status) -> UnsafePointer<CChar> {
    Int(status.rawValue) < statusNames.count ? statusNames[Int(status.rawValue)] : unknownStatus
}

@_cdecl("cg_last_error")
public func cg_last_error() -> UnsafePointer<CChar> { ErrorState.current }

@_cdecl("cg_default_load_options")
public func cg_default_load_options() -> cg_load_options {
    let defaults = ModelOptions()
    return cg_load_options(
        struct_size: MemoryLayout<cg_load_options>.size, n_threads: 0, verify_checksum: 1,
        max_model_bytes: UInt64(defaults.fileLimits.maxFileBytes), max_metadata_bytes: UInt64(defaults.fileLimits.maxMetadataBytes),
        max_tensors: UInt32(defaults.fileLimits.maxTensors), max_image_width: UInt32(defaults.imageLimits.maxWidth),
        max_image_height: UInt32(defaults.imageLimits.maxHeight), reserved: 0,
        max_image_pixels: UInt64(defaults.imageLimits.maxPixels), max_image_bytes: UInt64(defaults.imageLimits.maxFileBytes),
        min_confidence: defaults.minConfidence, mirror_view: -1)
}

// MARK: Loading

private func load(_ out: UnsafeMutablePointer<OpaquePointer?>?, _ make: () throws -> Model) -> cg_status {
    guard let out else { return ErrorState.fail(.invalidArgument, "out_model is NULL") }
    out.pointee = nil
    return ErrorState.guarded { out.pointee = ModelHandle(model: try make()).opaque }
}

@_cdecl("cg_model_load")
public func cg_model_load(_ path: UnsafePointer<CChar>?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> cg_status {
    cg_model_load_with_options(path, nil, out)
}

@_cdecl("cg_model_load_with_options")
public func cg_model_load_with_options(_ path: UnsafePointer<CChar>?, _ options: UnsafePointer<cg_load_options>?,
                                       _ out: UnsafeMutablePointer<OpaquePointer?>?) -> cg_status {
    load(out) {
        guard let path else { throw CoverGenreError(.invalidArgument, "path is NULL") }
        return try Model(path: String(cString: path), options: try ModelOptions(options))
    }
}

@_cdecl("cg_model_load_memory")
public func cg_model_load_memory(_ data: UnsafeRawPointer?, _ size: UInt, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> cg_status {
    cg_model_load_memory_with_options(data, size, nil, out)
}

@_cdecl("cg_model_load_memory_with_options")
public func cg_model_load_memory_with_options(_ data: UnsafeRawPointer?, _ size: UInt, _ options: UnsafePointer<cg_load_options>?,
                                              _ out: UnsafeMutablePointer<OpaquePointer?>?) -> cg_status {
    load(out) {
        // An empty buffer is an (empty, hence invalid) model file, as an empty file on disk is.
        guard data != nil || size == 0 else { throw CoverGenreError(.invalidArgument, "model data is NULL") }
        let count = try Sizes.int(size, "size")
        return try Model(bytes: UnsafeRawBufferPointer(start: data, count: count), options: try ModelOptions(options))
    }
}

@_cdecl("cg_model_free")
public func cg_model_free(_ model: OpaquePointer?) {
    if let model { ModelHandle.release(model) }
}

// MARK: Describing

@_cdecl("cg_model_class_count")
public func cg_model_class_count(_ model: OpaquePointer?) -> Int { ModelHandle.from(model)?.model.classCount ?? 0 }

@_cdecl("cg_model_label")
public func cg_model_label(_ model: OpaquePointer?, _ index: UInt) -> UnsafePointer<CChar>? {
    guard let handle = ModelHandle.from(model), index < UInt(handle.labels.count) else { return nil }
    return UnsafePointer(handle.labels[Int(index)])
}

@_cdecl("cg_model_embedding_size")
public func cg_model_embedding_size(_ model: OpaquePointer?) -> Int { ModelHandle.from(model)?.model.embeddingSize ?? 0 }

@_cdecl("cg_model_input_size")
public func cg_model_input_size(_ model: OpaquePointer?, _ width: UnsafeMutablePointer<Int32>?, _ height: UnsafeMutablePointer<Int32>?) -> cg_status {
    guard let handle = ModelHandle.from(model) else { return ErrorState.fail(.invalidArgument, "model is NULL") }
    width?.pointee = Int32(handle.model.inputWidth)
    height?.pointee = Int32(handle.model.inputHeight)
    return CG_OK
}

@_cdecl("cg_model_name")
public func cg_model_name(_ model: OpaquePointer?) -> UnsafePointer<CChar>? { ModelHandle.from(model).map { UnsafePointer($0.name) } }

@_cdecl("cg_model_architecture")
public func cg_model_architecture(_ model: OpaquePointer?) -> UnsafePointer<CChar>? {
    ModelHandle.from(model).map { UnsafePointer($0.architecture) }
}

@_cdecl("cg_model_metadata_json")
public func cg_model_metadata_json(_ model: OpaquePointer?) -> UnsafePointer<CChar>? {
    ModelHandle.from(model).map { UnsafePointer($0.metadata) }
}

// MARK: One image

/// The three ways C callers pass an image, checked before use.
private enum CImage {
    static func file(_ path: UnsafePointer<CChar>?) throws -> ImageInput {
        guard let path else { throw CoverGenreError(.invalidArgument, "path is NULL") }
        return .path(String(cString: path))
    }

    static func encoded(_ data: UnsafeRawPointer?, _ size: UInt) throws -> ImageInput {
        guard let data else { throw CoverGenreError(.invalidArgument, "image data is NULL") }
        return .encoded(UnsafeRawBufferPointer(start: data, count: try Sizes.int(size, "size")))
    }

    static func rgb(_ rgb: UnsafePointer<UInt8>?, _ width: Int32, _ height: Int32, _ strideArgument: UInt, limits: ImageLimits) throws -> ImageInput {
        guard let rgb else { throw CoverGenreError(.invalidArgument, "rgb is NULL") }
        guard width > 0, height > 0 else { throw CoverGenreError(.invalidArgument, "image size \(width)x\(height) is not positive") }
        let stride = try Sizes.int(strideArgument, "row_stride")
        guard stride >= Int(width) * 3 else { throw CoverGenreError(.invalidArgument, "row_stride \(stride) is less than 3 * width") }
        _ = try Sizes.product(stride, "row_stride", Int(height), "height")
        guard Int(width) <= limits.maxWidth, Int(height) <= limits.maxHeight, Int(width) * Int(height) <= limits.maxPixels else {
            throw CoverGenreError(.imageTooLarge, "image is \(width)x\(height); beyond the configured limits")
        }
        return .rgb(RGBImage(borrowing: rgb, width: Int(width), height: Int(height), rowStride: stride))
    }
}

private func handle(_ pointer: OpaquePointer?) throws -> ModelHandle {
    guard let handle = ModelHandle.from(pointer) else { throw CoverGenreError(.invalidArgument, "model is NULL") }
    return handle
}

/// Checked conversions of the header's size_t arguments: no size is narrowed or wrapped.
enum Sizes {
    /// A size_t argument as an Int; beyond Int.max no buffer can exist.
    static func int(_ value: UInt, _ name: String) throws -> Int {
        guard let v = Int(exactly: value) else { throw CoverGenreError(.invalidArgument, "\(name) \(value) is larger than any buffer") }
        return v
    }

    /// a x b for a capacity check; an overflow is an invalid argument naming both.
    static func product(_ a: Int, _ aName: String, _ b: Int, _ bName: String) throws -> Int {
        let (p, overflow) = a.multipliedReportingOverflow(by: b)
        guard !overflow else { throw CoverGenreError(.invalidArgument, "\(aName) \(a) x \(bName) \(b) overflows a size") }
        return p
    }

    /// Refuses a capacity below what the result needs, before anything is written.
    static func require(_ capacity: UInt, _ need: Int, _ name: String, unit: String) throws {
        guard capacity >= UInt(need) else {
            throw CoverGenreError(.bufferTooSmall, "\(name) needs \(need) \(unit); its capacity is \(capacity)")
        }
    }
}

private let emptyPrediction = cg_prediction(class_index: -1, probability: 0, label: nil)

/// Writes the min(topK, class count) most probable classes to `out`; returns how many.
private func writePredictions(_ handle: ModelHandle, _ probabilities: UnsafeBufferPointer<Float>, topK: Int,
                              _ out: UnsafeMutablePointer<cg_prediction>) -> Int {
    let predictions = handle.model.predictions(Array(probabilities), top: topK)
    for (i, p) in predictions.enumerated() {
        out[i] = cg_prediction(class_index: Int32(p.index), probability: p.probability, label: UnsafePointer(handle.labels[p.index]))
    }
    return predictions.count
}

private func classify(_ pointer: OpaquePointer?, _ topKArgument: UInt, _ out: UnsafeMutablePointer<cg_prediction>?,
                      _ count: UnsafeMutablePointer<Int>?, _ input: (ModelHandle) throws -> ImageInput) -> cg_status {
    count?.pointee = 0
    return ErrorState.guarded {
        let handle = try handle(pointer)
        guard topKArgument > 0 else { throw CoverGenreError(.invalidArgument, "top_k must be at least 1") }
        let topK = try Sizes.int(topKArgument, "top_k")
        guard let out else { throw CoverGenreError(.invalidArgument, "out is NULL") }
        let probabilities = try handle.model.probabilities(try input(handle))
        let n = probabilities.withUnsafeBufferPointer { writePredictions(handle, $0, topK: topK, out) }
        count?.pointee = n
    }
}

private func floats(_ pointer: OpaquePointer?, _ out: UnsafeMutablePointer<Float>?, _ capacity: UInt, embedding: Bool,
                    _ input: (ModelHandle) throws -> ImageInput) -> cg_status {
    ErrorState.guarded {
        let handle = try handle(pointer)
        guard let out else { throw CoverGenreError(.invalidArgument, "out is NULL") }
        // A capacity beyond Int.max holds any result: what matters is that it is not too small.
        let buffer = UnsafeMutableBufferPointer(start: out, count: Int(clamping: capacity))
        if embedding {
            try handle.model.embedding(try input(handle), into: buffer)
        } else {
            try handle.model.probabilities(try input(handle), into: buffer)
        }
    }
}

@_cdecl("cg_classify_file")
public func cg_classify_file(_ model: OpaquePointer?, _ path: UnsafePointer<CChar>?, _ topK: UInt,
                             _ out: UnsafeMutablePointer<cg_prediction>?, _ count: UnsafeMutablePointer<Int>?) -> cg_status {
    classify(model, topK, out, count) { _ in try CImage.file(path) }
}

@_cdecl("cg_classify_image")
public func cg_classify_image(_ model: OpaquePointer?, _ data: UnsafeRawPointer?, _ size: UInt, _ topK: UInt,
                              _ out: UnsafeMutablePointer<cg_prediction>?, _ count: UnsafeMutablePointer<Int>?) -> cg_status {
    classify(model, topK, out, count) { _ in try CImage.encoded(data, size) }
}

@_cdecl("cg_classify_rgb")
public func cg_classify_rgb(_ model: OpaquePointer?, _ rgb: UnsafePointer<UInt8>?, _ width: Int32, _ height: Int32, _ stride: UInt,
                            _ topK: UInt, _ out: UnsafeMutablePointer<cg_prediction>?, _ count: UnsafeMutablePointer<Int>?) -> cg_status {
    classify(model, topK, out, count) { try CImage.rgb(rgb, width, height, stride, limits: $0.model.imageLimits) }
}

@_cdecl("cg_probabilities_file")
public func cg_probabilities_file(_ model: OpaquePointer?, _ path: UnsafePointer<CChar>?, _ out: UnsafeMutablePointer<Float>?,
                                  _ capacity: UInt) -> cg_status {
    floats(model, out, capacity, embedding: false) { _ in try CImage.file(path) }
}

@_cdecl("cg_probabilities_image")
public func cg_probabilities_image(_ model: OpaquePointer?, _ data: UnsafeRawPointer?, _ size: UInt, _ out: UnsafeMutablePointer<Float>?,
                                   _ capacity: UInt) -> cg_status {
    floats(model, out, capacity, embedding: false) { _ in try CImage.encoded(data, size) }
}

@_cdecl("cg_probabilities_rgb")
public func cg_probabilities_rgb(_ model: OpaquePointer?, _ rgb: UnsafePointer<UInt8>?, _ width: Int32, _ height: Int32, _ stride: UInt,
                                 _ out: UnsafeMutablePointer<Float>?, _ capacity: UInt) -> cg_status {
    floats(model, out, capacity, embedding: false) { try CImage.rgb(rgb, width, height, stride, limits: $0.model.imageLimits) }
}

@_cdecl("cg_embed_file")
public func cg_embed_file(_ model: OpaquePointer?, _ path: UnsafePointer<CChar>?, _ out: UnsafeMutablePointer<Float>?,
                          _ capacity: UInt) -> cg_status {
    floats(model, out, capacity, embedding: true) { _ in try CImage.file(path) }
}

@_cdecl("cg_embed_image")
public func cg_embed_image(_ model: OpaquePointer?, _ data: UnsafeRawPointer?, _ size: UInt, _ out: UnsafeMutablePointer<Float>?,
                           _ capacity: UInt) -> cg_status {
    floats(model, out, capacity, embedding: true) { _ in try CImage.encoded(data, size) }
}

@_cdecl("cg_embed_rgb")
public func cg_embed_rgb(_ model: OpaquePointer?, _ rgb: UnsafePointer<UInt8>?, _ width: Int32, _ height: Int32, _ stride: UInt,
                         _ out: UnsafeMutablePointer<Float>?, _ capacity: UInt) -> cg_status {
    floats(model, out, capacity, embedding: true) { try CImage.rgb(rgb, width, height, stride, limits: $0.model.imageLimits) }
}

// MARK: Prepared input

@_cdecl("cg_run_tensor")
public func cg_run_tensor(_ model: OpaquePointer?, _ input: UnsafePointer<Float>?, _ inputCount: UInt, _ batchArgument: UInt,
                          _ logits: UnsafeMutablePointer<Float>?, _ capacity: UInt) -> cg_status {
    ErrorState.guarded {
        let handle = try handle(model)
        guard let input, let logits else { throw CoverGenreError(.invalidArgument, "input or logits is NULL") }
        guard batchArgument > 0, batchArgument <= 1 << 16 else {
            throw CoverGenreError(.invalidArgument, "batch \(batchArgument) is outside 1...65536")
        }
        let batch = Int(batchArgument)
        let perImage = handle.model.inputWidth * handle.model.inputHeight * 3
        guard try Sizes.int(inputCount, "input_count") >= (try Sizes.product(batch, "batch", perImage, "floats per image")) else {
            throw CoverGenreError(.invalidArgument, "input holds \(inputCount) floats; batch \(batch) needs \(batch * perImage)")
        }
        try Sizes.require(capacity, try Sizes.product(batch, "batch", handle.model.classCount, "class count"), "logits", unit: "floats")
        try handle.model.logits(preprocessed: input, batch: batch, into: logits)
    }
}

// MARK: Many images

/// Writes a status and its message into a caller's cg_item_status, cutting the message at a
/// UTF-8 character boundary so that it stays valid text.
private func record(_ item: UnsafeMutablePointer<cg_item_status>, _ error: CoverGenreError?) {
    item.pointee.status = error.map { cg_status(rawValue: UInt32($0.code.rawValue)) } ?? CG_OK
    withUnsafeMutableBytes(of: &item.pointee.message) { buffer in
        var bytes = Array((error?.message ?? "").utf8)
        if bytes.count > buffer.count - 1 {
            var end = buffer.count - 1
            while end > 0 && bytes[end] & 0xC0 == 0x80 { end -= 1 } // not inside a character
            bytes = Array(bytes[..<end])
        }
        buffer.copyBytes(from: bytes)
        buffer[bytes.count] = 0
    }
}

/// The checks every batch call shares, then one run of Model.forEachResult (the implementation
/// Swift's batch calls use too): `width` floats or entries per image in `out`, every image's
/// outcome in `items`. Nothing is written unless every argument is valid.
private func runFiles(_ pointer: OpaquePointer?, _ pathList: UnsafePointer<UnsafePointer<CChar>?>?, _ countArgument: UInt,
                      _ threads: Int32, _ output: Model.BatchOutput, outCapacity: UInt, outIsNull: Bool, width: (Model) -> Int,
                      _ items: UnsafeMutablePointer<cg_item_status>?, _ itemsCapacity: UInt,
                      prepare: (Int, Int) -> Void, write: (Int, UnsafeBufferPointer<Float>) -> Void) -> cg_status {
    ErrorState.guarded {
        let handle = try handle(pointer)
        let count = try Sizes.int(countArgument, "count")
        guard threads >= 0 else { throw CoverGenreError(.invalidArgument, "n_threads \(threads) is negative") }
        guard count > 0 else { return }
        guard let pathList else { throw CoverGenreError(.invalidArgument, "paths is NULL") }
        guard !outIsNull else { throw CoverGenreError(.invalidArgument, "out is NULL") }
        guard let items else { throw CoverGenreError(.invalidArgument, "items is NULL") }
        if output == .embedding, handle.model.embeddingSize == 0 {
            throw CoverGenreError(.invalidArgument, "this model has no embedding output")
        }
        let perImage = width(handle.model)
        try Sizes.require(outCapacity, try Sizes.product(count, "count", perImage, "per-image size"), "out", unit: "entries")
        try Sizes.require(itemsCapacity, count, "items", unit: "entries")
        prepare(count, perImage)
        handle.model.forEachResult(count: count, output, threads: threads > 0 ? Int(threads) : nil, input: { i in
            guard let path = pathList[i] else { throw CoverGenreError(.invalidArgument, "paths[\(i)] is NULL") }
            return .path(String(cString: path))
        }) { i, result in
            switch result {
            case .success(let values):
                write(i, values)
                record(items + i, nil)
            case .failure(let error):
                record(items + i, error)
            }
        }
    }
}

@_cdecl("cg_classify_files")
public func cg_classify_files(_ model: OpaquePointer?, _ pathList: UnsafePointer<UnsafePointer<CChar>?>?, _ count: UInt, _ topK: UInt,
                              _ threads: Int32, _ out: UnsafeMutablePointer<cg_prediction>?, _ outCapacity: UInt,
                              _ items: UnsafeMutablePointer<cg_item_status>?, _ itemsCapacity: UInt) -> cg_status {
    guard topK > 0 else { return ErrorState.fail(.invalidArgument, "top_k must be at least 1") }
    guard let k = Int(exactly: topK) else { return ErrorState.fail(.invalidArgument, "top_k \(topK) is larger than any buffer") }
    let handle = ModelHandle.from(model)
    return runFiles(model, pathList, count, threads, .probabilities, outCapacity: outCapacity, outIsNull: out == nil,
                    width: { _ in k }, items, itemsCapacity,
                    prepare: { count, _ in out!.update(repeating: emptyPrediction, count: count * k) },
                    write: { i, probabilities in _ = writePredictions(handle!, probabilities, topK: k, out! + i * k) })
}

/// The float-vector batch calls: `width` floats per image, zeros for a failed one.
private func floatFiles(_ output: Model.BatchOutput, _ model: OpaquePointer?, _ pathList: UnsafePointer<UnsafePointer<CChar>?>?,
                        _ count: UInt, _ threads: Int32, _ out: UnsafeMutablePointer<Float>?, _ outCapacity: UInt,
                        _ items: UnsafeMutablePointer<cg_item_status>?, _ itemsCapacity: UInt) -> cg_status {
    runFiles(model, pathList, count, threads, output, outCapacity: outCapacity, outIsNull: out == nil,
             width: { output == .probabilities ? $0.classCount : $0.embeddingSize }, items, itemsCapacity,
             prepare: { count, width in out!.update(repeating: 0, count: count * width) },
             write: { i, values in (out! + i * values.count).update(from: values.baseAddress!, count: values.count) })
}

@_cdecl("cg_probabilities_files")
public func cg_probabilities_files(_ model: OpaquePointer?, _ pathList: UnsafePointer<UnsafePointer<CChar>?>?, _ count: UInt,
                                   _ threads: Int32, _ out: UnsafeMutablePointer<Float>?, _ outCapacity: UInt,
                                   _ items: UnsafeMutablePointer<cg_item_status>?, _ itemsCapacity: UInt) -> cg_status {
    floatFiles(.probabilities, model, pathList, count, threads, out, outCapacity, items, itemsCapacity)
}

@_cdecl("cg_embed_files")
public func cg_embed_files(_ model: OpaquePointer?, _ pathList: UnsafePointer<UnsafePointer<CChar>?>?, _ count: UInt,
                           _ threads: Int32, _ out: UnsafeMutablePointer<Float>?, _ outCapacity: UInt,
                           _ items: UnsafeMutablePointer<cg_item_status>?, _ itemsCapacity: UInt) -> cg_status {
    floatFiles(.embedding, model, pathList, count, threads, out, outCapacity, items, itemsCapacity)
}
