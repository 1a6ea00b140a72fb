import ArgumentParser
import CoverGenre
import Graph
import ImageIO
import ModelFormat
import SystemIO

/// Rewrites a model with another tensor storage type: f16 halves the file (the engine computes in
/// f32 either way), which is how the shipped default model is stored.
struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Rewrite a model's tensors as f32 or f16 (metadata and graph unchanged).")

    @Argument(help: "The model to convert.") var model: String
    @Option(help: "Tensor storage of the result.") var storage: StorageChoice = .f16
    @Option(help: "Output model file (written atomically; may not be the input).") var out: String

    func validate() throws {
        guard model != out else { throw ValidationError("--out must differ from the input model.") }
    }

    func run() throws {
        let dtype = storage.dtype
        let source = try ModelFile(path: model)
        var writer = ModelWriter(metadata: source.metadata)
        // A balanced int8 layer's channel scales m stay float32: its int8 weights were multiplied
        // by those very values, and the kernel divides its input by them (m in float16 would no
        // longer cancel).
        let graph = try ModelDescription(json: source.metadata).graph
        let channelScales = Set(graph.nodes.compactMap { $0.op.inputQuantization?.channelScales })
        // An int8 depthwise convolution's weights (float, quantized to 16 bits at load) stay as the
        // quantizer wrote them too: float16 would round them before that quantization does.
        let int8Weights = Set(graph.nodes.compactMap { $0.op.inputQuantization != nil ? $0.op.weight : nil })
        for info in source.tensors {
            // int8 tensors stay as they are: an int8 layer's weights must be int8, and widening a
            // float layer's int8 storage would only make the file larger.
            if info.dtype == .int8 || channelScales.contains(info.name) || int8Weights.contains(info.name) {
                try writer.add(copying: info, of: source)
            } else {
                try writer.add(info.name, shape: info.shape, values: try source.floats(info.name).array, storage: dtype)
            }
        }
        let bytes = writer.serialize()
        _ = try Model(bytes: bytes) // the result must load, before anything is written
        try Files.writeAtomically(out, bytes)
        print("wrote \(out) (\(storage))")
    }
}
