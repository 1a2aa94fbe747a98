import ArgumentParser
import Foundation
import Historian

/// `historian import …`: conversation stores of other programs into PostgreSQL.
struct Import: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Import conversations from another store into PostgreSQL.",
        subcommands: [ImportSQLite.self]
    )
}

struct ImportSQLite: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sqlite",
        abstract: "Import a SQLite conversation store of the tutorial schema (docs/sqlite-import.md).",
        discussion: """
            Messages are stored in batches of --batch-size, as the daemon stores them; Redis is not touched. \
            Rows that cannot be imported are listed with their SQLite IDs and the reason, never their content. \
            Importing the same file again adds nothing. Exits 0 when every row is in, 1 when some rows were \
            reported (the others are in), 2 when the import could not go on (nothing after that point is in; \
            run it again to go on).
            """
    )

    @OptionGroup var options: ConfigurationOptions

    @Argument(help: "The SQLite file, read only.")
    var path: String

    @Flag(help: "Read and check everything, and count what would be imported; write nothing.")
    var dryRun = false

    func run() async throws {
        let (configuration, logger) = try await options.load()
        let output = ImportOutput(terminal: isatty(STDOUT_FILENO) == 1)
        let summary: ImportSummary
        do {
            summary = try await SQLiteImport(configuration: configuration, logger: logger).run(
                path: path,
                dryRun: dryRun,
                events: output.show
            )
        } catch {
            output.clearBar()
            FileHandle.standardError.write(Data("import stopped: \(error)\n".utf8))
            throw ExitCode(2)
        }
        output.clearBar()
        for line in summary.lines { print(line) }
        if summary.conversations.reported + summary.messages.reported > 0 { throw ExitCode(1) }
    }
}

/// Shows an import's events on standard output: a progress bar redrawn in place on a terminal,
/// plain progress lines otherwise, and each problem on a line of its own.
final class ImportOutput {
    let terminal: Bool
    private var lines = ProgressLines()
    private var bar: String?
    private var drawn = ContinuousClock.now - .seconds(1)

    init(terminal: Bool) {
        self.terminal = terminal
    }

    func show(_ event: SQLiteImport.Event) {
        switch event {
        case .problem(let problem):
            if terminal, bar != nil { write("") }
            print(problem)
            if terminal, let bar { write(bar) }
        case .progress(let progress):
            if terminal {
                // A few redraws a second are enough to see it move.
                guard ContinuousClock.now - drawn >= .milliseconds(100) || progress.fraction >= 1 else { return }
                drawn = .now
                bar = progress.bar()
                write(bar!)
            } else if let line = lines.line(for: progress) {
                print(line)
            }
        }
    }

    /// Removes the bar, so the next line starts on a clean line.
    func clearBar() {
        guard terminal, bar != nil else { return }
        write("")
        bar = nil
    }

    /// Redraws the line: written at once, past `print`'s buffer, which a terminal empties at
    /// each newline.
    private func write(_ text: String) {
        FileHandle.standardOutput.write(Data(("\r\u{1B}[2K" + text).utf8))
    }
}
