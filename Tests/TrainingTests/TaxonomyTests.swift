import Architectures
import Foundation
import ImageIO
import ModelFormat
import SystemIO
import TestSupport
import ToolSupport
import Training
import XCTest

/// Several data sources combined under one taxonomy, and the augmentations that imitate how
/// sources differ.
final class TaxonomyTests: XCTestCase {
    /// Writes a tiny PNG cover (content does not matter to the loader).
    func cover(_ path: String) throws {
        try Files.makeDirectories(Files.parentDirectory(path))
        try Files.writeAtomically(path, try ImageEncoder.png(RGBImage(width: 2, height: 2, rgb: [UInt8](repeating: 90, count: 12))))
    }

    /// Source "alpha": a manifest with a split (metal, pop, polka); source "beta": a folder
    /// without one (Rock, Blues).
    func makeSources() throws -> (root: String, taxonomy: Taxonomy) {
        let root = temporaryDirectory()
        var rows = [["path", "genre", "split"]]
        for (i, (genre, split)) in [("metal", "train"), ("metal", "test"), ("pop", "val"), ("polka", "train")].enumerated() {
            try cover("\(root)/alpha/\(genre)/\(i).png")
            rows.append(["\(genre)/\(i).png", genre, split])
        }
        try CSV.write("\(root)/alpha/split.csv", rows)
        for name in ["Rock/a.png", "Rock/b.png", "Blues/c.png"] { try cover("\(root)/beta/\(name)") }
        try CSV.write("\(root)/taxonomy.csv", [
            ["source", "source_genre", "broad", "default"],
            ["alpha", "metal", "Metal", "Rock"], ["alpha", "pop", "Pop", "Pop"], ["alpha", "polka", "", ""],
            ["beta", "Rock", "Rock", "Rock"], ["beta", "Blues", "Blues", ""],
        ])
        return (root, try Taxonomy.load("\(root)/taxonomy.csv"))
    }

    func testSourcesAreMappedToOneLabelSet() throws {
        let (root, taxonomy) = try makeSources()
        XCTAssertEqual(taxonomy.labelSets, ["broad", "default"])
        let sources = [DataSource("\(root)/alpha/split.csv"), DataSource("\(root)/beta")]
        XCTAssertEqual(sources.map(\.name), ["alpha", "beta"])
        let (data, dropped) = try LabeledDataset.combine(sources, taxonomy: taxonomy, labelSet: "default")
        XCTAssertEqual(data.classes, ["Pop", "Rock"])
        XCTAssertEqual(dropped, ["alpha/polka": 1, "beta/Blues": 1])
        // Metal is Rock in the default set; beta has no split column, so it is training data only.
        let byName = Dictionary(uniqueKeysWithValues: data.items.map { (Files.baseName($0.path), $0) })
        XCTAssertEqual(byName.count, 5)
        XCTAssertEqual(byName["0.png"].map { data.classes[$0.label] }, "Rock")
        XCTAssertEqual(byName["1.png"]?.split, .test)
        XCTAssertEqual(byName["2.png"].map { data.classes[$0.label] }, "Pop")
        XCTAssertEqual(byName["a.png"]?.split, .train)
        XCTAssertEqual(byName["a.png"]?.source, "beta")
        XCTAssertEqual(data.provenance["name"], "alpha+beta")
        XCTAssertEqual(data.provenance["sources"]?["beta"]?["train"], JSON(2))

        let broad = try LabeledDataset.combine(sources, taxonomy: taxonomy, labelSet: "broad").dataset
        XCTAssertEqual(broad.classes, ["Blues", "Metal", "Pop", "Rock"])
        // A source named explicitly.
        XCTAssertEqual(DataSource("extra=\(root)/alpha/split.csv").name, "extra")
    }

