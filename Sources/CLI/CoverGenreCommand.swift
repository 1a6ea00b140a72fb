import ArgumentParser
import CoverGenre

/// The `covergenre` command: one subcommand per file, each documented by its `--help`.
@main
struct CoverGenreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "covergenre",
        abstract: "Predict an album's genre from its cover art.",
        version: CoverGenreVersion.string,
        subcommands: [Classify.self, Scan.self, Evaluate.self, Calibrate.self, Train.self, Import.self, PrepareCommand.self, DownloadCommand.self,
                      Inspect.self, Create.self, Convert.self, Quantize.self, Similar.self, Serve.self, MakeExamples.self, Benchmark.self]
    )
}
