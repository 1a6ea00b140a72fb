import ArgumentParser
import CoverGenre
import Graph
import ImageIO
import ModelFormat
import SystemIO
import DataPrep
import ToolSupport

struct PrepareCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prepare",
        abstract: "Build a cover download manifest (id,genre,url,split) from MuMu labels and Amazon metadata.",
        discussion: """
        Joins the single-label CSV (amazon_id, album_mbid, ..., genres) with the metadata (one JSON object per line, \
        or a JSON array; fields amazon_id and imUrl) on amazon_id, keeps one row per album, the --top genres by album \
        count, and draws a stratified train/val/test split with --seed. Records without imUrl are reported and skipped.
        """)

    @Option(help: "MuMu single-label CSV.") var labels: String
    @Option(help: "Amazon metadata (JSON lines or a JSON array).") var metadata: String
    @Option(help: "Keep the N largest genres.") var top = 12
    @Option(help: "Drop kept genres with fewer albums than this.") var minPerGenre = 1
    @Option(help: "Seed of the split.") var seed: UInt64 = 1
    @Option(help: "Validation fraction.") var validation = 0.15
    @Option(help: "Test fraction.") var test = 0.15
    @Option(help: "Manifest to write.") var out: String

    func validate() throws {
        guard top >= 1, minPerGenre >= 1 else { throw ValidationError("--top and --min-per-genre must be at least 1.") }
        guard validation >= 0, test >= 0, validation + test < 1 else { throw ValidationError("--validation + --test must be below 1.") }
    }

    func run() throws {
        var options = PrepareOptions()
        options.top = top
        options.minPerGenre = minPerGenre
        options.seed = seed
        options.validation = validation
        options.test = test
        let m = try Prepare.run(labels: labels, metadata: metadata, options: options)
        print("labels: \(m.labelAlbums) albums after dropping \(m.duplicateRows) duplicate rows (amazon_id + album_mbid), \(m.labelCounts.count) genres")
        for g in m.labelCounts { print("  \(pad(g.genre, 22)) \(padLeft(String(g.albums), 6))") }
        if !m.malformedRecords.isEmpty { printError("metadata: \(m.malformedRecords.count) malformed records skipped (first: \(m.malformedRecords[0]))") }
        if !m.missingMetadata.isEmpty { printError("metadata: \(m.missingMetadata.count) albums have no metadata record (first: \(m.missingMetadata[0]))") }
        if !m.missingURL.isEmpty { printError("metadata: \(m.missingURL.count) albums have no imUrl, skipped (first: \(m.missingURL[0]))") }
        print("manifest: \(m.rows.count) albums in \(m.genres.count) genres (top \(top), at least \(minPerGenre) each)")
        for g in m.genres {
            let share = Format.percent(Double(g.albums) / Double(max(m.rows.count, 1)))
            print("  \(pad(g.genre, 22)) \(padLeft(String(g.albums), 6))  \(padLeft(share, 6))")
        }
        print("majority-class share: \(Format.percent(m.majorityShare)) (the accuracy of always answering \(m.genres.first?.genre ?? "-"))")
        try CSV.write(out, m.csv)
        print("wrote \(out)")
    }
}
