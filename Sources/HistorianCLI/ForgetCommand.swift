import ArgumentParser
import Foundation
import Historian

struct Forget: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Erase a user's or a conversation's history everywhere: rows, archive files, Redis keys, dead letters.",
        discussion: """
            Crash-safe and idempotent: an interrupted erasure is finished by running the same command again, \
            and running it after it finished removes whatever of the subject appeared since. Each run leaves a row \
            in the erasures table with its counts and the subject's SHA-256, never the id itself. Archived \
            conversations are erased without being restored. A user's sessions go with them; a conversation's \
            erasure leaves the user's sessions. Messages still waiting in the ingest stream are stored when \
            consumed, as new data. See docs/erasure.md.
            """
    )

    @OptionGroup var options: ConfigurationOptions

    @Option(help: "Erase everything of this user (the user_id the frontends write).")
    var user: String?

    @Option(help: "Erase this conversation (a UUID).")
    var conversation: String?

    @Flag(help: "Count what would be removed now; remove nothing, record nothing.")
    var dryRun = false

    @Flag(help: "Print the report as one JSON object; progress goes to standard error.")
    var json = false

    func validate() throws {
        _ = try subject()
    }

    /// The subject the flags name, or a usage error.
    func subject() throws -> ErasureSubject {
        switch (user, conversation) {
        case (let user?, nil):
            guard let subject = ErasureSubject(user: user) else {
                throw ValidationError("--user: a user id has 1 to 255 bytes")
            }
            return subject
        case (nil, let conversation?):
            guard let id = CanonicalUUID(conversation) else {
                throw ValidationError("--conversation: '\(conversation)' is not a UUID")
            }
            return ErasureSubject(conversation: id)
        case (nil, nil):
            throw ValidationError("say what to erase: --user U or --conversation ID")
        case (_?, _?):
            throw ValidationError("give --user or --conversation, not both")
        }
    }

    func run() async throws {
        let (configuration, logger) = try await options.load()
        let subject = try subject()
        let json = json
        let report = try await Erasure(configuration: configuration, logger: logger).run(subject, dryRun: dryRun) {
            line in
            if json {
                FileHandle.standardError.write(Data((line + "\n").utf8))
            } else {
                print(line)
            }
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        } else if report.dryRun {
            print("dry run: erasing \(subject) would remove \(report.removed.summary); nothing removed")
        } else {
            print(
                "erased \(subject): \(report.removed.summary) (erasures row \(report.erasureID.map(String.init) ?? "-")"
                    + (report.resumed ? ", resumed" : "") + ")"
            )
        }
    }
}
