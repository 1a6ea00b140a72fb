import CoverGenre
import ModelFormat
import SystemIO

#if canImport(Glibc)
import Glibc
#endif

/// What the HTTP API does, without HTTP: the loaded models, the index, and the answers for a
/// request's images. Every model is loaded once and shared by all requests (a `Model` is safe to
/// call from any number of threads; its runtime bounds the threads whatever the callers).
public final class CoverService: Sendable {
    public struct LoadedModel: Sendable {
        public let name: String
        public let model: Model
    }

    /// One image of a request: its name (the multipart file name, or "image") and bytes.
    public struct Image: Sendable {
        public let name: String
        public let bytes: [UInt8]
        public init(name: String, bytes: [UInt8]) {
            self.name = name
            self.bytes = bytes
        }
    }

    public let models: [LoadedModel]
    package let index: CoverIndex?
    public let configuration: ServerConfiguration
    /// Covers in the index (nil: no index).
    public var indexedCovers: Int? { index?.entries.count }

    public init(configuration: ServerConfiguration, log: (String) -> Void) throws {
        self.configuration = configuration
        guard !configuration.models.isEmpty else { throw CoverGenreError(.invalidArgument, "no model to serve") }
        var options = ModelOptions()
        options.threads = configuration.threads
        options.mirrorView = configuration.mirrorView
        var loaded: [LoadedModel] = []
        for (name, path) in configuration.models {
            guard !loaded.contains(where: { $0.name == name }) else {
                throw CoverGenreError(.invalidArgument, "two models are named \"\(name)\": name them with NAME=PATH")
            }
            let model = try Model(path: path, options: options)
            log("model \(name): \(model.architecture), \(model.labels.count) genres (\(model.labels.joined(separator: ", ")))")
            loaded.append(LoadedModel(name: name, model: model))
        }
        models = loaded
        if let folder = configuration.index {
            var last = 0
            let index = try CoverIndex(folder: folder, model: loaded[0].model) { done, total in
                // A progress line every 10% (and at the end), on one line where the terminal allows.
                if done == total || done * 10 / max(total, 1) > last {
                    last = done * 10 / max(total, 1)
                    log("index: \(done)/\(total) covers embedded")
                }
            }
            for failure in index.failures.prefix(5) { log("index: skipped \(failure.path): \(failure.message)") }
            if index.failures.count > 5 { log("index: \(index.failures.count - 5) more files skipped") }
            log("index: \(index.entries.count) covers from \(folder)")
            self.index = index
        } else {
            index = nil
        }
    }

    public func model(named name: String?) throws(ServiceError) -> LoadedModel {
        guard let name else { return models[0] }
        guard let found = models.first(where: { $0.name == name }) else {
            throw ServiceError(.notFound, "unknown_model", "no model named \"\(name)\" (this server has \(models.map(\.name).joined(separator: ", ")))")
        }
        return found
    }

    /// Per image: the `topK` genres with calibrated probabilities.
    public func classify(_ images: [Image], model m: LoadedModel, topK: Int) -> [ImageResult] {
        run(images, model: m.model, output: .probabilities) { name, p in
            ImageResult(name: name, genres: m.model.predictions(p, top: topK).map { Genre(label: $0.label, probability: $0.probability) })
        }
    }

    /// Per image: its embedding.
    public func embed(_ images: [Image], model m: LoadedModel) -> [ImageResult] {
        run(images, model: m.model, output: .embedding) { name, v in ImageResult(name: name, embedding: v) }
    }

    /// Per image: the `k` indexed covers nearest to it (with the default model, the index's).
    public func similar(_ images: [Image], k: Int) throws(ServiceError) -> [ImageResult] {
        guard let index else {
            throw ServiceError(.notFound, "no_index", "this server has no index of covers: start it with --index FOLDER")
        }
        return run(images, model: models[0].model, output: .embedding) { name, v in
            ImageResult(name: name, similar: index.nearest(v, k: k).map { found in
                SimilarCover(path: found.entry.path, similarity: found.similarity, url: "/v1/index/\(found.id)")
            })
        }
    }

    /// The answer to a compute request: each image's result, and the request's failure when every
    /// image failed (a lone image's own error; for several, `unprocessable` with the first one's code).
    public static func response(model: String, results: [ImageResult]) -> (response: ResultsResponse, failure: ServiceError?) {
        let failures = results.compactMap(\.failure)
        guard let first = failures.first, failures.count == results.count else {
            return (ResultsResponse(model: model, results: results), nil)
        }
        return (ResultsResponse(model: model, results: results, error: first.body),
                results.count == 1 ? first : ServiceError(.unprocessable, first.code, first.message))
    }

