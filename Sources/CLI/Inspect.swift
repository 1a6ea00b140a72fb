import ArgumentParser
import CoverGenre
import Graph
import ImageIO
import Kernels
import ModelFormat
import SystemIO

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Describe a model file: architecture, labels, input, parameters, size, provenance.")

    @Argument(help: "Model file (.cgm).")
    var path: String

    @Flag(help: "List every node of the graph with its output shape.")
    var nodes = false

    @Flag(help: "Print the model's metadata as JSON.")
    var json = false

    func run() throws {
        let model = try Model(path: path)
        let d = model.description
        if json {
            print(model.file.metadata.pretty)
            return
        }
        let parameters = model.file.tensors.reduce(0) { $0 + $1.elementCount }
        let dtypes = Set(model.file.tensors.map(\.dtype.name)).sorted().joined(separator: ", ")
        print("model         \(d.name.isEmpty ? "(unnamed)" : d.name)")
        print("architecture  \(d.architecture)")
        print("file          \(path), \(format(Double(model.file.fileSize) / 1_048_576, decimals: 2)) MiB, format v\(model.file.version), checksum \(String(model.file.checksum, radix: 16))")
        print("parameters    \(parameters) in \(model.file.tensors.count) tensors (\(dtypes))")
        print("compute       \(format(Double(model.graph.macs) * 2 / 1e9, decimals: 3)) GFLOP per image")
        print("input         \(model.inputWidth)x\(model.inputHeight) RGB, \(describe(d.preprocessing))")
        print("embedding     \(model.embeddingSize > 0 ? "\(model.embeddingSize) floats (\(d.graph.embedding!))" : "none")")
        let shown = d.labels.prefix(12).joined(separator: ", ")
        print("labels        \(d.labels.count): \(shown)\(d.labels.count > 12 ? ", ..." : "")")
        print("graph         \(d.graph.nodes.count) nodes: \(summary(d.graph))")
        let int8 = d.graph.nodes.filter { $0.op.inputQuantization != nil }.count
        if int8 > 0 {
            // The kernel follows the CPU (and COVERGENRE_ISA); the answers do not.
            print("int8          \(int8) layers, run here by the \(QuantizedMatrix.kernel) kernel")
        }
        if case .object(let provenance) = d.provenance, !provenance.isEmpty {
            print("provenance")
            for key in provenance.keys.sorted() { print("  \(key): \(provenance[key]!.serialized)") }
        }
        if nodes {
            let resolved = try d.graph.resolve(tensorShape: { model.file.info($0)?.shape })
            let width = resolved.map(\.node.name.count).max() ?? 0
            for r in resolved {
                print("  \(pad(r.node.name, width))  \(pad(r.node.op.kind, 16))  \(pad(r.outputShape.description, 14))  <- \(r.node.inputs.joined(separator: ", "))")
            }
        }
    }

    func describe(_ p: Preprocessing) -> String {
        let resize: String
        switch p.resize {
        case .stretch: resize = "stretched"
        case .centerCrop(let side): resize = "shorter side \(side), centre crop"
        }
        return "\(resize), mean \(p.mean), std \(p.std)\(p.flipAverage ? ", averaged with its mirror image" : "")"
    }

    func summary(_ graph: GraphSpec) -> String {
        var counts: [String: Int] = [:]
        for node in graph.nodes { counts[node.op.kind, default: 0] += 1 }
        return counts.keys.sorted().map { "\(counts[$0]!) \($0)" }.joined(separator: ", ")
    }
}
