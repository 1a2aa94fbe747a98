import Foundation
import PostgresClient

/// An archived conversation as `archived_conversations` records it, and the reading of its
/// file, verified, for the history API.
///
/// The file is read as `historian export` and `restore` read it (`ArchiveReader`): a gzip
/// stream, line by line, never whole in memory, its SHA-256 taken as it goes. What a read
/// collected is handed out only once the whole file was read and matched the SHA-256 and the
/// message count recorded when it was archived. Nothing of it touches `messages` or
/// `message_contexts`.
struct ArchivedConversation {
    var id: CanonicalUUID
    var path: String
    var sha256: String
    var messageCount: Int
    /// Whether the row lacks the columns a listing reads (archived before schema 6).
    var needsListingColumns: Bool

    /// The conversation's row in `archived_conversations`, or `nil` when it is not archived.
    static func find(_ id: CanonicalUUID, in session: PostgresSession) throws -> ArchivedConversation? {
        let rows = try session.query(
            """
            SELECT path, sha256, message_count::text, created_at IS NULL
            FROM archived_conversations WHERE id = $1::uuid
            """,
            [id.text]
        )
        guard let row = rows.rows.first, let path = row[0], let sha256 = row[1], let count = row[2].flatMap({ Int($0) })
        else { return nil }
        return ArchivedConversation(
            id: id,
            path: path,
            sha256: sha256,
            messageCount: count,
            needsListingColumns: row[3] == "t"
        )
    }

    /// Reads the file: each message line, in order, to `message` with its position (0 for the
    /// first message), then checks the whole file against what was recorded.
    /// - Returns: the conversation's line, or `nil` when there is no file under the recorded
    ///   path (a restore removes it once the rows are back: look again).
    /// - Throws: `HistorianError` (`archive_unreadable`) naming the file and what is wrong with
    ///   it, never its content; or what `message` throws.
    func read(message: (String, Int) throws -> Void) throws -> String? {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else {
            if errno == ENOENT { return nil }
            throw HistorianError(.archiveUnreadable, "\(Durable.failure(path, "cannot open"))")
        }
        defer { close(descriptor) }
        let path = path
        var conversation: String?
        var position = 0
        let read: (sha256: String, contentSHA256: String, lines: Int)
        do {
            read = try ArchiveReader.read(descriptor: descriptor, path: path) { line in
                guard conversation != nil else {
                    guard line.hasPrefix(#"{"type":"conversation","#) else {
                        throw ArchiveFileError(path: path, problem: "the first line is not the conversation")
                    }
                    conversation = line
                    return
                }
                guard line.hasPrefix(#"{"type":"message","#) else {
                    throw ArchiveFileError(path: path, problem: "line \(position + 2) is not a message")
                }
                try message(line, position)
                position += 1
            }
        } catch let error as ArchiveFileError {
            throw HistorianError(.archiveUnreadable, error.description)
        }
        guard read.sha256 == sha256 else {
            throw HistorianError(
                .archiveUnreadable,
                "archive \(path): its SHA-256 is not the one recorded when it was archived"
            )
        }
        guard let conversation, read.lines == messageCount + 1 else {
            throw HistorianError(
                .archiveUnreadable,
                "archive \(path): it holds \(max(read.lines - 1, 0)) messages; \(messageCount) were archived"
            )
        }
        return conversation
    }

    /// Records what a listing needs (title, created_at, updated_at) from the conversation's
    /// line, for a row archived before schema 6 had those columns. Best effort: a listing
    /// falls back to `archived_at` without them.
    func recordListingColumns(from conversationLine: String, in session: PostgresSession) {
        guard needsListingColumns else { return }
        _ = try? session.query(
            """
            UPDATE archived_conversations
            SET title = $2::json ->> 'title', created_at = ($2::json ->> 'created_at')::timestamptz,
                updated_at = ($2::json ->> 'updated_at')::timestamptz
            WHERE id = $1::uuid AND created_at IS NULL
            """,
            [id.text, conversationLine]
        )
    }
}
