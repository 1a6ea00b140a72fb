import CoverGenre
import Foundation
import ModelFormat
import Service
import SystemIO
import TestSupport
import XCTest

/// The HTTP API's service layer without HTTP: models, request images, typed answers and errors.
final class CoverServiceTests: XCTestCase {
    static func service(maxImages: Int = 4, index: String? = nil) throws -> CoverService {
        var c = ServerConfiguration()
        c.models = [("small", try SmallModels.litePath()), ("mirror", try SmallModels.litePath(flipAverage: true))]
        c.maxImages = maxImages
        c.threads = 2
        c.index = index
        return try CoverService(configuration: c, log: { _ in })
    }

    static func jpeg() throws -> [UInt8] { try Fixtures.jpeg(Fixtures.quadrants(width: 64, height: 48), width: 64, height: 48) }

    func testClassifyAnswersEveryImageAndReportsEachFailure() throws {
        let service = try Self.service()
        let model = try service.model(named: nil)
        XCTAssertEqual(model.name, "small")
        let results = service.classify([.init(name: "a.jpg", bytes: try Self.jpeg()), .init(name: "bad", bytes: [1, 2, 3])], model: model, topK: 2)
        XCTAssertEqual(results.map(\.name), ["a.jpg", "bad"])
        XCTAssertEqual(results[0].genres?.count, 2)
        XCTAssertNil(results[0].error)
        let expected = try model.model.classify(.bytes(try Self.jpeg()), top: 2)
        XCTAssertEqual(results[0].genres, expected.map { Genre(label: $0.label, probability: $0.probability) })
        XCTAssertNil(results[1].genres)
        XCTAssertEqual(results[1].error?.code, "image_unsupported")
        XCTAssertEqual(results[1].failure?.kind, .unprocessable)
        // One image failed, one did not: the request succeeded.
        XCTAssertNil(CoverService.response(model: "small", results: results).failure)
    }

    func testWhenEveryImageFailsTheRequestFails() throws {
        let service = try Self.service()
        let model = try service.model(named: "mirror")
        let one = service.classify([.init(name: "x", bytes: [0xFF, 0xD8, 0xFF])], model: model, topK: 1)
        let (response, failure) = CoverService.response(model: "mirror", results: one)
        XCTAssertEqual(response.error?.code, "image_decode")
        // A lone image's own error: the library's kind.
        XCTAssertEqual(failure?.kind, .unprocessable)
        XCTAssertEqual(failure?.code, "image_decode")
        let two = service.classify([.init(name: "x", bytes: [1]), .init(name: "y", bytes: [2])], model: model, topK: 1)
        XCTAssertEqual(CoverService.response(model: "mirror", results: two).failure?.kind, .unprocessable)
    }

    func testOneImageAndABatchGiveBitIdenticalAnswers() throws {
        let service = try Self.service()
        let model = try service.model(named: "mirror")
        let jpeg = try Self.jpeg()
        let alone = service.embed([.init(name: "a", bytes: jpeg)], model: model)
        let batch = service.embed([.init(name: "a", bytes: jpeg), .init(name: "b", bytes: jpeg)], model: model)
        XCTAssertEqual(alone[0].embedding, batch[0].embedding)
        XCTAssertEqual(batch[0].embedding, batch[1].embedding)
        XCTAssertEqual(alone[0].embedding, try model.model.embedding(.bytes(jpeg)))
    }

    func testUnknownModelIsNotFoundNamingTheServedOnes() throws {
        let service = try Self.service()
        XCTAssertThrowsError(try service.model(named: "nope")) { error in
            let e = error as? ServiceError
            XCTAssertEqual(e?.kind, .notFound)
            XCTAssertEqual(e?.code, "unknown_model")
            XCTAssertTrue(e?.message.contains("small, mirror") == true, "\(error)")
        }
    }

