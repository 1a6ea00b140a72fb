import SystemIO

/// The networks that can be built from scratch (`covergenre create --arch`, `covergenre train
/// --arch`), by the name those options and a model file's `architecture` field use. The one list
/// of them: the CLI and the trainer both build through `build`.
public enum ArchitectureName: String, CaseIterable, Sendable {
    case baselineCNN = "baseline-cnn"
    case vgg16 = "vgg16"
    case efficientNetLite0 = "efficientnet-lite0"

    /// "baseline-cnn, vgg16 or efficientnet-lite0", for help texts and errors.
    public static var choices: String {
        let names = allCases.map(\.rawValue)
        return names.dropLast().joined(separator: ", ") + " or " + names.last!
    }

    /// The architecture called `name`, or an invalid-argument error that lists the choices.
    public init(parsing name: String) throws {
        guard let known = Self(rawValue: name) else {
            throw CoverGenreError(.invalidArgument, "unknown architecture \"\(name)\"; use \(Self.choices)")
        }
        self = known
    }

    /// The untrained network. `inputSize` nil takes the architecture's own (256 for the baseline
    /// CNN, 224 for the others). `widthDivisor` divides every width of the baseline CNN and VGG-16
    /// (small models for tests and quick trials). `dropout` nil takes the network's own (0.5 before
    /// VGG-16's classifier layers, none in the baseline CNN). EfficientNet-Lite0 has its published
    /// widths and normalization only, so it ignores `batchNorm` and `dropout`.
    public func build(classes: Int, inputSize: Int? = nil, widthDivisor: Int = 1, batchNorm: Bool = false,
                      dropout: Double? = nil) throws -> Architecture {
        guard widthDivisor >= 1 else {
            throw CoverGenreError(.invalidArgument, "the width divisor must be at least 1, not \(widthDivisor)")
        }
        switch self {
        case .baselineCNN:
            return Networks.baselineCNN(classes: classes, inputSize: inputSize ?? 256,
                                        channels: [32, 48, 96, 192, 256].map { max(1, $0 / widthDivisor) },
                                        hidden: max(1, 256 / widthDivisor), batchNorm: batchNorm, dropout: dropout ?? 0)
        case .vgg16:
            return Networks.vgg16(classes: classes, inputSize: inputSize ?? 224, widthDivisor: widthDivisor,
                                  hidden: max(1, 4096 / widthDivisor), batchNorm: batchNorm, dropout: dropout ?? 0.5)
        case .efficientNetLite0:
            guard widthDivisor == 1 else {
                throw CoverGenreError(.invalidArgument, "the width divisor applies to baseline-cnn and vgg16, not efficientnet-lite0")
            }
            return Networks.efficientNetLite0(classes: classes, inputSize: inputSize ?? 224)
        }
    }
}
