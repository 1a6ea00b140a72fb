import Architectures
import Graph
import ModelFormat
import SystemIO

/// A checkpoint turned into a CoverGenre model: description plus folded tensors.
public struct ImportedModel {
    public var description: ModelDescription
    public var tensors: TensorStore
}

/// Options every importer takes.
public struct ImportOptions {
    /// Input side in pixels; nil = the architecture's own (224 for Lite0, 240 Lite1, 260 Lite2, 224 VGG).
    public var inputSize: Int?
    /// Class labels; nil = ImageNet's for 1000-class heads, else class_0, class_1, ...
    public var labels: [String]?
    public var name: String?
    public var source: String = ""

    public init() {}
}

/// Weight layout conversions from PyTorch to CoverGenre.
enum Layout {
    /// [O, I, KH, KW] (PyTorch) -> [KH, KW, I, O] (CoverGenre's GEMM-ready layout).
    static func convWeight(_ t: ImportedTensor) throws -> HostTensor {
        guard t.shape.count == 4 else { throw CoverGenreError(.modelFormat, "convolution weight of shape \(t.shape) is not 4-D") }
        let (o, i, kh, kw) = (t.shape[0], t.shape[1], t.shape[2], t.shape[3])
        var out = [Float](repeating: 0, count: t.values.count)
        for a in 0..<o { for b in 0..<i { for y in 0..<kh { for x in 0..<kw {
            out[((y * kw + x) * i + b) * o + a] = t.values[((a * i + b) * kh + y) * kw + x]
        } } } }
        return HostTensor(shape: [kh, kw, i, o], values: out)
    }

    /// [out, in] (PyTorch Linear) -> [in, out].
    static func linearWeight(_ t: ImportedTensor) throws -> HostTensor {
        guard t.shape.count == 2 else { throw CoverGenreError(.modelFormat, "linear weight of shape \(t.shape) is not 2-D") }
        let (o, i) = (t.shape[0], t.shape[1])
        var out = [Float](repeating: 0, count: t.values.count)
        for a in 0..<o { for b in 0..<i { out[b * o + a] = t.values[a * i + b] } }
        return HostTensor(shape: [i, o], values: out)
    }

    static func vector(_ t: ImportedTensor) -> HostTensor { HostTensor(shape: [t.values.count], values: t.values) }
}

/// Fills an architecture's parameters from a checkpoint through a name map, checking every shape
/// against the architecture and refusing checkpoints with tensors the architecture does not use.
struct ParameterMapper {
    let checkpoint: StateDict
    var tensors = TensorStore()
    var used: Set<String> = []

    mutating func set(_ name: String, _ source: String, _ convert: (ImportedTensor) throws -> HostTensor) throws {
        let t = try checkpoint.require(source)
        tensors[name] = try convert(t)
        used.insert(source)
    }

    mutating func batchNorm(_ name: String, _ source: String) throws {
        for (ours, theirs) in [("gamma", "weight"), ("beta", "bias"), ("mean", "running_mean"), ("variance", "running_var")] {
            try set("\(name).\(ours)", "\(source).\(theirs)", Layout.vector)
        }
        used.insert("\(source).num_batches_tracked")
    }

    /// Checks the filled tensors against the architecture, then folds batch norms.
    func finish(_ architecture: Architecture, family: String) throws -> (GraphSpec, TensorStore) {
        for p in architecture.parameters {
            guard let t = tensors[p.name] else { throw CoverGenreError(.modelFormat, "\(family): no weights for \(p.name)") }
            guard t.shape == p.shape else {
                throw CoverGenreError(.modelFormat, "\(family): \(p.name) has shape \(t.shape), the architecture needs \(p.shape)")
            }
        }
        let unused = checkpoint.names.filter { !used.contains($0) }
        guard unused.isEmpty else {
            throw CoverGenreError(.modelFormat, "\(family): the checkpoint has tensors this architecture does not use: \(unused.prefix(5).joined(separator: ", "))")
        }
        return try architecture.graph.foldingBatchNorms(tensors)
    }
}

