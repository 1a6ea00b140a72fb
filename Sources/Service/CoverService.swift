import CoverGenre
import ModelFormat
import SystemIO

#if canImport(Glibc)
import Glibc
#endif

/// What the HTTP API does, without HTTP: the loaded models, the index, and the answers for a
/// request's images. Every model is loaded once and shared by all requests (a `Model` is safe to
/// call from any number of threads; its runtime bounds the threads whatever the callers).
final class CoverService: Sendable {
    struct LoadedModel: Sendable {
        let name: String
        let model: Model
    }

    /// One image of a request: its name (the multipart file name, or "image") and bytes.
    struct Image: Sendable {
        let name: String
        let bytes: [UInt8]
    }

    let models: [LoadedModel]
    let index: CoverIndex?
    let configuration: ServerConfiguration

    init(configuration: ServerConfiguration, log: (String) -> Void) throws {
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

    func model(named name: String?) throws -> LoadedModel {
        guard let name else { return models[0] }
        guard let found = models.first(where: { $0.name == name }) else {
            throw APIError(.notFound, "unknown_model", "no model named \"\(name)\" (this server has \(models.map(\.name).joined(separator: ", ")))")
        }
        return found
    }

    /// One image's answer: its fields (genres, embedding or similar covers), or the library's
    /// error for that image.
    struct ImageResult: Sendable {
        let name: String
        let outcome: Result<[String: JSON], APIError>

        var failure: APIError? { if case .failure(let e) = outcome { e } else { nil } }

        var json: JSON {
            switch outcome {
            case .success(var fields):
                fields["name"] = .string(name)
                return .object(fields)
            case .failure(let error): return ["name": .string(name), "error": error.json]
            }
        }
    }

    /// Per image: the `topK` genres with calibrated probabilities.
    func classify(_ images: [Image], model m: LoadedModel, topK: Int) -> [ImageResult] {
        run(images, model: m.model, output: .probabilities) { p in
            ["genres": .array(m.model.predictions(p, top: topK).map { ["label": .string($0.label), "probability": JSON($0.probability)] })]
        }
    }

    /// Per image: its embedding.
    func embed(_ images: [Image], model m: LoadedModel) -> [ImageResult] {
        run(images, model: m.model, output: .embedding) { v in ["embedding": JSON(v)] }
    }

    /// Per image: the `k` indexed covers nearest to it.
    func similar(_ images: [Image], k: Int) throws -> [ImageResult] {
        guard let index else {
            throw APIError(.notFound, "no_index", "this server has no index of covers: start it with --index FOLDER")
        }
        return run(images, model: models[0].model, output: .embedding) { v in
            ["similar": .array(index.nearest(v, k: k).map { found in
                ["path": .string(found.entry.path), "similarity": .number(found.similarity), "url": .string("/v1/index/\(found.id)")]
            })]
        }
    }

    enum Output { case probabilities, embedding }

    /// One image: the model's own threads work on it; several: the batch call, one thread per image.
    /// `answer` turns an image's output into its fields.
    private func run(_ images: [Image], model: Model, output: Output, answer: ([Float]) -> [String: JSON]) -> [ImageResult] {
        let results: [Result<[Float], CoverGenreError>]
        if images.count == 1 {
            results = [Result { () throws(CoverGenreError) -> [Float] in
                do {
                    return output == .probabilities ? try model.probabilities(.bytes(images[0].bytes))
                        : try model.embedding(.bytes(images[0].bytes))
                } catch let error as CoverGenreError { throw error } catch { throw CoverGenreError(.internal, "\(error)") }
            }]
        } else {
            let inputs = images.map { ImageInput.bytes($0.bytes) }
            results = output == .probabilities ? model.probabilities(batch: inputs) : model.embeddings(batch: inputs)
        }
        return zip(images, results).map { image, result in
            ImageResult(name: image.name, outcome: result.map(answer).mapError { APIError($0) })
        }
    }

    /// GET /v1/models.
    var modelsJSON: JSON {
        ["default": .string(models[0].name), "index": index.map { ["covers": JSON($0.entries.count), "model": .string(models[0].name)] } ?? .null,
         "models": .array(models.map { m in
            let d = m.model.description
            var summary: [String: JSON] = [
                "name": .string(m.name), "architecture": .string(m.model.architecture), "labels": JSON(m.model.labels),
                "input_width": JSON(m.model.inputWidth), "input_height": JSON(m.model.inputHeight),
                "embedding_size": JSON(m.model.embeddingSize), "temperature": .number(m.model.temperature),
            ]
            var provenance: [String: JSON] = [:]
            for key in ["trained_by", "created_by", "license", "source"] { if let v = d.provenance[key] { provenance[key] = v } }
            if let data = d.provenance["data"]?["name"] { provenance["data"] = data }
            summary["provenance"] = .object(provenance)
            return .object(summary)
        })]
    }

    /// The bytes and media type of index entry `id` (only indexed files can be named).
    func indexFile(_ id: Int) throws -> (bytes: [UInt8], mediaType: String) {
        guard let index, index.entries.indices.contains(id) else { throw APIError(.notFound, "not_found", "no index entry \(id)") }
        let entry = index.entries[id]
        guard let path = index.currentPath(entry) else {
            throw APIError(.notFound, "not_found", "index entry \(id) is no longer a file inside the index folder")
        }
        let bytes: [UInt8]
        do {
            bytes = try Files.read(path, maxBytes: configuration.maxBodyBytes)
        } catch let error as CoverGenreError {
            throw APIError(.notFound, "io", error.message)
        }
        let ext = entry.path.split(separator: ".").last.map { $0.lowercased() } ?? ""
        return (bytes, ext == "png" ? "image/png" : ext == "webp" ? "image/webp" : "image/jpeg")
    }
}
