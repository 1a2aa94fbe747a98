import ArgumentParser
import Foundation
import Historian

extension ConversationExport.Format: ExpressibleByArgument {}

struct Export: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print one conversation, from PostgreSQL or from its archive.",
        discussion: """
            Standard output holds only the conversation; where it was read from goes to standard error. \
            An archive file is checked against the SHA-256 recorded for it before anything is printed. \
            Exits 1 for an unknown ID or an archive file that does not match.
            """
    )

    @OptionGroup var options: ConfigurationOptions

    @Argument(help: "ID of the conversation.")
    var id: String

    @Option(help: "json: one document; jsonl: the archive's lines; csv: one row per message.")
    var format: ConversationExport.Format = .json

    func validate() throws {
        guard CanonicalUUID(id) != nil else { throw ValidationError("'\(id)' is not a UUID") }
    }

    func run() async throws {
        let (configuration, logger) = try await options.load()
        guard let conversation = CanonicalUUID(id) else { throw ValidationError("'\(id)' is not a UUID") }
        let standardOutput = FileHandle.standardOutput
        let outcome: ConversationExport.Outcome
        do {
            outcome = try await ConversationExport(configuration: configuration, logger: logger).run(
                conversation,
                format: format,
                source: { Self.report("\($0)") },
                output: { try standardOutput.write(contentsOf: $0) }
            )
        } catch {
            Self.report("\(conversation.text): not exported: \(error)")
            throw ExitCode(1)
        }
        if outcome == .notFound {
            Self.report("\(conversation.text): no such conversation, in PostgreSQL or archived")
            throw ExitCode(1)
        }
    }

    /// A line on standard error, which keeps standard output for the data.
    static func report(_ line: String) {
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }
}
