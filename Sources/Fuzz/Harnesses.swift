import AudioTags
import CoverGenre
import ImageIO
import ModelFormat
import Service
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
    case model, image, torch, safetensors, csv, json, metadata, multipart, audio

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
        case .multipart:
            // The first line is the Content-Type header (the boundary is the client's to choose),
            // the rest the body, as the server hands them to the parser.
            let all = Array(bytes)
            let split = all.firstIndex(of: 10) ?? all.count
            let contentType = String(decoding: all[..<split], as: UTF8.self)
            let body = split < all.count ? Array(all[(split + 1)...]) : []
            guard let boundary = try? Multipart.boundary(contentType: contentType) else { return }
            guard let parts = try? Multipart.parse(body, boundary: boundary, maxParts: 32) else { return }
            // Every part's bytes must lie inside the body (a slice of it).
            for part in parts { precondition(part.body.startIndex >= 0 && part.body.endIndex <= body.count) }
        case .audio:
            // As the library reads audio bytes it is handed (an HTTP body): sniffed, then TagLib
            // on an unlinked temporary file; a cover found is decoded as the library would.
            _ = AudioFile.format(head: Array(bytes.prefix(AudioFile.sniffBytes)))
            _ = try? AudioFile.withFile(holding: bytes) { path in
                _ = try? AudioFile.tags(path: path)
                if let cover = try? AudioFile.frontCover(path: path, maxBytes: 1 << 20) {
                    _ = try? ImageDecoder.decode(cover, limits: Harness.imageLimits, minimumSize: 64)
                }
            }
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
    /// `covergenre-fuzz TARGET FILE...`: runs each file through a harness once (regression inputs),
    /// then prints `replayed N TARGET inputs`. An unknown target, no file, or an unreadable file
    /// is an error (exit 2): a replay that ran nothing must not pass.
    static func main() {
        let arguments = Array(CommandLine.arguments.dropFirst())
        let usage = "usage: covergenre-fuzz \(Harness.allCases.map(\.rawValue).joined(separator: "|")) FILE..."
        guard let name = arguments.first, let harness = Harness(rawValue: name) else {
            fail(arguments.first.map { "unknown fuzz target \"\($0)\"; \(usage)" } ?? usage)
        }
        guard arguments.count > 1 else { fail("no inputs given for \(name); \(usage)") }
        for path in arguments.dropFirst() {
            let bytes: [UInt8]
            do { bytes = try Files.read(path) } catch { fail("\(path): \(error)") }
            bytes.withUnsafeBytes { harness.run($0) }
        }
        print("replayed \(arguments.count - 1) \(name) inputs")
    }

    static func fail(_ message: String) -> Never {
        fputs("covergenre-fuzz: \(message)\n", stderr)
        exit(2)
    }
}
#endif

#if canImport(Glibc)
import Glibc
#endif
