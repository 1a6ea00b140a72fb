import Graph
import Kernels
import ModelFormat
import SystemIO
import XCTest

/// The graph validator (`GraphSpec.resolve`, `GraphSpec(json:)`): a model file is untrusted input,
/// so every refusal is a model-format (or limit) error naming the node and what is wrong, before
/// anything is computed or allocated from it.
final class ValidatorTests: XCTestCase {
    /// conv (3x3, 8 channels) -> global average pool -> linear (4 classes), on 16x16x3.
    static func graph(conv: Conv2DAttributes? = nil, inputShape: ActivationShape = ActivationShape(height: 16, width: 16, channels: 3),
                      nodes extra: [Node] = [], logits: String = "fc") -> GraphSpec {
        let c = conv ?? Conv2DAttributes(kernel: (3, 3), padding: .same, outChannels: 8, weight: "conv.w", bias: "conv.b")
        return GraphSpec(inputShape: inputShape, nodes: [
            Node("conv", .conv2d(c), inputs: ["image"]),
            Node("pool", .globalAveragePool, inputs: ["conv"]),
            Node("fc", .linear(LinearAttributes(outFeatures: 4, weight: "fc.w", bias: "fc.b")), inputs: ["pool"]),
        ] + extra, logits: logits)
    }

    static let shapes: [String: [Int]] = ["conv.w": [3, 3, 3, 8], "conv.b": [8], "fc.w": [8, 4], "fc.b": [4]]

    /// The error of resolving `graph`, which must be refused.
    func refusal(_ graph: GraphSpec, limits: GraphLimits = GraphLimits(), shapes: [String: [Int]] = ValidatorTests.shapes,
                 file: StaticString = #filePath, line: UInt = #line) -> CoverGenreError? {
        do {
            _ = try graph.resolve(tensorShape: { shapes[$0] }, limits: limits)
            XCTFail("the graph was accepted", file: file, line: line)
            return nil
        } catch let error as CoverGenreError {
            return error
        } catch {
            XCTFail("not a CoverGenreError: \(error)", file: file, line: line)
            return nil
        }
    }

    func assertRefused(_ graph: GraphSpec, _ code: CoverGenreError.Code = .modelFormat, mentioning words: [String],
                       limits: GraphLimits = GraphLimits(), shapes: [String: [Int]] = ValidatorTests.shapes,
                       file: StaticString = #filePath, line: UInt = #line) {
        guard let error = refusal(graph, limits: limits, shapes: shapes, file: file, line: line) else { return }
        XCTAssertEqual(error.code, code, error.message, file: file, line: line)
        for word in words { XCTAssertTrue(error.message.contains(word), "\"\(error.message)\" does not mention \(word)", file: file, line: line) }
    }

    func testTheWellFormedGraphResolves() throws {
        let resolved = try Self.graph().resolve(tensorShape: { Self.shapes[$0] })
        XCTAssertEqual(resolved.map(\.outputShape), [ActivationShape(height: 16, width: 16, channels: 8), .vector(8), .vector(4)])
    }

    func testConvolutionAttributesOutOfRangeAreRefusedNamingNodeAndAttribute() {
        func conv(kernel: (Int, Int) = (3, 3), stride: (Int, Int) = (1, 1), padding: Padding = .same, groups: Int = 1, out: Int = 8) -> GraphSpec {
            Self.graph(conv: Conv2DAttributes(kernel: kernel, stride: stride, padding: padding, groups: groups, outChannels: out,
                                              weight: "conv.w", bias: "conv.b"))
        }
        assertRefused(conv(stride: (0, 1)), mentioning: ["\"conv\"", "stride"])
        assertRefused(conv(stride: (1, -1)), mentioning: ["\"conv\"", "stride"])
        assertRefused(conv(kernel: (0, 3)), mentioning: ["\"conv\"", "kernel"])
        assertRefused(conv(kernel: (1 << 40, 3)), mentioning: ["\"conv\"", "kernel"])
        assertRefused(conv(padding: .explicit(top: -1, bottom: 0, left: 0, right: 0)), mentioning: ["\"conv\"", "padding"])
        assertRefused(conv(padding: .explicit(top: Int.max, bottom: 0, left: 0, right: 0)), mentioning: ["\"conv\"", "padding"])
        assertRefused(conv(out: 0), mentioning: ["\"conv\""])
        assertRefused(conv(groups: 0), mentioning: ["\"conv\""])
        // 3 input channels cannot be split into 2 groups.
        assertRefused(conv(groups: 2, out: 8), mentioning: ["\"conv\""])
    }

