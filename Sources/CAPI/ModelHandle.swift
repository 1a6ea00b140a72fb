import CCoverGenreAPI
import CoverGenre
import Graph
import ImageIO
import ModelFormat
import SystemIO

#if canImport(Glibc)
import Glibc
#endif

/// What a `cg_model *` points to: the Swift model plus the C strings handed out for it, which
/// live exactly as long as the handle.
final class ModelHandle {
    let model: Model
    let labels: [UnsafeMutablePointer<CChar>]
    let name: UnsafeMutablePointer<CChar>
    let architecture: UnsafeMutablePointer<CChar>
    let metadata: UnsafeMutablePointer<CChar>

    init(model: Model) {
        self.model = model
        labels = model.labels.map { strdup($0)! }
        name = strdup(model.description.name)!
        architecture = strdup(model.description.architecture)!
        metadata = strdup(model.file.metadata.serialized)!
    }

    deinit {
        labels.forEach { free($0) }
        free(name)
        free(architecture)
        free(metadata)
    }

    var opaque: OpaquePointer { OpaquePointer(Unmanaged.passRetained(self).toOpaque()) }

    static func from(_ pointer: OpaquePointer?) -> ModelHandle? {
        pointer.map { Unmanaged<ModelHandle>.fromOpaque(UnsafeRawPointer($0)).takeUnretainedValue() }
    }

    static func release(_ pointer: OpaquePointer) {
        Unmanaged<ModelHandle>.fromOpaque(UnsafeRawPointer(pointer)).release()
    }
}

extension ModelOptions {
    /// Reads the fields of a caller's cg_load_options that its struct_size says it has.
    init(_ options: UnsafePointer<cg_load_options>?) throws {
        self.init()
        guard let options else { return }
        let known = options.pointee.struct_size
        guard known >= MemoryLayout<size_t>.size, known <= 1 << 16 else {
            throw CoverGenreError(.invalidArgument, "cg_load_options.struct_size is \(known); start from cg_default_load_options()")
        }
        // Copy only the bytes the caller's version of the struct has; the rest keep defaults.
        var merged = cg_default_load_options()
        withUnsafeMutableBytes(of: &merged) { target in
            target.copyMemory(from: UnsafeRawBufferPointer(start: options, count: min(known, target.count)))
        }
        let o = merged
        guard o.n_threads >= 0, o.n_threads <= 1024 else { throw CoverGenreError(.invalidArgument, "n_threads \(o.n_threads) is out of range") }
        threads = Int(o.n_threads)
        fileLimits.verifyChecksum = o.verify_checksum != 0
        fileLimits.maxFileBytes = Int(clamping: o.max_model_bytes)
        fileLimits.maxMetadataBytes = Int(clamping: o.max_metadata_bytes)
        fileLimits.maxTensors = Int(o.max_tensors)
        imageLimits.maxWidth = Int(o.max_image_width)
        imageLimits.maxHeight = Int(o.max_image_height)
        imageLimits.maxPixels = Int(clamping: o.max_image_pixels)
        imageLimits.maxFileBytes = Int(clamping: o.max_image_bytes)
        minConfidence = o.min_confidence
        switch o.mirror_view {
        case -1: mirrorView = nil
        case 0, 1: mirrorView = o.mirror_view == 1
        default: throw CoverGenreError(.invalidArgument, "mirror_view is -1 (as the model says), 0 or 1, not \(o.mirror_view)")
        }
    }
}
