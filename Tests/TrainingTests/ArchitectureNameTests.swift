import Architectures
import Graph
import SystemIO
import Training
import XCTest

/// The one list of buildable architectures: every name builds the network a model file names the
/// same way, and bad requests are invalid-argument errors, from the CLI and the trainer alike.
final class ArchitectureNameTests: XCTestCase {
    func testEveryNameBuildsTheNetworkOfThatName() throws {
        for name in ArchitectureName.allCases {
            XCTAssertEqual(try ArchitectureName(parsing: name.rawValue), name)
            let divisor = name == .efficientNetLite0 ? 1 : 8
            let architecture = try name.build(classes: 3, inputSize: 64, widthDivisor: divisor)
            XCTAssertEqual(architecture.name, name.rawValue)
            XCTAssertEqual(architecture.graph.inputShape, ActivationShape(height: 64, width: 64, channels: 3))
            let logits = architecture.graph.logits
            let last = try XCTUnwrap(architecture.graph.nodes.last { $0.name == logits }, "\(name): no logits node")
            XCTAssertEqual(architecture.parameters.first { $0.name == last.name + ".bias" }?.shape, [3], "\(name)")
        }
        XCTAssertEqual(ArchitectureName.choices, "baseline-cnn, vgg16 or efficientnet-lite0")
    }

    func testDefaultsAreEachArchitecturesOwn() throws {
        XCTAssertEqual(try ArchitectureName.baselineCNN.build(classes: 2, widthDivisor: 16).graph.inputShape.height, 256)
        XCTAssertEqual(try ArchitectureName.vgg16.build(classes: 2, widthDivisor: 16).graph.inputShape.height, 224)
        // VGG-16 keeps its published dropout unless told otherwise; the baseline CNN has none.
        let dropoutRates = { (a: Architecture) -> [Double] in
            a.graph.nodes.compactMap { if case .dropout(let rate) = $0.op { return rate } else { return nil } }
        }
        XCTAssertEqual(dropoutRates(try ArchitectureName.vgg16.build(classes: 2, widthDivisor: 16)), [0.5, 0.5])
        XCTAssertEqual(dropoutRates(try ArchitectureName.vgg16.build(classes: 2, widthDivisor: 16, dropout: 0.2)), [0.2, 0.2])
        XCTAssertEqual(dropoutRates(try ArchitectureName.baselineCNN.build(classes: 2, widthDivisor: 16)), [])
    }

    func testWidthDivisorNarrowsTheNetwork() throws {
        let full = try ArchitectureName.baselineCNN.build(classes: 5, inputSize: 64)
        let narrow = try ArchitectureName.baselineCNN.build(classes: 5, inputSize: 64, widthDivisor: 4)
        let count = { (a: Architecture) in a.parameters.reduce(0) { $0 + $1.shape.reduce(1, *) } }
        XCTAssertLessThan(count(narrow) * 8, count(full))
    }

    func testBadRequestsAreInvalidArguments() {
        for attempt in [
            { _ = try ArchitectureName(parsing: "resnet50") },
            { _ = try ArchitectureName.vgg16.build(classes: 2, widthDivisor: 0) },
            { _ = try ArchitectureName.efficientNetLite0.build(classes: 2, widthDivisor: 2) },
        ] as [() throws -> Void] {
            XCTAssertThrowsError(try attempt()) { error in
                XCTAssertEqual((error as? CoverGenreError)?.code, .invalidArgument, "\(error)")
            }
        }
        XCTAssertThrowsError(try ArchitectureName(parsing: "resnet50")) {
            XCTAssertTrue("\($0)".contains("use baseline-cnn, vgg16 or efficientnet-lite0"), "\($0)")
        }
    }

    func testTheTrainerBuildsThroughTheSameList() throws {
        var configuration = TrainingConfiguration()
        configuration.architecture = "vgg16"
        configuration.widthDivisor = 16
        configuration.inputSize = 32
        XCTAssertEqual(try configuration.architecture(classes: 4).name, "vgg16")
        configuration.architecture = "vgg-16"
        XCTAssertThrowsError(try configuration.architecture(classes: 4))
    }
}