    func testStructuralErrorsAreRefused() {
        assertRefused(Self.graph(nodes: [Node("fc", .flatten, inputs: ["pool"])], logits: "fc"), mentioning: ["\"fc\"", "twice"])
        assertRefused(Self.graph(nodes: [Node("late", .flatten, inputs: ["later"])]), mentioning: ["\"late\"", "\"later\""])
        assertRefused(Self.graph(nodes: [Node("sum", .add(.none), inputs: ["pool"])]), mentioning: ["\"sum\"", "inputs"])
        assertRefused(Self.graph(logits: "nowhere"), mentioning: ["\"nowhere\""])
        // Logits must be a vector, not a feature map.
        assertRefused(Self.graph(logits: "conv"), mentioning: ["\"conv\"", "vector"])
    }

    func testTensorsMissingOrOfTheWrongShapeAreRefused() {
        var missing = Self.shapes
        missing["fc.w"] = nil
        assertRefused(Self.graph(), mentioning: ["\"fc\"", "fc.w", "missing"], shapes: missing)
        var wrong = Self.shapes
        wrong["conv.w"] = [5, 5, 3, 8]
        assertRefused(Self.graph(), mentioning: ["\"conv\"", "conv.w", "[5, 5, 3, 8]"], shapes: wrong)
    }

    func testInputShapesOutOfRangeAreRefused() {
        for shape in [ActivationShape(height: 0, width: 16, channels: 3), ActivationShape(height: 16, width: -4, channels: 3),
                      ActivationShape(height: 16, width: 16, channels: 0), ActivationShape(height: 5000, width: 16, channels: 3)] {
            assertRefused(Self.graph(inputShape: shape), mentioning: ["input shape"])
        }
    }

    func testLimitsAreEnforced() {
        var nodes = GraphLimits()
        nodes.maxNodes = 2
        assertRefused(Self.graph(), .limitExceeded, mentioning: ["3 nodes", "limit is 2"], limits: nodes)
        var work = GraphLimits()
        work.maxMultiplyAddsPerImage = 1000
        assertRefused(Self.graph(), .limitExceeded, mentioning: ["\"conv\"", "multiply-adds"], limits: work)
        var activations = GraphLimits()
        activations.maxActivationElements = 100
        assertRefused(Self.graph(), mentioning: ["\"conv\"", "elements", "limit is 100"], limits: activations)
    }

    func testJSONWithAnUnknownOperatorIsUnsupportedNotMisread() throws {
        let json = try JSON.parse("""
            {"input": "image", "input_shape": [16, 16, 3], "logits": "x",
             "nodes": [{"name": "x", "op": "teleport", "inputs": ["image"]}]}
            """)
        XCTAssertThrowsError(try GraphSpec(json: json)) { error in
            XCTAssertEqual((error as? CoverGenreError)?.code, .modelUnsupported)
            XCTAssertTrue("\(error)".contains("teleport"), "\(error)")
        }
        var limits = GraphLimits()
        limits.maxNodes = 0
        XCTAssertThrowsError(try GraphSpec(json: json, limits: limits)) { error in
            XCTAssertEqual((error as? CoverGenreError)?.code, .limitExceeded)
        }
    }

    // Int8 layers: the quantization of their input is checked where the JSON is decoded.

    func testInputQuantizationRoundTripsAndIsValidated() throws {
        var conv = Conv2DAttributes(kernel: (3, 3), padding: .same, outChannels: 8, weight: "conv.w", bias: "conv.b")
        conv.inputQuantization = InputQuantization(scale: 0.0235, zeroPoint: 17)
        let graph = Self.graph(conv: conv)
        XCTAssertEqual(try GraphSpec(json: graph.json), graph)
        func decoding(_ quantization: JSON) -> CoverGenreError? {
            guard case .object(var root) = graph.json, case .array(var nodes) = root["nodes"]!, case .object(var node) = nodes[0]
            else { return nil }
            node["input_quantization"] = quantization
            nodes[0] = .object(node)
            root["nodes"] = .array(nodes)
            do {
                _ = try GraphSpec(json: .object(root))
                return nil
            } catch {
                return error as? CoverGenreError
            }
        }
        let cases: [(JSON, String)] = [
            (["scale": 0, "zero_point": 0], "scale"), (["scale": -1, "zero_point": 0], "scale"),
            (["scale": 1e300, "zero_point": 0], "scale"), (["scale": 1e-40, "zero_point": 0], "scale"),
            (["scale": 0.1, "zero_point": 256], "zero_point"),
            (["scale": 0.1, "zero_point": -1], "zero_point"), (["scale": 0.1], "zero_point"), ("int8", "object"),
        ]
        for (bad, word) in cases {
            let error = decoding(bad)
            XCTAssertEqual(error?.code, .modelFormat, "\(bad)")
            XCTAssertTrue(error?.message.contains(word) ?? false, "\(bad): \(error?.message ?? "accepted")")
        }
        XCTAssertNil(decoding(["scale": 0.5, "zero_point": 255]))
    }
}
