import CCoverGenreAPI
import CoverGenre

#if canImport(Glibc)
import Glibc
#endif

// The C API of include/covergenre.h. Every function validates its arguments, turns Swift errors
// into a cg_status plus a thread-local message, and never lets an error escape as a trap.

private let versionString: UnsafePointer<CChar> = UnsafePointer(strdup("0.1.0")!)

@_cdecl("cg_api_version")
public func cg_api_version() -> UInt32 { UInt32(CG_API_VERSION_MAJOR * 10000 + CG_API_VERSION_MINOR * 100 + CG_API_VERSION_PATCH) }

@_cdecl("cg_version_string")
public func cg_version_string() -> UnsafePointer<CChar> { versionString }

private let statusNames: [UnsafePointer<CChar>] = ([
    "CG_OK", "CG_ERR_INVALID_ARGUMENT", "CG_ERR_IO", "CG_ERR_MODEL_FORMAT", "CG_ERR_MODEL_UNSUPPORTED", "CG_ERR_CHECKSUM",
    "CG_ERR_IMAGE_DECODE", "CG_ERR_IMAGE_UNSUPPORTED", "CG_ERR_IMAGE_TOO_LARGE", "CG_ERR_BUFFER_TOO_SMALL",
    "CG_ERR_OUT_OF_MEMORY", "CG_ERR_INTERNAL", "CG_ERR_LIMIT_EXCEEDED",
] as [String]).map { UnsafePointer(strdup($0)!) }
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
        max_image_pixels: UInt64(defaults.imageLimits.maxPixels), max_image_bytes: UInt64(defaults.imageLimits.maxFileBytes))
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
public func cg_model_load_memory(_ data: UnsafeRawPointer?, _ size: Int, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> cg_status {
    cg_model_load_memory_with_options(data, size, nil, out)
}

@_cdecl("cg_model_load_memory_with_options")
public func cg_model_load_memory_with_options(_ data: UnsafeRawPointer?, _ size: Int, _ options: UnsafePointer<cg_load_options>?,
                                              _ out: UnsafeMutablePointer<OpaquePointer?>?) -> cg_status {
    load(out) {
        // An empty buffer is an (empty, hence invalid) model file, as an empty file on disk is.
        guard data != nil || size == 0 else { throw CoverGenreError(.invalidArgument, "model data is NULL") }
        guard size >= 0 else { throw CoverGenreError(.invalidArgument, "model size is negative") }
        return try Model(bytes: UnsafeRawBufferPointer(start: data, count: size), options: try ModelOptions(options))
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
public func cg_model_label(_ model: OpaquePointer?, _ index: Int) -> UnsafePointer<CChar>? {
    guard let handle = ModelHandle.from(model), index >= 0, index < handle.labels.count else { return nil }
    return UnsafePointer(handle.labels[index])
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

    static func encoded(_ data: UnsafeRawPointer?, _ size: Int) throws -> ImageInput {
        guard let data else { throw CoverGenreError(.invalidArgument, "image data is NULL") }
        return .encoded(UnsafeRawBufferPointer(start: data, count: size))
    }

    static func rgb(_ rgb: UnsafePointer<UInt8>?, _ width: Int32, _ height: Int32, _ stride: Int, limits: ImageLimits) throws -> ImageInput {
        guard let rgb else { throw CoverGenreError(.invalidArgument, "rgb is NULL") }
        guard width > 0, height > 0 else { throw CoverGenreError(.invalidArgument, "image size \(width)x\(height) is not positive") }
        guard stride >= Int(width) * 3 else { throw CoverGenreError(.invalidArgument, "row_stride \(stride) is less than 3 * width") }
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

private func writePredictions(_ handle: ModelHandle, _ probabilities: UnsafeBufferPointer<Float>, topK: Int,
                              _ out: UnsafeMutablePointer<cg_prediction>) -> Int {
    let predictions = handle.model.predictions(Array(probabilities), top: topK)
    for (i, p) in predictions.enumerated() {
        out[i] = cg_prediction(class_index: Int32(p.index), probability: p.probability, label: UnsafePointer(handle.labels[p.index]))
    }
    for i in predictions.count..<topK { out[i] = cg_prediction(class_index: -1, probability: 0, label: nil) }
    return predictions.count
}

private func classify(_ pointer: OpaquePointer?, _ topK: Int, _ out: UnsafeMutablePointer<cg_prediction>?,
                      _ count: UnsafeMutablePointer<Int>?, _ input: (ModelHandle) throws -> ImageInput) -> cg_status {
    count?.pointee = 0
    return ErrorState.guarded {
        let handle = try handle(pointer)
        guard topK > 0 else { throw CoverGenreError(.invalidArgument, "top_k must be at least 1") }
        guard let out else { throw CoverGenreError(.invalidArgument, "out is NULL") }
        let probabilities = try handle.model.probabilities(try input(handle))
        let n = probabilities.withUnsafeBufferPointer { writePredictions(handle, $0, topK: topK, out) }
        count?.pointee = n
    }
}

private func floats(_ pointer: OpaquePointer?, _ out: UnsafeMutablePointer<Float>?, _ capacity: Int, embedding: Bool,
                    _ input: (ModelHandle) throws -> ImageInput) -> cg_status {
    ErrorState.guarded {
        let handle = try handle(pointer)
        guard let out else { throw CoverGenreError(.invalidArgument, "out is NULL") }
        let buffer = UnsafeMutableBufferPointer(start: out, count: max(capacity, 0))
        if embedding {
            try handle.model.embedding(try input(handle), into: buffer)
        } else {
            try handle.model.probabilities(try input(handle), into: buffer)
        }
    }
}

@_cdecl("cg_classify_file")
public func cg_classify_file(_ model: OpaquePointer?, _ path: UnsafePointer<CChar>?, _ topK: Int,
                             _ out: UnsafeMutablePointer<cg_prediction>?, _ count: UnsafeMutablePointer<Int>?) -> cg_status {
    classify(model, topK, out, count) { _ in try CImage.file(path) }
}

@_cdecl("cg_classify_image")
public func cg_classify_image(_ model: OpaquePointer?, _ data: UnsafeRawPointer?, _ size: Int, _ topK: Int,
                              _ out: UnsafeMutablePointer<cg_prediction>?, _ count: UnsafeMutablePointer<Int>?) -> cg_status {
    classify(model, topK, out, count) { _ in try CImage.encoded(data, size) }
}

@_cdecl("cg_classify_rgb")
public func cg_classify_rgb(_ model: OpaquePointer?, _ rgb: UnsafePointer<UInt8>?, _ width: Int32, _ height: Int32, _ stride: Int,
                            _ topK: Int, _ out: UnsafeMutablePointer<cg_prediction>?, _ count: UnsafeMutablePointer<Int>?) -> cg_status {
    classify(model, topK, out, count) { try CImage.rgb(rgb, width, height, stride, limits: $0.model.imageLimits) }
}

@_cdecl("cg_probabilities_file")
public func cg_probabilities_file(_ model: OpaquePointer?, _ path: UnsafePointer<CChar>?, _ out: UnsafeMutablePointer<Float>?,
                                  _ capacity: Int) -> cg_status {
    floats(model, out, capacity, embedding: false) { _ in try CImage.file(path) }
}

@_cdecl("cg_probabilities_image")
public func cg_probabilities_image(_ model: OpaquePointer?, _ data: UnsafeRawPointer?, _ size: Int, _ out: UnsafeMutablePointer<Float>?,
                                   _ capacity: Int) -> cg_status {
    floats(model, out, capacity, embedding: false) { _ in try CImage.encoded(data, size) }
}

@_cdecl("cg_probabilities_rgb")
public func cg_probabilities_rgb(_ model: OpaquePointer?, _ rgb: UnsafePointer<UInt8>?, _ width: Int32, _ height: Int32, _ stride: Int,
                                 _ out: UnsafeMutablePointer<Float>?, _ capacity: Int) -> cg_status {
    floats(model, out, capacity, embedding: false) { try CImage.rgb(rgb, width, height, stride, limits: $0.model.imageLimits) }
}

@_cdecl("cg_embed_file")
public func cg_embed_file(_ model: OpaquePointer?, _ path: UnsafePointer<CChar>?, _ out: UnsafeMutablePointer<Float>?,
                          _ capacity: Int) -> cg_status {
    floats(model, out, capacity, embedding: true) { _ in try CImage.file(path) }
}

@_cdecl("cg_embed_image")
public func cg_embed_image(_ model: OpaquePointer?, _ data: UnsafeRawPointer?, _ size: Int, _ out: UnsafeMutablePointer<Float>?,
                           _ capacity: Int) -> cg_status {
    floats(model, out, capacity, embedding: true) { _ in try CImage.encoded(data, size) }
}

@_cdecl("cg_embed_rgb")
public func cg_embed_rgb(_ model: OpaquePointer?, _ rgb: UnsafePointer<UInt8>?, _ width: Int32, _ height: Int32, _ stride: Int,
                         _ out: UnsafeMutablePointer<Float>?, _ capacity: Int) -> cg_status {
    floats(model, out, capacity, embedding: true) { try CImage.rgb(rgb, width, height, stride, limits: $0.model.imageLimits) }
}

// MARK: Prepared input

@_cdecl("cg_run_tensor")
public func cg_run_tensor(_ model: OpaquePointer?, _ input: UnsafePointer<Float>?, _ batch: Int, _ logits: UnsafeMutablePointer<Float>?,
                          _ capacity: Int) -> cg_status {
    ErrorState.guarded {
        let handle = try handle(model)
        guard let input, let logits else { throw CoverGenreError(.invalidArgument, "input or logits is NULL") }
        guard batch > 0, batch <= 1 << 16 else { throw CoverGenreError(.invalidArgument, "batch \(batch) is out of range") }
        guard capacity >= batch * handle.model.classCount else {
            throw CoverGenreError(.bufferTooSmall, "logits needs \(batch * handle.model.classCount) floats; capacity is \(capacity)")
        }
        try handle.model.logits(preprocessed: input, batch: batch, into: logits)
    }
}

// MARK: Many images

private func paths(_ paths: UnsafePointer<UnsafePointer<CChar>?>?, _ count: Int) throws -> [String?] {
    guard count >= 0 else { throw CoverGenreError(.invalidArgument, "count is negative") }
    guard count == 0 || paths != nil else { throw CoverGenreError(.invalidArgument, "paths is NULL") }
    return (0..<count).map { i in paths![i].map { String(cString: $0) } }
}

/// Runs one image per worker item; a NULL path or a failing image only marks its own status.
private func forEachFile(_ handle: ModelHandle, _ files: [String?], threads: Int32, _ statuses: UnsafeMutablePointer<cg_status>,
                         _ body: (Int, [Float]) -> Void) {
    let workers = threads > 0 ? Int(threads) : handle.model.threads
    handle.model.forEachInParallel(files.count, threads: workers) { i in
        guard let path = files[i] else {
            statuses[i] = CG_ERR_INVALID_ARGUMENT
            return
        }
        do {
            body(i, try handle.model.probabilitiesSingleThreaded(.path(path)))
            statuses[i] = CG_OK
        } catch {
            let e = error as? CoverGenreError ?? CoverGenreError(.internal, "\(error)")
            statuses[i] = cg_status(rawValue: UInt32(e.code.rawValue))
        }
    }
}

@_cdecl("cg_classify_files")
public func cg_classify_files(_ model: OpaquePointer?, _ pathList: UnsafePointer<UnsafePointer<CChar>?>?, _ count: Int, _ topK: Int,
                              _ threads: Int32, _ out: UnsafeMutablePointer<cg_prediction>?,
                              _ statuses: UnsafeMutablePointer<cg_status>?) -> cg_status {
    ErrorState.guarded {
        let handle = try handle(model)
        let files = try paths(pathList, count)
        guard topK > 0 else { throw CoverGenreError(.invalidArgument, "top_k must be at least 1") }
        guard threads >= 0 else { throw CoverGenreError(.invalidArgument, "n_threads is negative") }
        guard count == 0 || (out != nil && statuses != nil) else { throw CoverGenreError(.invalidArgument, "out or statuses is NULL") }
        guard count > 0, let out, let statuses else { return }
        for i in 0..<(count * topK) { out[i] = cg_prediction(class_index: -1, probability: 0, label: nil) }
        forEachFile(handle, files, threads: threads, statuses) { i, probabilities in
            _ = probabilities.withUnsafeBufferPointer { writePredictions(handle, $0, topK: topK, out + i * topK) }
        }
    }
}

@_cdecl("cg_probabilities_files")
public func cg_probabilities_files(_ model: OpaquePointer?, _ pathList: UnsafePointer<UnsafePointer<CChar>?>?, _ count: Int,
                                   _ threads: Int32, _ out: UnsafeMutablePointer<Float>?, _ capacity: Int,
                                   _ statuses: UnsafeMutablePointer<cg_status>?) -> cg_status {
    ErrorState.guarded {
        let handle = try handle(model)
        let files = try paths(pathList, count)
        guard threads >= 0 else { throw CoverGenreError(.invalidArgument, "n_threads is negative") }
        let classes = handle.model.classCount
        guard count == 0 || (out != nil && statuses != nil) else { throw CoverGenreError(.invalidArgument, "out or statuses is NULL") }
        guard capacity >= count * classes else {
            throw CoverGenreError(.bufferTooSmall, "out needs \(count * classes) floats; capacity is \(capacity)")
        }
        guard count > 0, let out, let statuses else { return }
        out.update(repeating: 0, count: count * classes)
        forEachFile(handle, files, threads: threads, statuses) { i, probabilities in
            (out + i * classes).update(from: probabilities, count: classes)
        }
    }
}