func labelsFor(_ classes: Int, _ options: ImportOptions) throws -> [String] {
    if let labels = options.labels {
        guard labels.count == classes else { throw CoverGenreError(.invalidArgument, "\(labels.count) labels for a \(classes)-class head") }
        return labels
    }
    return classes == 1000 ? ImageNetLabels.all : (0..<classes).map { "class_\($0)" }
}

/// EfficientNet-Lite from lukemelas-style names (`_conv_stem`, `_blocks.N._expand_conv`, `_bn0`,
/// `_fc`, ...). One importer serves every Lite variant: blocks are read in order, each block's
/// widths and kernel come from its weights, and a stage starts where a block's output width
/// changes, taking the next of the stage strides 1, 2, 2, 2, 1, 2, 1.
public enum EfficientNetLiteImporter {
    public static func matches(_ checkpoint: StateDict) -> Bool {
        checkpoint["_conv_stem.weight"] != nil && checkpoint["_blocks.0._depthwise_conv.weight"] != nil
    }

    /// (name, input size) of the published variants, recognised by block count and stage widths.
    static let variants: [(blocks: Int, widths: [Int], name: String, input: Int)] = [
        (16, [16, 24, 40, 80, 112, 192, 320], "efficientnet-lite0", 224),
        (21, [16, 24, 40, 80, 112, 192, 320], "efficientnet-lite1", 240),
        (21, [16, 24, 48, 88, 120, 208, 352], "efficientnet-lite2", 260),
    ]

    public static func blocks(_ checkpoint: StateDict) throws -> (stem: Int, blocks: [Networks.MBConvBlock]) {
        let stem = try checkpoint.require("_conv_stem.weight")
        guard stem.shape.count == 4, stem.shape[1] == 3 else { throw CoverGenreError(.modelFormat, "stem weight \(stem.shape) does not take RGB") }
        var blocks: [Networks.MBConvBlock] = []
        var channels = stem.shape[0]
        var stage = 0
        while let depthwise = checkpoint["_blocks.\(blocks.count)._depthwise_conv.weight"] {
            let i = blocks.count
            guard depthwise.shape.count == 4, depthwise.shape[1] == 1, depthwise.shape[2] == depthwise.shape[3] else {
                throw CoverGenreError(.modelFormat, "block \(i): depthwise weight \(depthwise.shape) is not [C, 1, k, k]")
            }
            let expanded = depthwise.shape[0]
            let project = try checkpoint.require("_blocks.\(i)._project_conv.weight")
            guard project.shape.count == 4, project.shape[1] == expanded else {
                throw CoverGenreError(.modelFormat, "block \(i): project weight \(project.shape) does not follow \(expanded) channels")
            }
            if let expand = checkpoint["_blocks.\(i)._expand_conv.weight"] {
                guard expand.shape == [expanded, channels, 1, 1], expanded % channels == 0 else {
                    throw CoverGenreError(.modelFormat, "block \(i): expand weight \(expand.shape) does not take \(channels) channels")
                }
            } else if expanded != channels {
                throw CoverGenreError(.modelFormat, "block \(i): \(expanded) depthwise channels but \(channels) inputs and no expansion")
            }
            let out = project.shape[0]
            let startsStage = i > 0 && out != blocks[i - 1].outChannels
            if startsStage { stage += 1 }
            guard stage < Networks.liteStageStrides.count else {
                throw CoverGenreError(.modelFormat, "block \(i) starts stage \(stage + 1); EfficientNet-Lite has 7")
            }
            let stride = i == 0 || startsStage ? Networks.liteStageStrides[stage] : 1
            blocks.append(Networks.MBConvBlock(inChannels: channels, outChannels: out, expandRatio: expanded / channels,
                                               kernel: depthwise.shape[2], stride: stride))
            channels = out
        }
        guard !blocks.isEmpty else { throw CoverGenreError(.modelFormat, "checkpoint has no _blocks") }
        return (stem.shape[0], blocks)
    }

