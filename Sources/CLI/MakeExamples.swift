import ArgumentParser
import CoverGenre
import Graph
import ImageIO
import ModelFormat
import SystemIO

/// Cover-like images the project draws itself (it ships no third-party artwork): a JPEG, a PNG
/// and a WebP, so every decoder is exercised by the README's first command and by CI.
struct MakeExamples: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "make-examples", abstract: "Draw three example covers (JPEG, PNG, WebP) into a folder.")

    @Argument(help: "Output folder.")
    var folder: String

    @Option(help: "Side length in pixels.")
    var size = 500

    func run() throws {
        try Files.makeDirectories(folder)
        let styles: [(name: String, draw: (Int, Int, Int) -> (UInt8, UInt8, UInt8))] = [
            ("neon-grid", { x, y, s in // dark background, glowing grid: club flyer style
                let line = x % (s / 10) < 3 || y % (s / 10) < 3
                return line ? (UInt8(40 + 200 * x / s), 30, UInt8(255 - 120 * y / s)) : (12, 8, UInt8(20 + 40 * y / s))
            }),
            ("sunset-fields", { x, y, s in // warm sky over a field horizon: pastoral style
                if y > s * 2 / 3 { return (UInt8(90 + (x * 7 % 40)), UInt8(120 + (y % 30)), 40) }
                let t = Double(y) / Double(s * 2 / 3)
                return (UInt8(250 - 40 * t), UInt8(190 - 120 * t), UInt8(90 + 60 * t))
            }),
            ("bold-type", { x, y, s in // black bars on a bright field: text-heavy, high contrast
                let bar = (y / (s / 8)) % 2 == 1 && x > s / 10 && x < s - s / 10 - (y * 13 % (s / 3))
                return bar ? (15, 15, 15) : (245, 220, 30)
            }),
        ]
        for (i, style) in styles.enumerated() {
            var rgb = [UInt8](repeating: 0, count: size * size * 3)
            for y in 0..<size {
                for x in 0..<size {
                    let (r, g, b) = style.draw(x, y, size)
                    rgb[(y * size + x) * 3] = r
                    rgb[(y * size + x) * 3 + 1] = g
                    rgb[(y * size + x) * 3 + 2] = b
                }
            }
            let bytes: [UInt8], ext: String
            switch i {
            case 0: (bytes, ext) = (try ImageEncoder.jpeg(rgb, width: size, height: size, quality: 90), "jpg")
            case 1: (bytes, ext) = (try ImageEncoder.png(rgb, width: size, height: size), "png")
            default: (bytes, ext) = (try rgb.withUnsafeBufferPointer { try ImageEncoder.webp($0.baseAddress!, width: size, height: size, quality: 85) }, "webp")
            }
            let path = Files.join(folder, "\(style.name).\(ext)")
            try Files.writeAtomically(path, bytes)
            print(path)
        }
    }
}
