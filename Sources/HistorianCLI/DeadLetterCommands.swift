import ArgumentParser
import Foundation
import Historian

struct Dlq: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dlq",
        abstract: "Inspect dead letters; put chosen ones back on their stream.",
        subcommands: [List.self, Replay.self]
    )

    /// A `--reason` value, or a validation error that lists the contract's reasons.
    static func reason(_ text: String) throws -> DeadLetterReason {
        guard let reason = DeadLetterReason(rawValue: text) else {
            let known = DeadLetterReason.allCases.map(\.rawValue).joined(separator: ", ")
            throw ValidationError("unknown reason '\(text)'; the reasons are \(known)")
        }
        return reason
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the dead letters, oldest first: IDs, reason and detail, never the message content."
        )

        @OptionGroup var options: ConfigurationOptions

        @Option(help: "Only dead letters with this reason, e.g. conflict.")
        var reason: String?

        @Option(help: "At most this many dead letters.")
        var count = 100

        @Flag(help: "One JSON object per line; the summary goes to standard error.")
        var json = false

        func validate() throws {
            if let reason { _ = try Dlq.reason(reason) }
            guard count >= 1 else { throw ValidationError("--count must be at least 1") }
        }

        func run() async throws {
            let (configuration, logger) = try await options.load()
            let stream = configuration.stream
            let json = json
            let listing = try await DeadLetters(configuration: configuration, logger: logger).list(
                reason: try reason.map(Dlq.reason),
                count: count
            ) { letter in
                print(json ? letter.json : letter.text(stream: stream))
            }
            if json {
                FileHandle.standardError.write(Data((listing.summary + "\n").utf8))
            } else {
                print(listing.summary)
            }
        }
    }

    struct Replay: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Put dead letters back on their source stream and delete them from the dead-letter stream.",
            discussion: """
                Each dead letter's original fields (all but the dlq_ ones, in order, byte for byte) are appended \
                to its dlq_source_stream (else --stream) and the dead letter deleted, in one MULTI/EXEC. \
                Exits 1 if an ID is not in the dead-letter stream or a dead letter could not be replayed.
                """
        )

        @OptionGroup var options: ConfigurationOptions

        @Argument(help: "Entry IDs in the dead-letter stream, e.g. 1732300000000-0.")
        var ids: [String] = []

        @Option(help: "Replay the dead letters with this reason, oldest first.")
        var reason: String?

        @Flag(help: "Replay every dead letter, oldest first.")
        var all = false

        @Option(help: "With --reason or --all: at most this many.")
        var count: Int?

        @Flag(help: "Print what would be replayed; write nothing.")
        var dryRun = false

        func validate() throws {
            let chosen = (ids.isEmpty ? 0 : 1) + (reason == nil ? 0 : 1) + (all ? 1 : 0)
            guard chosen == 1 else {
                throw ValidationError(
                    chosen == 0
                        ? "say which dead letters: entry IDs, --reason CODE or --all"
                        : "give entry IDs, --reason or --all, not more than one of them"
                )
            }
            if let reason { _ = try Dlq.reason(reason) }
            for id in ids where StreamID(id) == nil {
                throw ValidationError("'\(id)' is not a stream entry ID (milliseconds-sequence)")
            }
            if let count {
                guard ids.isEmpty else { throw ValidationError("--count goes with --reason or --all") }
                guard count >= 1 else { throw ValidationError("--count must be at least 1") }
            }
        }

        func run() async throws {
            let (configuration, logger) = try await options.load()
            let selection: DeadLetters.Selection =
                if let reason {
                    .reason(try Dlq.reason(reason), limit: count)
                } else if all {
                    .all(limit: count)
                } else {
                    .ids(ids.compactMap { StreamID($0) })
                }
            let result = try await DeadLetters(configuration: configuration, logger: logger).replay(
                selection,
                dryRun: dryRun
            ) { print($0) }
            if !result.succeeded { throw ExitCode(1) }
        }
    }
}
