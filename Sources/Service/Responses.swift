import ModelFormat

// The HTTP API's answers as Codable types: what docs/openapi.json describes, field for field
// (JSON keys in snake_case through CodingKeys). Optional fields are left out when nil.

/// `{"code", "message"}`: an error, the request's or one image's.
public struct ErrorBody: Codable, Sendable, Equatable {
    public let code: String
    public let message: String
    public init(code: String, message: String) {
        self.code = code
        self.message = message
    }
}

/// One genre and its calibrated probability.
public struct Genre: Codable, Sendable, Equatable {
    public let label: String
    public let probability: Float
    public init(label: String, probability: Float) {
        self.label = label
        self.probability = probability
    }
}

/// One indexed cover near the query.
public struct SimilarCover: Codable, Sendable, Equatable {
    /// Relative to the index folder.
    public let path: String
    /// Cosine similarity, in [-1, 1].
    public let similarity: Double
    public let url: String
    public init(path: String, similarity: Double, url: String) {
        self.path = path
        self.similarity = similarity
        self.url = url
    }
}

/// One image of a request: its name, and exactly one of genres, embedding, similar or error.
public struct ImageResult: Codable, Sendable, Equatable {
    public let name: String
    public var genres: [Genre]?
    public var embedding: [Float]?
    public var similar: [SimilarCover]?
    public var error: ErrorBody?
    /// The failure behind `error`, with its kind (not encoded: the HTTP layer reads it for the status).
    public var failure: ServiceError? = nil

    enum CodingKeys: String, CodingKey { case name, genres, embedding, similar, error }

    public init(name: String, genres: [Genre]? = nil, embedding: [Float]? = nil, similar: [SimilarCover]? = nil, failure: ServiceError? = nil) {
        self.name = name
        self.genres = genres
        self.embedding = embedding
        self.similar = similar
        self.failure = failure
        self.error = failure?.body
    }
}

/// `POST /v1/classify`, `/v1/embed`, `/v1/similar`: the model that answered and each image's
/// result; `error` is set only when every image failed (the request as a whole failed).
public struct ResultsResponse: Codable, Sendable, Equatable {
    public let model: String
    public let results: [ImageResult]
    public var error: ErrorBody?
    public init(model: String, results: [ImageResult], error: ErrorBody? = nil) {
        self.model = model
        self.results = results
        self.error = error
    }
}

/// `GET /v1/models`.
public struct ModelsResponse: Encodable, Sendable {
    public struct Index: Codable, Sendable, Equatable {
        public let covers: Int
        public let model: String
    }

    public struct Summary: Encodable, Sendable {
        public let name: String
        public let architecture: String
        public let labels: [String]
        public let inputWidth: Int
        public let inputHeight: Int
        public let embeddingSize: Int
        public let temperature: Double
        /// Who made the model from what: keys as the model file's provenance.
        public let provenance: [String: JSON]

        enum CodingKeys: String, CodingKey {
            case name, architecture, labels, temperature, provenance
            case inputWidth = "input_width", inputHeight = "input_height", embeddingSize = "embedding_size"
        }
    }

    public let `default`: String
    /// nil is written as `null`: the schema requires the key.
    public let index: Index?
    public let models: [Summary]

    enum CodingKeys: String, CodingKey { case `default`, index, models }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(self.default, forKey: .default)
        try c.encode(index, forKey: .index)
        try c.encode(models, forKey: .models)
    }
}

/// `GET /healthz`.
public struct Health: Codable, Sendable, Equatable {
    public let status: String
    public init(status: String = "ok") { self.status = status }
}
