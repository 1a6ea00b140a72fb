import Architectures
import Graph
import ModelFormat
import SystemIO

#if canImport(Glibc)
import Glibc
#endif

/// Small models with random weights that tests make for themselves.
public enum SmallModels {
    public static let labels = ["Country", "Electronic", "HipHop", "Pop", "Rock"]

    /// An EfficientNet-Lite-shaped model (48x48 input, 32-float embedding) as .cgm bytes.
    public static func lite(flipAverage: Bool = false, storage: DType = .float32, labels: [String] = labels) throws -> [UInt8] {
        let blocks = [
            Networks.MBConvBlock(inChannels: 8, outChannels: 8, expandRatio: 1, kernel: 3, stride: 1),
            Networks.MBConvBlock(inChannels: 8, outChannels: 16, expandRatio: 4, kernel: 5, stride: 2),
        ]
        let arch = Networks.efficientNetLite(name: "lite-test", blocks: blocks, classes: labels.count, inputSize: 48,
                                             stemChannels: 8, headChannels: 32)
        let (graph, tensors) = try arch.graph.foldingBatchNorms(arch.initialTensors(seed: 3))
        var preprocessing = arch.preprocessing
        preprocessing.resize = .centerCrop(shorterSide: 56)
        preprocessing.flipAverage = flipAverage
        let description = ModelDescription(name: "test", architecture: arch.name, labels: labels, graph: graph,
                                           preprocessing: preprocessing)
        return try description.serialized(tensors: tensors, storage: storage).serialize()
    }

    /// The same model written to a new temporary folder; its path.
    public static func litePath(flipAverage: Bool = false, storage: DType = .float32, labels: [String] = labels) throws -> String {
        let path = temporaryPath("model.cgm")
        try Files.writeAtomically(path, try lite(flipAverage: flipAverage, storage: storage, labels: labels))
        return path
    }
}

/// `name` inside a new temporary folder.
public func temporaryPath(_ name: String) -> String {
    var template = Array("/tmp/covergenre-test-XXXXXX".utf8CString)
    let dir = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
    return "\(dir)/\(name)"
}
