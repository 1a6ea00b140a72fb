// swift-tools-version:5.10
// CoverGenre: album-cover genre classification. Layout and module boundaries: see README.md.
import PackageDescription

let package = Package(
    name: "CoverGenre",
    products: [
        // The Swift API.
        .library(name: "CoverGenre", targets: ["CoverGenre"]),
        // The C API; scripts/build.sh installs it as libcovergenre.so (the name `covergenre`
        // belongs to the command-line tool's product).
        .library(name: "CoverGenreC", type: .dynamic, targets: ["CAPI"]),
        // The command-line tool. It does not link the HTTP server: `covergenre serve` runs
        // `covergenre-server` from the same folder, so classifying a cover never compiles SwiftNIO.
        .executable(name: "covergenre", targets: ["CLI"]),
        .executable(name: "covergenre-server", targets: ["ServerCommand"]),
        .executable(name: "covergenre-fuzz", targets: ["Fuzz"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        // System libraries from Debian's -dev packages.
        .systemLibrary(name: "CBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CJPEG", pkgConfig: "libjpeg", providers: [.apt(["libjpeg-dev"])]),
        .systemLibrary(name: "CPNG", pkgConfig: "libpng", providers: [.apt(["libpng-dev"])]),
        .systemLibrary(name: "CWebP", pkgConfig: "libwebp", providers: [.apt(["libwebp-dev"])]),
        .systemLibrary(name: "CTagLibSystem", pkgConfig: "taglib", providers: [.apt(["libtag1-dev"])]),

        // C: codec shims (setjmp error handling) and the vectorized inner loops.
        .target(name: "CCodecs", dependencies: ["CJPEG", "CPNG", "CWebP"]),
        .target(name: "CKernels"),
        // C surface over TagLib's C++ (covers and tags of audio files): no exception, abort or
        // print crosses it, and hostile tag structures are refused before TagLib walks them.
        .target(name: "CTagLib", dependencies: ["CTagLibSystem"], linkerSettings: [.linkedLibrary("tag"), .linkedLibrary("z")]),

        // Swift modules, bottom to top.
        .target(name: "SystemIO"),
        // What the tools (training, data preparation, the CLI) need and the library does not: CSV, progress bars.
        .target(name: "ToolSupport", dependencies: ["SystemIO"]),
        .target(name: "Kernels", dependencies: ["CKernels", "CBLAS"]),
        .target(name: "ModelFormat", dependencies: ["CKernels", "Kernels", "SystemIO"]),
        .target(name: "Graph", dependencies: ["Kernels", "ModelFormat", "SystemIO"]),
        .target(name: "Architectures", dependencies: ["Graph", "Kernels", "ModelFormat", "SystemIO"]),
        .target(name: "Importers", dependencies: ["Architectures", "CKernels", "Graph", "ModelFormat", "SystemIO"]),
        .target(name: "Training", dependencies: [
            "Architectures", "CKernels", "CoverGenre", "Graph", "ImageIO", "Inference", "Kernels", "ModelFormat", "SystemIO",
            "ToolSupport",
        ]),
        .target(name: "DataPrep", dependencies: ["Architectures", "ImageIO", "ModelFormat", "SystemIO", "ToolSupport"]),
        .target(name: "ImageIO", dependencies: ["CCodecs", "CKernels", "SystemIO"]),
        // Audio files: container sniffing, embedded covers, tags, genre writing (through CTagLib).
        .target(name: "AudioTags", dependencies: ["CTagLib", "SystemIO"]),
        // Music libraries: album folders, their cover sources and tagged genres.
        .target(name: "MusicLibrary", dependencies: ["AudioTags", "SystemIO"]),
        .target(name: "Inference", dependencies: ["Graph", "Kernels", "ModelFormat", "SystemIO"]),
        // The public C header, as a module: its version macros are the project's one version number.
        .systemLibrary(name: "CCoverGenreAPI"),
        .target(name: "CoverGenre", dependencies: [
            "AudioTags", "CCoverGenreAPI", "Graph", "ImageIO", "Inference", "Kernels", "ModelFormat", "SystemIO",
        ]),
        .target(name: "CAPI", dependencies: [
            "CCoverGenreAPI", "CKernels", "CoverGenre", "Graph", "ImageIO", "ModelFormat", "MusicLibrary", "SystemIO",
        ]),
        // libFuzzer harnesses (fuzz/run.sh builds them with -sanitize=fuzzer,address -D FUZZING).
        .executableTarget(name: "Fuzz", dependencies: [
            "AudioTags", "CoverGenre", "DataPrep", "ImageIO", "Importers", "ModelFormat", "Service", "SystemIO", "ToolSupport", "Training",
        ]),
        // What the HTTP API does, without HTTP: loaded models, the index, request parsing
        // (multipart), typed answers and errors. Tested and fuzzed without building SwiftNIO.
        .target(name: "Service", dependencies: ["CoverGenre", "ModelFormat", "SystemIO"]),
        // The HTTP layer over it: Hummingbird routes, metrics, compute lanes, the web page.
        .target(name: "Server", dependencies: [
            "CoverGenre", "Kernels", "ModelFormat", "Service", "SystemIO",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "Prometheus", package: "swift-prometheus"),
        ]),
        // `covergenre-server` (also reached as `covergenre serve`).
        .executableTarget(name: "ServerCommand", dependencies: [
            "CoverGenre", "Server", "Service", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "CLI", dependencies: [
            "Architectures", "AudioTags", "CoverGenre", "DataPrep", "Graph", "ImageIO", "Importers", "Inference", "Kernels", "ModelFormat",
            "MusicLibrary", "SystemIO", "ToolSupport", "Training",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        // Tests mirror the modules; TestSupport holds naive reference implementations and fixtures.
        // Optimized even in debug builds: its naive loops are what the slowest kernel tests spend their
        // time in (Winograd and fused-expansion references: 15 s of the suite unoptimized), and every
        // kernel test runs once per instruction-set variant and again under ThreadSanitizer.
        .target(name: "TestSupport", dependencies: ["Architectures", "Graph", "Kernels", "ImageIO", "ModelFormat", "SystemIO"],
                path: "Tests/TestSupport", swiftSettings: [.unsafeFlags(["-O"])]),
        .testTarget(name: "KernelsTests", dependencies: ["Kernels", "CKernels", "TestSupport"]),
        .testTarget(name: "ImageIOTests", dependencies: ["ImageIO", "SystemIO", "TestSupport"]),
        .testTarget(name: "ModelFormatTests", dependencies: ["ModelFormat", "SystemIO", "TestSupport"]),
        .testTarget(name: "CoverGenreTests", dependencies: [
            "Architectures", "CoverGenre", "Graph", "ImageIO", "ModelFormat", "SystemIO", "TestSupport", "Training",
        ]),
        .testTarget(name: "ImportersTests", dependencies: ["Importers", "SystemIO"]),
        .testTarget(name: "TrainingTests", dependencies: [
            "Architectures", "Graph", "ImageIO", "Kernels", "ModelFormat", "SystemIO", "TestSupport", "ToolSupport", "Training",
        ]),
        .testTarget(name: "InferenceTests", dependencies: ["Architectures", "CoverGenre", "Graph", "Inference", "Kernels", "ModelFormat", "SystemIO", "TestSupport"]),
        .testTarget(name: "GraphTests", dependencies: ["Graph", "Kernels", "ModelFormat", "SystemIO"]),
        .testTarget(name: "MusicLibraryTests", dependencies: ["MusicLibrary", "SystemIO"]),
        .testTarget(name: "ServiceTests", dependencies: ["CoverGenre", "ModelFormat", "Service", "SystemIO", "TestSupport"]),
    ],
    cxxLanguageStandard: .cxx17
)
