import CoverGenre
import ImageIO
import ModelFormat
import SystemIO
import DataPrep
import Importers
import ToolSupport
import Training

/// libFuzzer harnesses for everything that parses untrusted bytes. One binary serves them all;
/// $COVERGENRE_FUZZ_TARGET picks the harness (fuzz/run.sh sets it). Built with
/// `-sanitize=fuzzer,address` and `-D FUZZING` (fuzz/run.sh); in a normal build the same code runs
/// each file given on the command line through a harness once (the regression tests use this).
enum Harness: String, CaseIterable {
    case model, image, torch, safetensors, csv, json, metadata

    /// Limits small enough that a hostile input cannot make one execution slow or huge.
    static var imageLimits: ImageLimits {
        var l = ImageLimits()
        l.maxWidth = 4096
        l.maxHeight = 4096
        l.maxPixels = 1 << 22
        return l
    }

    func run(_ bytes: UnsafeRawBufferPointer) {
        switch self {
        case .model:
            var options = ModelOptions()
            options.threads = 1
            // Without the checksum every mutation would stop at it; the structural checks are the target.
            options.fileLimits.verifyChecksum = false
            options.graphLimits.maxInputSide = 64
            options.graphLimits.maxActivationElements = 1 << 18
            options.graphLimits.maxNodes = 200
            options.imageLimits = Harness.imageLimits
            guard let model = try? Model(bytes: bytes, options: options) else { return }
            // A model that loads must also run: probabilities of a small image.
            let image = RGBImage(width: 9, height: 7, rgb: [UInt8](repeating: 128, count: 9 * 7 * 3))
            _ = try? model.probabilities(.rgb(image))
        case .image:
            _ = try? ImageDecoder.decode(bytes, limits: Harness.imageLimits, minimumSize: 64)
        case .torch:
            if let checkpoint = try? TorchCheckpoint.read(bytes) { convert(checkpoint) }
        case .safetensors:
            if let checkpoint = try? SafeTensors.read(bytes) { convert(checkpoint) }
        case .csv:
            _ = try? CSV.parse(String(decoding: bytes, as: UTF8.self))
        case .json:
            _ = try? JSON.parse(bytes)
        case .metadata:
            _ = try? Prepare.parseMetadata(Array(bytes))
        }
    }

    func convert(_ checkpoint: StateDict) {
        var options = ImportOptions()
        options.inputSize = 32
        if EfficientNetLiteImporter.matches(checkpoint) { _ = try? EfficientNetLiteImporter.convert(checkpoint, options: options) }
        if VGGImporter.matches(checkpoint) { _ = try? VGGImporter.convert(checkpoint, options: options) }
    }
}

#if FUZZING
private let selected: Harness = {
    guard let name = getenv("COVERGENRE_FUZZ_TARGET").map({ String(cString: $0) }), let harness = Harness(rawValue: name) else {
        fatalError("set COVERGENRE_FUZZ_TARGET to one of \(Harness.allCases.map(\.rawValue))")
    }
    return harness
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    selected.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Int32

/// SwiftPM enters an executable through <Module>_main; hand control to libFuzzer's driver.
@_cdecl("Fuzz_main")
public func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    var count = argc
    var arguments = argv
    return LLVMFuzzerRunDriver(&count, &arguments, fuzzOneInput)
}
#else
@main
struct FuzzReplay {
    /// `covergenre-fuzz TARGET FILE...`: runs each file through a harness once (regression inputs).
    static func main() throws {
        let arguments = CommandLine.arguments.dropFirst()
        guard let name = arguments.first, let harness = Harness(rawValue: name) else {
            print("usage: covergenre-fuzz \(Harness.allCases.map(\.rawValue).joined(separator: "|")) FILE...")
            return
        }
        for path in arguments.dropFirst() {
            let bytes = try Files.read(path)
            bytes.withUnsafeBytes { harness.run($0) }
            print("ok \(path)")
        }
    }
}
#endif

#if canImport(Glibc)
import Glibc
#endif
