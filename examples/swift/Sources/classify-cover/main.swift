// Classifies covers with CoverGenre's Swift API: the README's Swift example, built and run in CI.
import CoverGenre

#if canImport(Glibc)
import Glibc
#endif

let arguments = Array(CommandLine.arguments.dropFirst())
guard arguments.count >= 2 else {
    print("usage: classify-cover MODEL.cgm COVER...")
    exit(2)
}

var options = ModelOptions()
options.threads = 2               // the caller's thread and one worker the model owns
options.maxImagePixels = 1 << 26  // refuse larger images before decoding them

do {
    let model = try Model(path: arguments[0], options: options)
    print("\(model.name): \(model.labels.joined(separator: ", "))")
    var failed = false
    for cover in arguments.dropFirst() {
        do {
            let top = try model.classify(.path(cover), top: 3)
            print(cover)
            for p in top { print("  \(p.label)  \(p.probability)") }
        } catch let error as CoverGenreError {
            print("\(cover): \(error.message) (\(error.code))")
            failed = true
        }
    }
    // Many covers at once: one thread per image, every result in its own slot.
    let batch = model.probabilities(batch: arguments.dropFirst().map { .path($0) })
    print("batch: \(batch.filter { (try? $0.get()) != nil }.count) of \(batch.count) covers classified")
    exit(failed ? 1 : 0)
} catch let error as CoverGenreError {
    print("cannot load \(arguments[0]): \(error.message)")
    exit(1)
}