    public static func convert(_ checkpoint: StateDict, options: ImportOptions = ImportOptions()) throws -> ImportedModel {
        let (stem, blocks) = try blocks(checkpoint)
        let head = try checkpoint.require("_conv_head.weight")
        let fc = try checkpoint.require("_fc.weight")
        guard head.shape.count == 4, fc.shape.count == 2 else { throw CoverGenreError(.modelFormat, "head or classifier has an unexpected rank") }
        let widths = Networks.stageEnds(blocks).map { blocks[$0].outChannels }
        let variant = variants.first { $0.blocks == blocks.count && $0.widths == widths }
        let inputSize = options.inputSize ?? variant?.input ?? 224
        let name = variant?.name ?? "efficientnet-lite"
        let architecture = Networks.efficientNetLite(name: name, blocks: blocks, classes: fc.shape[0], inputSize: inputSize,
                                                     stemChannels: stem, headChannels: head.shape[0])
        var m = ParameterMapper(checkpoint: checkpoint)
        try m.set("stem.weight", "_conv_stem.weight", Layout.convWeight)
        try m.batchNorm("stem.bn", "_bn0")
        for (i, block) in blocks.enumerated() {
            let source = "_blocks.\(i)"
            if block.expandRatio != 1 {
                try m.set("blocks.\(i).expand.weight", "\(source)._expand_conv.weight", Layout.convWeight)
                try m.batchNorm("blocks.\(i).expand.bn", "\(source)._bn0")
            }
            try m.set("blocks.\(i).depthwise.weight", "\(source)._depthwise_conv.weight", Layout.convWeight)
            try m.batchNorm("blocks.\(i).depthwise.bn", "\(source)._bn1")
            try m.set("blocks.\(i).project.weight", "\(source)._project_conv.weight", Layout.convWeight)
            try m.batchNorm("blocks.\(i).project.bn", "\(source)._bn2")
        }
        try m.set("head.weight", "_conv_head.weight", Layout.convWeight)
        try m.batchNorm("head.bn", "_bn1")
        try m.set("fc.weight", "_fc.weight", Layout.linearWeight)
        try m.set("fc.bias", "_fc.bias", Layout.vector)
        let (graph, tensors) = try m.finish(architecture, family: "EfficientNet-Lite")
        // The weights were trained at `inputSize` after resizing to inputSize / 0.875 and cropping.
        var preprocessing = Preprocessing.imagenet
        preprocessing.resize = .centerCrop(shorterSide: Int((Double(inputSize) / 0.875).rounded()))
        let description = ModelDescription(
            name: options.name ?? name, architecture: name, labels: try labelsFor(fc.shape[0], options), graph: graph,
            preprocessing: preprocessing,
            provenance: ["imported_from": .string(options.source), "blocks": JSON(blocks.count), "stage_widths": JSON(widths)])
        return ImportedModel(description: description, tensors: tensors)
    }
}

/// VGG-16 in torchvision's layout: `features.N.weight` for the 13 convolutions (with batch norm
/// at `features.N+1` in the `_bn` variant) and `classifier.{0,3,6}` for the linear layers.
public enum VGGImporter {
    public static func matches(_ checkpoint: StateDict) -> Bool {
        checkpoint["features.0.weight"] != nil && checkpoint["classifier.0.weight"] != nil
    }