    func testGapsInTheTaxonomyAreErrors() throws {
        let (root, taxonomy) = try makeSources()
        XCTAssertThrowsError(try LabeledDataset.combine([DataSource("gamma=\(root)/beta")], taxonomy: taxonomy, labelSet: "default")) {
            XCTAssertTrue("\($0)".contains("genre \"Blues\" of source \"gamma\""), "\($0)")
        }
        XCTAssertThrowsError(try taxonomy.genre(source: "beta", sourceGenre: "Rock", labelSet: "tiny")) {
            XCTAssertTrue("\($0)".contains("no label set \"tiny\""), "\($0)")
        }
        try CSV.write("\(root)/twice.csv", [["source", "source_genre", "default"], ["a", "x", "X"], ["a", "x", "Y"]])
        XCTAssertThrowsError(try Taxonomy.load("\(root)/twice.csv")) { XCTAssertTrue("\($0)".contains("listed twice"), "\($0)") }
        try CSV.write("\(root)/bad.csv", [["genre", "default"], ["x", "X"]])
        XCTAssertThrowsError(try Taxonomy.load("\(root)/bad.csv"))
    }

    /// A smooth gradient cover, 120 x 80.
    func gradient() -> RGBImage {
        var rgb = [UInt8]()
        for y in 0..<80 {
            for x in 0..<120 {
                rgb.append(UInt8(x * 2))
                rgb.append(UInt8(y * 3))
                rgb.append(UInt8((x + y) % 256))
            }
        }
        return RGBImage(width: 120, height: 80, rgb: rgb)
    }

    func only(_ change: (inout Augmentation) -> Void) -> Augmentation {
        var a = Augmentation()
        a.thumbnail = 0
        a.recompress = 0
        a.border = 0
        change(&a)
        return a
    }

    func testThumbnailShrinksTheCover() throws {
        var random = SplitMix64(seed: 3)
        let out = try ImagePipeline.degrade(gradient(), only { $0.thumbnail = 1; $0.thumbnailSide = 60...60 }, random: &random)
        XCTAssertEqual([out.width, out.height], [60, 40])
        // Same content, smaller: the pixel at the same relative place is close.
        XCTAssertEqual(Int(out[30, 20].0), Int(gradient()[60, 40].0), accuracy: 4)
    }

    func testRecompressionKeepsSizeAndRoughlyThePixels() throws {
        var random = SplitMix64(seed: 4)
        let source = gradient()
        let out = try ImagePipeline.degrade(source, only { $0.recompress = 1 }, random: &random)
        XCTAssertEqual([out.width, out.height], [120, 80])
        let a = source.bytes, b = out.bytes
        let meanError = zip(a, b).map { abs(Double($0) - Double($1)) }.reduce(0, +) / Double(a.count)
        XCTAssertLessThan(meanError, 12)
        XCTAssertNotEqual(a, b, "a low-quality JPEG round trip changes pixels")
    }

    func testBorderFramesTheCoverWithOneColour() throws {
        let source = gradient()
        for seed in 0..<12 as Range<UInt64> {
            var random = SplitMix64(seed: seed)
            let out = try ImagePipeline.degrade(source, only { $0.border = 1 }, random: &random)
            let dx = (out.width - source.width) / 2, dy = (out.height - source.height) / 2
            XCTAssertTrue(dx > 0 || dy > 0, "seed \(seed): no border")
            XCTAssertEqual(out.width, source.width + 2 * dx)
            XCTAssertEqual(out.height, source.height + 2 * dy)
            // The original is intact inside, and the corners share the border's colour.
            for (x, y) in [(0, 0), (119, 79), (57, 33)] {
                XCTAssertTrue(out[x + dx, y + dy] == source[x, y], "seed \(seed) pixel \(x),\(y)")
            }
            XCTAssertTrue(out[0, 0] == out[out.width - 1, out.height - 1], "seed \(seed)")
        }
    }

    func testDegradationIsReproducibleFromTheSeed() throws {
        let a = Augmentation()
        var r1 = SplitMix64(seed: 9), r2 = SplitMix64(seed: 9)
        var any = false
        for _ in 0..<20 {
            let x = try ImagePipeline.degrade(gradient(), a, random: &r1), y = try ImagePipeline.degrade(gradient(), a, random: &r2)
            XCTAssertEqual(x.bytes, y.bytes)
            any = any || x.bytes != gradient().bytes
        }
        XCTAssertTrue(any, "the default augmentation degrades some covers")
    }
}
