import ArgumentParser

/// The `covergenre` command: one subcommand per file, each documented by its `--help`.
struct CoverGenreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "covergenre",
        abstract: "Predict an album's genre from its cover art.",
        version: "0.1.0",
        subcommands: [Classify.self, Evaluate.self, Train.self, Inspect.self, Create.self, Import.self]
    )
}

CoverGenreCommand.main()