    public static func convert(_ checkpoint: StateDict, options: ImportOptions = ImportOptions()) throws -> ImportedModel {
        let convIndices = checkpoint.names.compactMap { name -> Int? in
            let parts = name.split(separator: ".")
            guard parts.count == 3, parts[0] == "features", parts[2] == "weight", let i = Int(parts[1]),
                  checkpoint[name]?.shape.count == 4 else { return nil }
            return i
        }.sorted()
        guard convIndices.count == 13 else {
            throw CoverGenreError(.modelFormat, "VGG-16 has 13 convolutions; the checkpoint has \(convIndices.count)")
        }
        let batchNorm = checkpoint["features.\(convIndices[0] + 1).running_mean"] != nil
        let widths = try convIndices.map { try checkpoint.require("features.\($0).weight").shape[0] }
        let fc0 = try checkpoint.require("classifier.0.weight"), fc1 = try checkpoint.require("classifier.3.weight")
        let fc2 = try checkpoint.require("classifier.6.weight")
        guard fc0.shape.count == 2, fc1.shape.count == 2, fc2.shape.count == 2, fc0.shape[1] == widths[12] * 49 else {
            throw CoverGenreError(.modelFormat, "VGG-16 classifier \(fc0.shape) does not take 7x7x\(widths[12]) features")
        }
        let inputSize = options.inputSize ?? 224
        let architecture = Networks.vgg16(classes: fc2.shape[0], inputSize: inputSize, widths: widths, hidden: fc0.shape[0],
                                          batchNorm: batchNorm, dropout: 0.5)
        guard fc1.shape == [fc0.shape[0], fc0.shape[0]] else {
            throw CoverGenreError(.modelFormat, "VGG-16 classifier.3 is \(fc1.shape); expected a square hidden layer")
        }
        var m = ParameterMapper(checkpoint: checkpoint)
        for (n, index) in convIndices.enumerated() {
            try m.set("features.conv\(n).weight", "features.\(index).weight", Layout.convWeight)
            if batchNorm {
                // torchvision's vgg16_bn keeps a conv bias before the batch norm; BN(x + b) is BN with
                // its mean shifted by b, which lets the conv stay bias-free here.
                try m.batchNorm("features.conv\(n).bn", "features.\(index + 1)")
                let bias = try checkpoint.require("features.\(index).bias").values
                m.tensors["features.conv\(n).bn.mean"]!.values = zip(m.tensors["features.conv\(n).bn.mean"]!.values, bias).map { $0 - $1 }
                m.used.insert("features.\(index).bias")
            } else {
                try m.set("features.conv\(n).bias", "features.\(index).bias", Layout.vector)
            }
        }
        // classifier.0 reads torch's (C, H, W) flattening; ours is (H, W, C): permute its inputs.
        let channels = widths[12]
        try m.set("classifier.fc0.weight", "classifier.0.weight") { t in
            var permuted = t.values
            let hidden = t.shape[0]
            for o in 0..<hidden { for c in 0..<channels { for p in 0..<49 {
                permuted[o * t.shape[1] + p * channels + c] = t.values[o * t.shape[1] + c * 49 + p]
            } } }
            return try Layout.linearWeight(ImportedTensor(shape: t.shape, values: permuted))
        }
        for (ours, theirs) in [("fc0", 0), ("fc1", 3), ("fc2", 6)] {
            if ours != "fc0" { try m.set("classifier.\(ours).weight", "classifier.\(theirs).weight", Layout.linearWeight) }
            try m.set("classifier.\(ours).bias", "classifier.\(theirs).bias", Layout.vector)
        }
        let (graph, tensors) = try m.finish(architecture, family: "VGG-16")
        var preprocessing = Preprocessing.imagenet
        preprocessing.resize = .centerCrop(shorterSide: Int((Double(inputSize) / 0.875).rounded()))
        let description = ModelDescription(
            name: options.name ?? "vgg16", architecture: "vgg16", labels: try labelsFor(fc2.shape[0], options), graph: graph,
            preprocessing: preprocessing, provenance: ["imported_from": .string(options.source), "batch_norm": .bool(batchNorm)])
        return ImportedModel(description: description, tensors: tensors)
    }
}

public enum Importer {
    /// Reads a `.pth`/`.pt` or `.safetensors` checkpoint (by content) and converts the architecture
    /// it recognises.
    public static func importCheckpoint(path: String, options: ImportOptions = ImportOptions()) throws -> ImportedModel {
        let checkpoint = try read(path: path)
        var options = options
        if options.source.isEmpty { options.source = Files.baseName(path) }
        if EfficientNetLiteImporter.matches(checkpoint) { return try EfficientNetLiteImporter.convert(checkpoint, options: options) }
        if VGGImporter.matches(checkpoint) { return try VGGImporter.convert(checkpoint, options: options) }
        throw CoverGenreError(.modelUnsupported, "\(path): not an EfficientNet-Lite or VGG-16 state dict (first tensors: \(checkpoint.names.prefix(3).joined(separator: ", ")))")
    }

    public static func read(path: String) throws -> StateDict {
        let file = try MappedFile(path: path, maxBytes: 4 << 30)
        let bytes = file.bytes
        // safetensors starts with its header length; a pickle with 0x80, a zip with "PK".
        if bytes.count >= 9, bytes[8] == UInt8(ascii: "{") { return try SafeTensors.read(path: path) }
        return try TorchCheckpoint.read(path: path)
    }
}
