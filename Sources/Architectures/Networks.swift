import Graph
import Kernels

/// The networks CoverGenre trains and imports.
public enum Networks {
    /// The study's baseline: five 3x3 convolutions (ReLU, 2x2 max pool after each) and two linear
    /// layers, at 256x256. Channels 32-48-96-192-256 give 1.48 GFLOP per image, the study's size.
    /// `batchNorm` and `dropout` are our recipe's additions.
    public static func baselineCNN(classes: Int, inputSize: Int = 256, channels: [Int] = [32, 48, 96, 192, 256],
                                   hidden: Int = 256, batchNorm: Bool = false, dropout: Double = 0) -> Architecture {
        var b = GraphBuilder(shape: ActivationShape(height: inputSize, width: inputSize, channels: 3))
        var x = b.input
        for (i, c) in channels.enumerated() {
            x = b.conv("conv\(i + 1)", x, out: c, kernel: 3, padding: .explicit(top: 1, bottom: 1, left: 1, right: 1),
                       activation: .relu, batchNorm: batchNorm)
            x = b.maxPool("pool\(i + 1)", x, kernel: 2, stride: 2)
        }
        x = b.node("flatten", .flatten, [x])
        let features = b.linear("fc1", x, out: hidden, activation: .relu)
        x = dropout > 0 ? b.node("dropout", .dropout(rate: dropout), [features]) : features
        let logits = b.linear("fc2", x, out: classes)
        return Architecture(name: "baseline-cnn", graph: b.graph(logits: logits, embedding: features),
                            parameters: b.parameters,
                            preprocessing: Preprocessing(resize: .stretch, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]))
    }

    /// VGG-16's convolution widths, with max pools after the 2nd, 4th, 7th, 10th and 13th.
    public static let vgg16Widths = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    static let vgg16PoolAfter: Set<Int> = [1, 3, 6, 9, 12]

    /// torchvision's VGG-16 layout (13 convolutions, adaptive 7x7 average pool, 3 linear layers).
    /// `widthDivisor` shrinks every layer for tests; `hidden` sets the classifier's width.
    public static func vgg16(classes: Int, inputSize: Int = 224, widthDivisor: Int = 1, hidden: Int = 4096,
                             batchNorm: Bool = false, dropout: Double = 0.5) -> Architecture {
        vgg16(classes: classes, inputSize: inputSize, widths: vgg16Widths.map { max(1, $0 / widthDivisor) }, hidden: hidden,
              batchNorm: batchNorm, dropout: dropout)
    }

    public static func vgg16(classes: Int, inputSize: Int, widths: [Int], hidden: Int, batchNorm: Bool,
                             dropout: Double) -> Architecture {
        precondition(widths.count == 13, "VGG-16 has 13 convolutions")
        var b = GraphBuilder(shape: ActivationShape(height: inputSize, width: inputSize, channels: 3))
        var x = b.input
        for (i, width) in widths.enumerated() {
            x = b.conv("features.conv\(i)", x, out: width, kernel: 3, padding: .explicit(top: 1, bottom: 1, left: 1, right: 1),
                       activation: .relu, batchNorm: batchNorm)
            if vgg16PoolAfter.contains(i) { x = b.maxPool("features.pool\(vgg16PoolAfter.filter { $0 < i }.count)", x, kernel: 2, stride: 2) }
        }
        x = b.node("avgpool", .adaptiveAveragePool(height: 7, width: 7), [x])
        x = b.node("flatten", .flatten, [x])
        x = b.linear("classifier.fc0", x, out: hidden, activation: .relu)
        if dropout > 0 { x = b.node("classifier.dropout0", .dropout(rate: dropout), [x]) }
        let features = b.linear("classifier.fc1", x, out: hidden, activation: .relu)
        x = dropout > 0 ? b.node("classifier.dropout1", .dropout(rate: dropout), [features]) : features
        let logits = b.linear("classifier.fc2", x, out: classes)
        return Architecture(name: "vgg16", graph: b.graph(logits: logits, embedding: features), parameters: b.parameters,
                            preprocessing: .imagenet)
    }

    /// One MBConv block of EfficientNet-Lite.
    public struct MBConvBlock: Equatable, Sendable {
        public var inChannels: Int
        public var outChannels: Int
        public var expandRatio: Int
        public var kernel: Int
        public var stride: Int

        public init(inChannels: Int, outChannels: Int, expandRatio: Int, kernel: Int, stride: Int) {
            self.inChannels = inChannels
            self.outChannels = outChannels
            self.expandRatio = expandRatio
            self.kernel = kernel
            self.stride = stride
        }
    }

    /// EfficientNet-Lite0's stages: (repeats, kernel, stride, expand ratio, output channels).
    public static let lite0Stages: [(Int, Int, Int, Int, Int)] = [
        (1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112), (4, 5, 2, 6, 192),
        (1, 3, 1, 6, 320),
    ]

    /// The stage strides every EfficientNet-Lite shares; a stage starts where a block's output
    /// width changes.
    public static let liteStageStrides = [1, 2, 2, 2, 1, 2, 1]

    public static func lite0Blocks() -> [MBConvBlock] {
        var blocks: [MBConvBlock] = []
        var channels = 32
        for (repeats, kernel, stride, expand, out) in lite0Stages {
            for r in 0..<repeats {
                blocks.append(MBConvBlock(inChannels: channels, outChannels: out, expandRatio: expand, kernel: kernel,
                                          stride: r == 0 ? stride : 1))
                channels = out
            }
        }
        return blocks
    }

    /// EfficientNet-Lite (ReLU6, no squeeze-excite, TF "SAME" padding, batch norm eps 1e-3).
    /// Node names: stem, blocks.N.{expand,depthwise,project}, head, pool, fc; stage outputs are
    /// the last block of each stage (see `stageOutputs`).
    public static func efficientNetLite(name: String, blocks: [MBConvBlock], classes: Int, inputSize: Int,
                                        stemChannels: Int = 32, headChannels: Int = 1280, dropout: Double = 0.2) -> Architecture {
        let eps = 1e-3
        var b = GraphBuilder(shape: ActivationShape(height: inputSize, width: inputSize, channels: 3))
        var x = b.conv("stem", b.input, out: stemChannels, kernel: 3, stride: 2, padding: .same, activation: .relu6,
                       batchNorm: true, epsilon: eps)
        for (i, block) in blocks.enumerated() {
            let input = x
            let expanded = block.inChannels * block.expandRatio
            if block.expandRatio != 1 {
                x = b.conv("blocks.\(i).expand", x, out: expanded, kernel: 1, padding: .valid, activation: .relu6,
                           batchNorm: true, epsilon: eps)
            }
            x = b.conv("blocks.\(i).depthwise", x, out: expanded, kernel: block.kernel, stride: block.stride, padding: .same,
                       groups: expanded, activation: .relu6, batchNorm: true, epsilon: eps)
            x = b.conv("blocks.\(i).project", x, out: block.outChannels, kernel: 1, padding: .valid, activation: .none,
                       batchNorm: true, epsilon: eps)
            if block.stride == 1 && block.inChannels == block.outChannels {
                x = b.node("blocks.\(i).add", .add(.none), [x, input])
            }
        }
        x = b.conv("head", x, out: headChannels, kernel: 1, padding: .valid, activation: .relu6, batchNorm: true, epsilon: eps)
        let pooled = b.node("pool", .globalAveragePool, [x])
        x = dropout > 0 ? b.node("dropout", .dropout(rate: dropout), [pooled]) : pooled
        let logits = b.linear("fc", x, out: classes)
        return Architecture(name: name, graph: b.graph(logits: logits, embedding: pooled), parameters: b.parameters,
                            preprocessing: .imagenet)
    }

    public static func efficientNetLite0(classes: Int, inputSize: Int = 224) -> Architecture {
        efficientNetLite(name: "efficientnet-lite0", blocks: lite0Blocks(), classes: classes, inputSize: inputSize)
    }

    /// Indices of the last block of each stage (where the next block's width changes).
    public static func stageEnds(_ blocks: [MBConvBlock]) -> [Int] {
        blocks.indices.filter { $0 == blocks.count - 1 || blocks[$0 + 1].outChannels != blocks[$0].outChannels }
    }
}