    func testRequestImagesFromBodiesAndMultipart() throws {
        let service = try Self.service(maxImages: 2)
        XCTAssertEqual(try service.images(body: [1, 2], contentType: "image/jpeg").map(\.name), ["image"])
        XCTAssertEqual(try service.images(body: [1, 2], contentType: "").count, 1)
        func refused(_ body: [UInt8], _ type: String, _ kind: ServiceError.Kind, _ code: String) {
            XCTAssertThrowsError(try service.images(body: body, contentType: type), "\(type)") { error in
                XCTAssertEqual((error as? ServiceError)?.kind, kind, "\(error)")
                XCTAssertEqual((error as? ServiceError)?.code, code, "\(error)")
            }
        }
        refused([1], "text/plain", .unsupportedMediaType, "unsupported_media_type")
        refused([], "image/png", .badRequest, "invalid_argument")
        refused([1], "multipart/form-data", .badRequest, "invalid_argument")
        refused(Array("garbage".utf8), "multipart/form-data; boundary=b", .badRequest, "invalid_argument")
        let file = { (i: Int) in ("Content-Disposition: form-data; name=image; filename=\"c\(i).jpg\"", [UInt8(i)]) }
        let two = MultipartTests.body("b", [file(1), file(2)])
        XCTAssertEqual(try service.images(body: two, contentType: "multipart/form-data; boundary=b").map(\.name), ["c1.jpg", "c2.jpg"])
        refused(MultipartTests.body("b", [file(1), file(2), file(3)]), "multipart/form-data; boundary=b", .tooLarge, "limit_exceeded")
        refused(MultipartTests.body("b", [("Content-Disposition: form-data; name=top_k", [51])]), "multipart/form-data; boundary=b",
                .badRequest, "invalid_argument")
    }

    func testSimilarNeedsAnIndexAndStaysWithinMinusOneToOne() throws {
        XCTAssertThrowsError(try Self.service().similar([], k: 1)) { error in
            XCTAssertEqual((error as? ServiceError)?.code, "no_index")
        }
        let folder = temporaryPath("covers")
        XCTAssertEqual(mkdir(folder, 0o755), 0)
        let jpeg = try Self.jpeg()
        try Files.writeAtomically(folder + "/a.jpg", jpeg)
        try Files.writeAtomically(folder + "/b.png", Fixtures.png(width: 8, height: 8, color: .rgb, bitDepth: 8, samples: [UInt8](repeating: 90, count: 192)))
        let service = try Self.service(index: folder)
        XCTAssertEqual(service.indexedCovers, 2)
        let found = try service.similar([.init(name: "q", bytes: jpeg)], k: 5)[0].similar ?? []
        XCTAssertEqual(found.map(\.path).first, "a.jpg")
        for cover in found { XCTAssertTrue((-1...1).contains(cover.similarity), "\(cover)") }
        XCTAssertEqual(try service.indexFile(0).bytes, jpeg)
        XCTAssertThrowsError(try service.indexFile(2)) { XCTAssertEqual(($0 as? ServiceError)?.kind, .notFound) }
    }

    func testCosineIsClampedToItsMathematicalRange() {
        // What an AMD Zen 1 computed for a cover against itself.
        XCTAssertEqual(CoverIndex.cosine(1.0000000000000002), 1)
        XCTAssertEqual(CoverIndex.cosine(-1.0000000000000002), -1)
        XCTAssertEqual(CoverIndex.cosine(0.25), 0.25)
        XCTAssertEqual(CoverIndex.cosine(.nan), 0)
    }

    func testAnswersEncodeAsTheOpenAPIDocumentSays() throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let ok = ResultsResponse(model: "m", results: [ImageResult(name: "a", genres: [Genre(label: "Rock", probability: 0.5)])])
        XCTAssertEqual(String(decoding: try encoder.encode(ok), as: UTF8.self),
                       #"{"model":"m","results":[{"genres":[{"label":"Rock","probability":0.5}],"name":"a"}]}"#)
        let failed = ImageResult(name: "b", failure: ServiceError(CoverGenreError(.imageDecode, "truncated")))
        XCTAssertEqual(String(decoding: try encoder.encode(failed), as: UTF8.self),
                       #"{"error":{"code":"image_decode","message":"truncated"},"name":"b"}"#)
        let models = try String(decoding: encoder.encode(Self.service().modelsResponse), as: UTF8.self)
        XCTAssertTrue(models.contains(#""index":null"#), models)
        XCTAssertTrue(models.contains(#""input_width":48"#), models)
    }
}
