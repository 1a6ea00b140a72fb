import ArgumentParser
import AudioTags
import CoverGenre
import ModelFormat
import MusicLibrary
import SystemIO
import ToolSupport

#if canImport(Glibc)
import Glibc
#endif

/// `covergenre scan LIBRARY`: one row per album of a music library, with the genres its tags give,
/// where its cover came from, and what the model says. Read-only unless --write-genre.
struct Scan: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Classify the albums of a music library by their covers, beside the genres they are tagged with.",
        discussion: """
        An album is the tracks of one folder that share album and album-artist tags. Its cover is the folder's cover file \
        (cover, folder, front or albumart*, any case, .jpg/.jpeg/.png/.webp), else the front cover embedded in its first track \
        that has one (MP3, FLAC, MP4/M4A, Ogg Vorbis/Opus, WAV, AIFF). A tag agrees when the model's first genre is the genre \
        the tag means (Hip-Hop, Rap -> HipHop; Heavy Metal -> Metal, filed under Rock by a model without Metal; --genre-map \
        adds your own). An album that fails is reported on its row and does not stop the scan. Nothing is written unless \
        --write-genre is given: then each track of an album without a genre tag (every album with --force) gets the model's \
        first genre, when at least --min-confidence, written to a copy that replaces the file (audio bytes unchanged). \
        Exit status: 0 when the scan ran (albums without an answer are reported on their rows), 1 when a genre write failed, 2 on a usage error.
        """)

    @OptionGroup var modelArguments: ModelArguments

    @Argument(help: "The music library's folder.")
    var library: String

    @Option(help: "Genres per album.")
    var top = 3

    @Flag(help: "Only albums without a genre tag.")
    var missing = false

    @Flag(help: "Print JSON instead of text.")
    var json = false

    @Flag(help: "Print CSV instead of text.")
    var csv = false

    @Option(help: "CSV of tag,genre lines mapping your tags to genres before the built-in table (an empty genre leaves a tag out).")
    var genreMap: String?

    @Flag(help: "Write the model's first genre into the tracks of albums without a genre tag.")
    var writeGenre = false

    @Flag(help: "With --write-genre: also replace the genres of albums that have them.")
    var force = false

    @Option(help: "With --write-genre: write only answers at least this probable (0-1).")
    var minConfidence = 0.5

    func validate() throws {
        guard top >= 1 else { throw ValidationError("--top must be at least 1.") }
        guard !(json && csv) else { throw ValidationError("Choose --json or --csv, not both.") }
        guard (0...1).contains(minConfidence) else { throw ValidationError("--min-confidence is between 0 and 1.") }
        guard !force || writeGenre else { throw ValidationError("--force goes with --write-genre.") }
        guard Files.isDirectory(library) else { throw ValidationError("\(library) is not a folder.") }
    }

    /// One album's row.
    struct Row {
        let album: Album
        var tagLabel: String?
        var predictions: [Prediction] = []
        var error: String?
        var written: String?

        var agrees: Bool? {
            guard let tagLabel, let first = predictions.first else { return nil }
            return first.label == tagLabel
        }
    }

    func run() throws {
        let model = try modelArguments.load()
        let names = GenreNames(overrides: try genreMap.map(GenreMapFile.read) ?? [:])
        let terminal = isTerminal(2)
        var skipped = 0
        var albums = try MusicLibrary.albums(under: library, progress: { folders in
            if terminal, folders % 50 == 0 { fputs("\rreading tags: \(folders) folders\u{1B}[K", stderr) }
        }, unreadable: { folder, error in
            skipped += 1
            printError("covergenre: skipped a folder that cannot be read: \(error.message)")
        })
        if terminal { fputs("\r\u{1B}[K", stderr) }
        if missing { albums = albums.filter { $0.genres.isEmpty } }
        var rows = albums.map { album in
            Row(album: album, tagLabel: album.genres.lazy.compactMap { names.label($0, labels: model.labels) }.first)
        }
        // Covers in batches: every core on whole covers, a progress bar between batches.
        let progress = terminal && !rows.isEmpty ? ProgressBar(total: rows.count, label: "scan", unit: "albums") : nil
        let batch = 32
        for start in stride(from: 0, to: rows.count, by: batch) {
            let range = start..<min(start + batch, rows.count)
            let covered = range.filter { rows[$0].album.cover != nil }
            let results = model.probabilities(batch: covered.map { ImageInput.path(rows[$0].album.cover!.path) })
            for (i, result) in zip(covered, results) {
                switch result {
                case .success(let p): rows[i].predictions = model.predictions(p, top: top)
                case .failure(let error): rows[i].error = "\(error.code.name): \(error.message)"
                }
            }
            for i in range where rows[i].album.cover == nil {
                rows[i].error = "no_cover: no cover file in \(rows[i].album.folder) and no picture in its tracks"
            }
            progress?.update(range.upperBound)
        }
        progress?.finish()
        if writeGenre { write(&rows) }
        output(rows)
        let failed = rows.filter { $0.error != nil }.count
        let agreeing = rows.filter { $0.agrees == true }.count, compared = rows.filter { $0.agrees != nil }.count
        var summary = "\(rows.count) albums, \(failed) without an answer"
        if compared > 0 { summary += "; the model's first genre agrees with the tag on \(agreeing) of \(compared) (\(Format.percent(Double(agreeing) / Double(compared))))" }
        if writeGenre { summary += "; genre written to \(rows.filter { $0.written != nil }.count) albums" }
        if skipped > 0 { summary += "; \(skipped) folders could not be read" }
        printError(summary)
        // Albums without an answer are the library's state, not the scan's failure; a write that
        // was asked for and failed is.
        if rows.contains(where: { $0.error?.hasPrefix("write: ") == true }) { throw ExitCode(1) }
    }

    /// --write-genre: each track of an album that qualifies gets the first genre, via AudioFile's
    /// copy-and-rename. A track that cannot be written is reported; the others still are.
    func write(_ rows: inout [Row]) {
        for i in rows.indices {
            let row = rows[i]
            guard let first = row.predictions.first, row.error == nil, Double(first.probability) >= minConfidence,
                  force || row.album.genres.isEmpty else { continue }
            var failures: [String] = []
            for track in row.album.tracks {
                do { try AudioFile.writeGenres(path: track, [first.label]) } catch { failures.append("\(error)") }
            }
            if failures.isEmpty {
                rows[i].written = first.label
            } else {
                rows[i].error = "write: " + failures.joined(separator: "; ")
            }
        }
    }

    func output(_ rows: [Row]) {
        func predictionText(_ p: [Prediction]) -> String { p.map { "\($0.label):\(format(Double($0.probability), decimals: 4))" }.joined(separator: ";") }
        if json {
            print(JSON.array(rows.map { row in
                var o: [String: JSON] = [
                    "folder": .string(row.album.folder), "album_artist": row.album.albumArtist.map(JSON.string) ?? .null,
                    "album": row.album.title.map(JSON.string) ?? .null, "tracks": JSON(row.album.tracks.count),
                    "cover": row.album.cover.map { ["kind": .string($0.kind), "path": .string($0.path)] } ?? .null,
                    "genres": JSON(row.album.genres), "tag_label": row.tagLabel.map(JSON.string) ?? .null,
                    "predictions": .array(row.predictions.map { ["label": .string($0.label), "probability": JSON(Double(format(Double($0.probability), decimals: 4))!)] }),
                    "agrees": row.agrees.map(JSON.bool) ?? .null, "error": row.error.map(JSON.string) ?? .null,
                    "unreadable_tracks": JSON(row.album.problems),
                ]
                if writeGenre { o["written"] = row.written.map(JSON.string) ?? .null }
                return .object(o)
            }).pretty)
        } else if csv {
            var header = ["album_artist", "album", "folder", "cover", "cover_path", "genres", "tag_label", "predictions", "agrees", "error"]
            if writeGenre { header.append("written") }
            print(header.joined(separator: ","))
            for row in rows {
                var fields = [row.album.albumArtist ?? "", row.album.title ?? "", row.album.folder, row.album.cover?.kind ?? "",
                              row.album.cover?.path ?? "", row.album.genres.joined(separator: ";"), row.tagLabel ?? "",
                              predictionText(row.predictions), row.agrees.map { $0 ? "yes" : "no" } ?? "", row.error ?? ""]
                if writeGenre { fields.append(row.written ?? "") }
                print(fields.map(CSV.escape).joined(separator: ","))
            }
        } else {
            for row in rows {
                let cover = row.album.cover.map { $0.kind == "file" ? Files.baseName($0.path) : "embedded in \(Files.baseName($0.path))" } ?? "no cover"
                print("\(row.album.displayName)  [\(cover)]")
                if !row.album.genres.isEmpty {
                    print("  tagged:  \(row.album.genres.joined(separator: ", "))" + (row.tagLabel.map { " (\($0))" } ?? " (not a genre of this model)"))
                }
                if let error = row.error {
                    print("  error:   \(error)")
                } else {
                    let verdict = row.agrees.map { $0 ? "  agrees" : "  differs" } ?? ""
                    print("  model:   " + row.predictions.map { "\($0.label) \(format(Double($0.probability), decimals: 3))" }.joined(separator: ", ") + verdict)
                }
                for problem in row.album.problems { print("  tags unreadable: \(problem)") }
                if let written = row.written { print("  written: \(written)") }
            }
        }
    }
}

/// A user's `tag,genre` CSV (header optional).
enum GenreMapFile {
    static func read(_ path: String) throws -> [String: String] {
        let rows = try CSV.parse(String(decoding: try Files.read(path, maxBytes: 1 << 20), as: UTF8.self))
        var map: [String: String] = [:]
        for (i, row) in rows.enumerated() {
            if i == 0, row.first?.lowercased() == "tag" { continue }
            guard row.count == 2 else { throw CoverGenreError(.invalidArgument, "\(path) line \(i + 1): expected tag,genre") }
            map[row[0]] = row[1]
        }
        return map
    }
}
