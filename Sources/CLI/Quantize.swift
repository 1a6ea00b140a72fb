import ArgumentParser
import CoverGenre
import Graph
import ModelFormat
import SystemIO
import ToolSupport
import Kernels
import Training

extension RangeMethod: ExpressibleByArgument {}
extension CompactLayers: ExpressibleByArgument {}

/// Post-training quantization: a float model in, an int8 model out (docs/quantization.md).
struct Quantize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make an int8 model from a float one: int8 weights per output channel, activation ranges measured on calibration covers.",
        discussion: """
        Layers made int8: every 1x1 convolution (the bulk of the work) unless --layers says otherwise, \
        and the depthwise convolutions (uint8 activations per channel, 16-bit weights) unless \
        --depthwise off; the first convolution and the genre head stay in floating point. \
        The defaults are the recipe measured best (docs/quantization.md); scripts/quantize-models.sh \
        makes int8 versions of the shipped models with it.
        """)

    @Argument(help: "The float model to quantize.") var model: String

    @Option(help: ArgumentHelp("Calibration covers: an image folder, or a manifest/labelled folder (its --split).",
                               discussion: "Never the covers you will report on."))
    var calibration: String

    @Option(help: "Split of a manifest to calibrate on.") var split = "train"

    @Option(help: "Calibration covers to use (an even sample of them).") var images = 300

    @Option(help: "How an activation's range is chosen from the calibration covers.") var method: RangeMethod = .minmax

    @Option(help: "Which layers become int8: pointwise (1x1 convolutions), convolutions (also larger kernels, not the first), all (also linear layers).")
    var layers: LayerChoice = .pointwise

    @Option(name: .customLong("keep-float"), parsing: .upToNextOption, help: "Graph nodes to keep in floating point (by name).")
    var keepFloat: [String] = []

    @Option(help: "Threads (0 = every core).") var threads = 0

    @Option(name: .customLong("float-storage"), help: "Which layers left in floating point store their weights in int8 (8 bits per output channel, widened at load: a smaller file): none, linear (the head) or all.")
    var floatStorage: CompactLayers = .none

    @Option(name: .customLong("weight-bits"), help: ArgumentHelp(
        "Bits of the int8 weights: 8 (closest to the float model) or 7 (AVX2 without VNNI multiplies them twice as fast).",
        discussion: "The int8 layers compute the same integers on every CPU either way."))
    var weightBits: WeightBits = .eight

    enum WeightBits: String, ExpressibleByArgument, CaseIterable {
        case eight = "8", seven = "7"
        var levels: Float { self == .eight ? Quantization.weightLevels : Quantization.narrowWeightLevels }
    }

    @Option(help: "Balance each int8 layer's input channels against its weights before quantizing (docs/quantization.md).")
    var balance: Switch = .on

    enum Switch: String, ExpressibleByArgument, CaseIterable { case on, off }

    @Option(help: "Make the depthwise convolutions int8 too: uint8 activations, a range per channel, 16-bit weights (docs/quantization.md).")
    var depthwise: Switch = .on

    @Option(name: .customLong("bias-correction"), help: "Subtract from each int8 layer's bias the shift its quantization adds to its output's mean, measured on the calibration covers (docs/quantization.md).")
    var biasCorrection: Switch = .on

    @Flag(help: "Also measure each layer alone: the model with only that layer int8 against the float model on the calibration covers (how --keep-float choices are made).")
    var sensitivity = false

    @Option(help: "Output model file (written atomically; may not be the input).") var out: String

    enum LayerChoice: String, ExpressibleByArgument, CaseIterable { case pointwise, convolutions, all }

    func validate() throws {
        guard out != model else { throw ValidationError("--out must differ from the input model.") }
        guard images > 0 else { throw ValidationError("--images must be positive.") }
        guard (0...Model.maxThreads).contains(threads) else { throw ValidationError("--threads is 0...\(Model.maxThreads).") }
    }

    /// The covers to calibrate on: a manifest's split (a folder holding split.csv counts as its
    /// manifest, so `--split train` keeps val and test covers out), or every image under a folder.
    static func calibrationImages(_ source: String, split: String) throws -> [String] {
        let manifest = Files.join(source, "split.csv")
        let source = Files.isDirectory(source) && Files.isRegularFile(manifest) ? manifest : source
        // A manifest's own errors are the user's to see; a folder without genre folders is not one.
        let dataset = source.hasSuffix(".csv") ? try LabeledDataset.load(source) : try? LabeledDataset.load(source)
        if let dataset {
            let wanted = Split(rawValue: split)
            guard split == "all" || wanted != nil else { throw ValidationError("--split is train, val, test or all.") }
            let items = dataset.items.filter { split == "all" || $0.split == nil || $0.split == wanted }
            return items.map(\.path)
        }
        return try CoverIndex.imagePaths(under: source)
    }

    func run() throws {
        let available = try Quantize.calibrationImages(calibration, split: split).sorted()
        guard !available.isEmpty else { throw CLIError("no covers to calibrate on in \(calibration)") }
        // An even sample over the whole sorted list (every genre folder), so reruns pick the same ones.
        let count = min(images, available.count)
        let chosen = (0..<count).map { available[$0 * available.count / count] }
        let quantizer = try Quantizer(path: model)
        let graph = quantizer.graph
        // Its int8 weights would be widened and quantized again, and balanced ones would carry
        // their old channel scales into a layer that no longer divides by them.
        if let node = graph.nodes.first(where: { $0.op.inputQuantization != nil }) {
            throw CLIError("\(model) is already an int8 model (node \"\(node.name)\"); quantize takes a float model")
        }
        let unknown = keepFloat.filter { name in !graph.nodes.contains { $0.name == name } }
        guard unknown.isEmpty else { throw ValidationError("--keep-float: no graph node named \(unknown.joined(separator: ", ")).") }
        // 1x1 convolutions made int8 that can write bytes for one reader (CompiledGraph.byteChains:
        // read by one node, depth within one pass of the kernel).
        let chosen1x1 = Set(quantizer.eligible.filter { i in
            let name = graph.nodes[i].name
            guard !keepFloat.contains(name), case .conv2d(let a) = graph.nodes[i].op else { return false }
            return a.kernel == (1, 1) && a.stride == (1, 1) && a.groups == 1 && graph.nodes.filter({ $0.inputs.contains(name) }).count == 1
                && graph.logits != name && graph.embedding != name
                && (quantizer.model.file.info(a.weight)?.shape[2] ?? Int.max) <= QuantizedMatrix.maxRowsForByteOutput
        }.map { graph.nodes[$0].name })
        let nodes = quantizer.eligible.filter { i in
            let node = graph.nodes[i]
            guard !keepFloat.contains(node.name) else { return false }
            if quantizer.isDepthwise(i) {
                // Only where an int8 1x1 convolution writes its input, as bytes (the engine's
                // byteChains): after a float layer its input would be quantized in a pass of its
                // own, which measured slower than the float convolution (docs/quantization.md).
                return depthwise == .on && node.inputs.count == 1 && chosen1x1.contains(node.inputs[0])
            }
            switch node.op {
            case .conv2d(let a):
                if a.kernel == (1, 1) && a.stride == (1, 1) { return true }
                // The first convolution reads the image itself: kept float (its 3 input channels
                // make it cheap, and its input is the least forgiving to quantize).
                return layers != .pointwise && node.inputs != [graph.input]
            case .linear: return layers == .all
            default: return false
            }
        }
        guard !nodes.isEmpty else { throw CLIError("\(model) has no layer to make int8 with --layers \(layers.rawValue)") }
        let threadCount = threads > 0 ? threads : Parallel.availableCores
        let started = Clock.seconds
        let measured = try quantizer.measure(chosen, nodes: nodes, threads: threadCount, balance: balance == .on)
        let ranges = measured.mapValues { $0.histogram.range(method) }
        let channelScales = measured.compactMapValues(\.channelScales)
        let floatLayers = graph.nodes.indices.filter { i in
            switch graph.nodes[i].op {
            case .conv2d, .linear: return ranges[i] == nil
            default: return false
            }
        }.map { graph.nodes[$0].name }
        let provenance: JSON = [
            "method": .string(method.rawValue), "balanced_channels": .bool(balance == .on), "calibration": .string(DataSource(calibration).name),
            "calibration_images": JSON(chosen.count), "int8_layers": JSON(ranges.count), "float_layers": JSON(floatLayers),
            "weights": .string("int8 symmetric per output channel, [-\(Int(weightBits.levels)), \(Int(weightBits.levels))]"), "activations": "uint8 per tensor with a zero point",
            "float_layers_in_int8_storage": .string(floatStorage.rawValue), "bias_correction": .bool(biasCorrection == .on),
            "depthwise": .string(depthwise == .on ? "uint8 activations per channel, 16-bit weights per channel" : "float"),
        ]
        if sensitivity {
            try measureSensitivity(quantizer, ranges: ranges, channelScales: channelScales, images: chosen, threads: threadCount)
        }
        let shifts = biasCorrection == .on
            ? try quantizer.biasShifts(chosen, ranges: ranges, channelScales: channelScales, weightLevels: weightBits.levels,
                                       threads: threadCount)
            : [:]
        let writer = try quantizer.quantized(ranges: ranges, channelScales: channelScales, weightLevels: weightBits.levels,
                                             compactFloatLayers: floatStorage, biasShifts: shifts, provenance: provenance)
        let bytes = writer.serialize()
        let quantized = try Model(bytes: bytes) // the result must load, before anything is written
        try Files.writeAtomically(out, bytes)
        print("calibrated on \(chosen.count) covers of \(calibration) (\(method.rawValue)) in \(Format.fixed(Clock.seconds - started, 1)) s")
        print("int8: \(ranges.count) layers; floating point: \(floatLayers.count) (\(floatLayers.joined(separator: ", ")))")
        let agreement = try Quantize.agreement(quantizer.model, quantized, chosen, threads: threadCount)
        print("same top genre as the float model on \(agreement.total) calibration covers: \(Format.fixed(100 * agreement.fraction, 1))%")
        let megabytes = Double(Files.size(out) ?? 0) / Double(1 << 20)
        print("wrote \(out) (\(Format.fixed(megabytes, 2)) MiB)")
    }

    /// Prints, per int8 layer, how far the model with that layer alone int8 answers from the float
    /// model: mean L1 distance of the probabilities and top-genre changes, worst first.
    func measureSensitivity(_ quantizer: Quantizer, ranges: [Int: (low: Float, high: Float)], channelScales: [Int: [Float]],
                            images: [String], threads: Int) throws {
        let inputs = images.map { ImageInput.path($0) }
        let reference = quantizer.model.probabilities(batch: inputs, threads: threads)
        var rows: [(name: String, distance: Double, flips: Int)] = []
        for (i, range) in ranges {
            let bytes = try quantizer.quantized(ranges: [i: range], channelScales: channelScales.filter { $0.key == i },
                                                weightLevels: weightBits.levels, provenance: .null).serialize()
            let single = try Model(bytes: bytes)
            var distance = 0.0, flips = 0, count = 0
            for case (.success(let a), .success(let b)) in zip(reference, single.probabilities(batch: inputs, threads: threads)) {
                distance += zip(a, b).reduce(0) { $0 + Double(abs($1.0 - $1.1)) }
                if a.indices.max(by: { a[$0] < a[$1] }) != b.indices.max(by: { b[$0] < b[$1] }) { flips += 1 }
                count += 1
            }
            rows.append((quantizer.graph.nodes[i].name, distance / Double(max(count, 1)), flips))
        }
        print("layer alone int8, against the float model on \(images.count) calibration covers (worst first):")
        print("mean L1 of probabilities  top-genre changes  layer")
        for row in rows.sorted(by: { $0.distance > $1.distance }) {
            print("\(Format.fixed(row.distance, 5).padding(toLength: 25, withPad: " ", startingAt: 0))\(String(row.flips).padding(toLength: 19, withPad: " ", startingAt: 0))\(row.name)")
        }
    }

    /// How often two models give the same top genre on `images`.
    static func agreement(_ a: Model, _ b: Model, _ images: [String], threads: Int) throws -> (fraction: Double, total: Int) {
        let pa = a.probabilities(batch: images.map { .path($0) }, threads: threads)
        let pb = b.probabilities(batch: images.map { .path($0) }, threads: threads)
        var same = 0, total = 0
        for case (.success(let x), .success(let y)) in zip(pa, pb) {
            total += 1
            if x.indices.max(by: { x[$0] < x[$1] }) == y.indices.max(by: { y[$0] < y[$1] }) { same += 1 }
        }
        return (total > 0 ? Double(same) / Double(total) : 0, total)
    }
}
