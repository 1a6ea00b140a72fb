import ModelFormat
import SystemIO

/// How a cover becomes the model's input tensor.
public struct Preprocessing: Equatable, Sendable {
    public indirect enum Resize: Equatable, Sendable {
        /// Scale the whole image to the input size, ignoring its aspect ratio.
        case stretch
        /// Scale so the shorter side is `shorterSide` pixels, then cut the input size from the
        /// centre (torchvision's Resize + CenterCrop). shorterSide == input side crops to a square.
        case centerCrop(shorterSide: Int)
    }

    public var resize: Resize
    /// Per-channel mean and standard deviation on the 0...1 scale: x = (pixel / 255 - mean) / std.
    public var mean: [Float]
    public var std: [Float]
    /// Average the probabilities of the image and its mirror image (test-time augmentation).
    public var flipAverage: Bool

    public init(resize: Resize, mean: [Float], std: [Float], flipAverage: Bool = false) {
        self.resize = resize
        self.mean = mean
        self.std = std
        self.flipAverage = flipAverage
    }

    public static let imagenet = Preprocessing(resize: .centerCrop(shorterSide: 256), mean: [0.485, 0.456, 0.406],
                                               std: [0.229, 0.224, 0.225])

    public var json: JSON {
        var o: [String: JSON] = ["mean": JSON(mean), "std": JSON(std), "flip_average": .bool(flipAverage)]
        switch resize {
        case .stretch: o["resize"] = "stretch"
        case .centerCrop(let side):
            o["resize"] = "center_crop"
            o["shorter_side"] = JSON(side)
        }
        return .object(o)
    }

    public init(json: JSON) throws {
        let f = FieldReader(json, context: "preprocess")
        switch try f.string("resize") {
        case "stretch": resize = .stretch
        case "center_crop": resize = .centerCrop(shorterSide: try f.int("shorter_side", range: 1...65536))
        case let other: throw f.fail("unknown resize policy \"\(other)\"")
        }
        mean = try f.doubles("mean").map(Float.init)
        std = try f.doubles("std").map(Float.init)
        guard mean.count == 3, std.count == 3, mean.allSatisfy(\.isFinite), std.allSatisfy({ $0.isFinite && $0 > 0 }) else {
            throw f.fail("mean and std need 3 finite values each, std positive")
        }
        flipAverage = f.has("flip_average") ? try f.bool("flip_average") : false
    }

    /// The source rectangle (x, y, width, height) that maps onto an output of outWidth x outHeight.
    public func sourceRegion(imageWidth: Int, imageHeight: Int, outWidth: Int, outHeight: Int) -> (Double, Double, Double, Double) {
        let w = Double(imageWidth), h = Double(imageHeight)
        switch resize {
        case .stretch:
            return (0, 0, w, h)
        case .centerCrop(let side):
            // Scaling the shorter side to `side` scales everything by k; the crop is out/k source pixels.
            let k = Double(side) / min(w, h)
            let cw = min(Double(outWidth) / k, w), ch = min(Double(outHeight) / k, h)
            return ((w - cw) / 2, (h - ch) / 2, cw, ch)
        }
    }
}

/// Everything in a model file's metadata: what the model is, what it outputs, how to feed it,
/// and where it came from.
public struct ModelDescription: Equatable, Sendable {
    public static let formatName = "covergenre-model"

    public var name: String
    public var architecture: String
    public var labels: [String]
    public var graph: GraphSpec
    public var preprocessing: Preprocessing
    /// Free-form: data, split seed, epochs, metrics, source weights, licence.
    public var provenance: JSON
    /// Post-hoc calibration: the engine's probabilities are softmax(logits / temperature); 1 is
    /// none. Fitted on held-out covers by `covergenre calibrate`.
    public var temperature: Double = 1
    /// How the temperature was fitted (data, NLL and ECE before and after), kept in the file.
    public var calibration: JSON = .null
    public static let temperatureRange = 0.01...100.0

    public init(name: String, architecture: String, labels: [String], graph: GraphSpec, preprocessing: Preprocessing,
                provenance: JSON = .object([:])) {
        self.name = name
        self.architecture = architecture
        self.labels = labels
        self.graph = graph
        self.preprocessing = preprocessing
        self.provenance = provenance
    }

    public var json: JSON {
        .object([
            "format": .string(Self.formatName),
            "name": .string(name),
            "architecture": .string(architecture),
            "labels": JSON(labels),
            "graph": graph.json,
            "preprocess": preprocessing.json,
            "provenance": provenance,
        ].merging(temperature == 1 && calibration == .null ? [:] : ["calibration": calibrationJSON]) { a, _ in a })
    }

    private var calibrationJSON: JSON {
        var o = calibration.object ?? [:]
        o["temperature"] = .number(temperature)
        return .object(o)
    }

    public init(json: JSON, limits: GraphLimits = GraphLimits()) throws {
        let f = FieldReader(json, context: "metadata")
        guard try f.string("format") == Self.formatName else { throw f.fail("\"format\" is not \"\(Self.formatName)\"") }
        name = f.has("name") ? try f.string("name") : ""
        architecture = f.has("architecture") ? try f.string("architecture") : "custom"
        labels = try f.strings("labels")
        guard !labels.isEmpty, labels.count <= 100_000 else { throw f.fail("needs 1 to 100000 labels, has \(labels.count)") }
        guard Set(labels).count == labels.count else { throw f.fail("labels are not unique") }
        graph = try GraphSpec(json: try f.value("graph"), limits: limits)
        preprocessing = try Preprocessing(json: try f.value("preprocess"))
        provenance = f.has("provenance") ? try f.value("provenance") : .object([:])
        if f.has("calibration") {
            let c = FieldReader(try f.value("calibration"), context: "metadata \"calibration\"")
            temperature = try c.double("temperature")
            guard Self.temperatureRange.contains(temperature) else {
                throw c.fail("\"temperature\" \(temperature) is outside \(Self.temperatureRange)")
            }
            calibration = try f.value("calibration")
        }
    }
}
