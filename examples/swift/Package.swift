// swift-tools-version:5.10
// A separate package that depends on CoverGenre by path, as a Swift user's project would (by URL
// and version once released): `import CoverGenre` and nothing else.
//   swift run --package-path examples/swift classify-cover MODEL.cgm COVER...
import Foundation
import PackageDescription

// A path dependency's identity is its folder's name, whatever the checkout is called.
let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../..").standardized
let coverGenre = root.lastPathComponent.lowercased()

let package = Package(
    name: "CoverGenreExample",
    dependencies: [.package(path: root.path)],
    targets: [
        .executableTarget(name: "classify-cover", dependencies: [.product(name: "CoverGenre", package: coverGenre)]),
    ]
)