    /// A request's images: the body itself (an image content type, octet-stream or none), or every
    /// file part of a multipart/form-data body, within `configuration.maxImages`.
    public func images(body: [UInt8], contentType: String) throws(ServiceError) -> [Image] {
        let multipart: String?
        do { multipart = try Multipart.boundary(contentType: contentType) } catch {
            throw ServiceError(.badRequest, "invalid_argument", "\(error)")
        }
        if let boundary = multipart {
            let parts: [MultipartPart]
            do {
                parts = try Multipart.parse(body, boundary: boundary, maxParts: configuration.maxImages + 16)
            } catch {
                throw ServiceError(.badRequest, "invalid_argument", "malformed multipart body: \(error)")
            }
            let files = parts.filter { part in
                let type = part.contentType?.lowercased() ?? ""
                return part.filename != nil || type.hasPrefix("image/") || type.hasPrefix("audio/")
            }
            guard !files.isEmpty else { throw ServiceError(.badRequest, "invalid_argument", "the multipart body has no file part") }
            guard files.count <= configuration.maxImages else {
                throw ServiceError(.tooLarge, "limit_exceeded", "\(files.count) images in one request; at most \(configuration.maxImages) (--max-images)")
            }
            return files.enumerated().map { i, part in Image(name: part.filename ?? part.name ?? "image\(i + 1)", bytes: Array(part.body)) }
        }
        let type = contentType.split(separator: ";").first.map { $0.trimmingSpaces.lowercased() } ?? ""
        // An audio file's body stands for its embedded front cover, as an audio file does.
        guard type.isEmpty || type.hasPrefix("image/") || type.hasPrefix("audio/") || type == "application/octet-stream" else {
            throw ServiceError(.unsupportedMediaType, "unsupported_media_type",
                               "content type \"\(type)\": send the image (or an audio file with an embedded cover) as the body (image/*, audio/* or application/octet-stream) or as multipart/form-data")
        }
        guard !body.isEmpty else { throw ServiceError(.badRequest, "invalid_argument", "the body is empty: send an image") }
        return [Image(name: "image", bytes: body)]
    }

    enum Output { case probabilities, embedding }

    /// The model's batch call: it gives one image the model's threads and several one thread
    /// each (`Model`'s rule, the same for every caller). `answer` turns an image's output into its result.
    private func run(_ images: [Image], model: Model, output: Output, answer: (String, [Float]) -> ImageResult) -> [ImageResult] {
        let inputs = images.map { ImageInput.bytes($0.bytes) }
        let results = output == .probabilities ? model.probabilities(batch: inputs) : model.embeddings(batch: inputs)
        return zip(images, results).map { image, result in
            switch result {
            case .success(let values): return answer(image.name, values)
            case .failure(let error): return ImageResult(name: image.name, failure: ServiceError(error))
            }
        }
    }

    /// GET /v1/models.
    public var modelsResponse: ModelsResponse {
        ModelsResponse(
            default: models[0].name,
            index: index.map { ModelsResponse.Index(covers: $0.entries.count, model: models[0].name) },
            models: models.map { m in
                let d = m.model.description
                var provenance: [String: JSON] = [:]
                for key in ["trained_by", "created_by", "license", "source"] { if let v = d.provenance[key] { provenance[key] = v } }
                if let data = d.provenance["data"]?["name"] { provenance["data"] = data }
                return ModelsResponse.Summary(
                    name: m.name, architecture: m.model.architecture, labels: m.model.labels, inputWidth: m.model.inputWidth,
                    inputHeight: m.model.inputHeight, embeddingSize: m.model.embeddingSize, temperature: m.model.temperature,
                    provenance: provenance)
            })
    }

    /// The bytes and media type of index entry `id` (only indexed files can be named).
    public func indexFile(_ id: Int) throws(ServiceError) -> (bytes: [UInt8], mediaType: String) {
        guard let index, index.entries.indices.contains(id) else { throw ServiceError(.notFound, "not_found", "no index entry \(id)") }
        let entry = index.entries[id]
        guard let path = index.currentPath(entry) else {
            throw ServiceError(.notFound, "not_found", "index entry \(id) is no longer a file inside the index folder")
        }
        let bytes: [UInt8]
        do {
            bytes = try Files.read(path, maxBytes: configuration.maxBodyBytes)
        } catch {
            throw ServiceError(.notFound, "io", (error as? CoverGenreError)?.message ?? "\(error)")
        }
        let ext = entry.path.split(separator: ".").last.map { $0.lowercased() } ?? ""
        return (bytes, ext == "png" ? "image/png" : ext == "webp" ? "image/webp" : "image/jpeg")
    }
}
