import Foundation
import PostgresClient

/// Moves conversations that went quiet into archive files, and brings them back (contract §4).
///
/// One conversation at a time, each its own file:
/// 1. Its rows are read in one `REPEATABLE READ` snapshot, as JSON lines that PostgreSQL prints
///    (`row_to_json`, every column), and written to the file, which is synced and renamed.
/// 2. The file is read back and verified: the same bytes on disk, the same lines inside.
/// 3. One transaction locks the conversation, checks that nothing was stored in it since the
///    snapshot, records it in `archived_conversations` and deletes its rows.
///
/// A crash anywhere leaves the conversation in PostgreSQL, in a verified file, or both (a file
/// whose rows were not deleted is written again by the next pass). All of it is blocking work on
/// one PostgreSQL session; callers run it on a thread that may block.
public struct Archiver: Sendable {
    public var layout: ArchiveLayout
    public var now: @Sendable () -> Date

    public init(layout: ArchiveLayout, now: @Sendable @escaping () -> Date = { Date() }) {
        self.layout = layout
        self.now = now
    }

    /// A conversation due for archiving.
    public struct Candidate: Sendable, Hashable {
        public var id: CanonicalUUID
        public var updatedAt: String
        public var messages: Int
    }

    /// What became of one conversation in a pass.
    public enum Outcome: Sendable, Hashable {
        case archived(path: String, messages: Int)
        /// It received messages (or was archived or deleted by someone else) since it was read.
        case skipped(reason: String)
    }

    /// Sets the session up for archiving: timestamps printed in UTC.
    public static func prepare(_ session: PostgresSession) throws {
        try session.execute("SET TIME ZONE 'UTC'")
    }

    /// Up to `limit` conversations idle for longer than `olderThan`, least recently updated
    /// first, after `after` in that order (for paging through them).
    public static func candidates(
        olderThan: Duration,
        limit: Int,
        after: Candidate? = nil,
        in session: PostgresSession
    ) throws -> [Candidate] {
        let rows = try session.query(
            """
            SELECT c.id::text, c.updated_at::text,
                (SELECT count(*) FROM messages AS m WHERE m.conversation_id = c.id)::text
            FROM conversations AS c
            WHERE c.updated_at < now() - make_interval(secs => $1::double precision)
                AND ($3::timestamptz IS NULL OR (c.updated_at, c.id) > ($3::timestamptz, $4::uuid))
            ORDER BY c.updated_at, c.id
            LIMIT $2
            """,
            [String(Double(olderThan.components.seconds)), String(limit), after?.updatedAt, after?.id.text]
        )
        return rows.rows.compactMap { row in
            guard let id = row[0].flatMap(CanonicalUUID.init), let updatedAt = row[1],
                let messages = row[2].flatMap({ Int($0) })
            else { return nil }
            return Candidate(id: id, updatedAt: updatedAt, messages: messages)
        }
    }

    /// The conversation's line: `{"type":"conversation", …every column}`.
    static let conversationLine = """
        SELECT '{"type":"conversation",' || substr(row_to_json(c)::text, 2), c.updated_at::text, c.cache_version::text, c.user_id
        FROM conversations AS c WHERE c.id = $1::uuid
        """

    /// Its messages' lines, in the conversation's order: `{"type":"message", …every column,
    /// "contexts":[…every column of each, by position]}`. The contexts are joined with a plain
    /// comma: `json_agg` puts a newline between rows, which would cut the line in two.
    static func messageLines(_ conversation: CanonicalUUID) -> String {
        """
        DECLARE historian_archive_messages NO SCROLL CURSOR FOR
        SELECT '{"type":"message",' || substr(r.line, 2, length(r.line) - 2) || ',"contexts":['
            || coalesce((
                SELECT string_agg(row_to_json(x)::text, ',' ORDER BY x.position) FROM message_contexts AS x WHERE x.message_id = m.id
            ), '')
            || ']}'
        FROM messages AS m CROSS JOIN LATERAL (SELECT row_to_json(m)::text AS line) AS r
        WHERE m.conversation_id = '\(conversation.text)'
        ORDER BY m.created_at, m.arrival
        """
    }

    /// A conversation's first line, and what the delete checks against later.
    struct ConversationHead {
        var line: String
        var updatedAt: String
        var version: String
        var owner: String
    }

    /// The conversation's line, or `nil` when it is not in `conversations`. Read it in the
    /// transaction that reads its messages, so that all its lines come from one snapshot.
    /// `historian export` reads the same lines as an archive holds through this and
    /// ``forEachMessageLine(of:in:_:)``.
    static func conversationHead(_ conversation: CanonicalUUID, in session: PostgresSession) throws -> ConversationHead? {
        let head = try session.query(conversationLine, [conversation.text])
        guard let row = head.rows.first, let line = row[0], let updatedAt = row[1], let version = row[2], let owner = row[3]
        else { return nil }
        return ConversationHead(line: line, updatedAt: updatedAt, version: version, owner: owner)
    }

    /// Calls `line` with each of the conversation's message lines, in order. They come through
    /// a cursor, 500 at a time, so a long conversation is never all in memory; the cursor lives
    /// until the caller's transaction ends.
    static func forEachMessageLine(of conversation: CanonicalUUID, in session: PostgresSession, _ line: (String) throws -> Void) throws {
        try session.execute(messageLines(conversation))
        while true {
            let rows = try session.execute("FETCH 500 FROM historian_archive_messages")
            for row in rows.rows {
                guard let text = row[0] else {
                    throw HistorianError(.unexpectedReply, "a message line of conversation \(conversation.text) came back NULL")
                }
                try line(text)
            }
            if rows.rows.count < 500 { break }
        }
    }

    /// Archives one conversation: file written, verified, rows deleted.
    /// - Parameter beforeDelete: runs after the file is verified, before the rows go (tests use
    ///   it to stop a pass there, as a crash would).
    public func archive(
        _ conversation: CanonicalUUID,
        in session: PostgresSession,
        beforeDelete: (WrittenArchive) throws -> Void = { _ in }
    ) throws -> Outcome {
        let archivedAt = now()
        let (directory, name) = layout.location(of: conversation, archivedAt: archivedAt)

        // 1. The rows, from one snapshot, into the file.
        let read = try session.transaction("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") { _ -> (ConversationHead, ArchiveWriter)? in
            guard let head = try Self.conversationHead(conversation, in: session) else { return nil }
            let writer = try ArchiveWriter(directory: directory, name: name)
            try writer.append(line: head.line)
            try Self.forEachMessageLine(of: conversation, in: session) { try writer.append(line: $0) }
            return (head, writer)
        }
        guard let (snapshot, writer) = read else { return .skipped(reason: "not in PostgreSQL") }
        let written = try writer.finish()

        // 2. Read back and verified before anything is deleted. A file that fails is not left
        // under its final name.
        do {
            try ArchiveReader.verify(written)
        } catch {
            Durable.remove(archive: written.path)
            throw error
        }
        CrashPoint.reached(.archiveVerified)
        try beforeDelete(written)

        // 3. Recorded and deleted, unless the conversation moved on meanwhile.
        let outcome = try session.transaction { end -> Outcome in
            let current = try session.query(
                "SELECT updated_at::text, cache_version::text FROM conversations WHERE id = $1::uuid FOR UPDATE",
                [conversation.text]
            )
            guard let row = current.rows.first, row[0] == snapshot.updatedAt, row[1] == snapshot.version else {
                end = .rollback
                return .skipped(
                    reason: current.rows.isEmpty ? "gone from PostgreSQL meanwhile" : "new messages since it was read"
                )
            }
            let messages = written.lines - 1
            _ = try session.query(
                """
                INSERT INTO archived_conversations
                    (id, user_id, archived_at, path, message_count, sha256, title, created_at, updated_at)
                VALUES ($1::uuid, $2, $3::timestamptz, $4, $5::integer, $6,
                    $7::json ->> 'title', ($7::json ->> 'created_at')::timestamptz, ($7::json ->> 'updated_at')::timestamptz)
                ON CONFLICT (id) DO UPDATE SET user_id = excluded.user_id, archived_at = excluded.archived_at,
                    path = excluded.path, message_count = excluded.message_count, sha256 = excluded.sha256,
                    title = excluded.title, created_at = excluded.created_at, updated_at = excluded.updated_at
                """,
                [
                    conversation.text, snapshot.owner,
                    Timestamp(microseconds: Int64((archivedAt.timeIntervalSince1970 * 1_000_000).rounded())).rfc3339,
                    written.path, String(messages),
                    written.sha256,
                    // The conversation's own line: what the history API lists it by (schema 6).
                    snapshot.line,
                ]
            )
            // The messages and their contexts go with it (ON DELETE CASCADE).
            _ = try session.query("DELETE FROM conversations WHERE id = $1::uuid", [conversation.text])
            return .archived(path: written.path, messages: messages)
        }
        switch outcome {
        case .archived: CrashPoint.reached(.archiveDeleted)
        case .skipped: Durable.remove(archive: written.path)
        }
        return outcome
    }

    /// What restoring one conversation did.
    public enum Restored: Sendable, Hashable {
        case restored(messages: Int, path: String)
        /// It is in PostgreSQL and not archived: nothing to do.
        case alreadyInPostgres
        case notArchived
    }

    /// Restores one conversation from its archive, in one transaction: the file must match the
    /// SHA-256 and message count recorded when it was archived. The restored conversation's
    /// `updated_at` is now, so that it stays for another `archive_after`. The files are removed
    /// once the transaction has committed.
    public static func restore(_ conversation: CanonicalUUID, in session: PostgresSession) throws -> Restored {
        let restored = try session.transaction { end -> Restored in
            let recorded = try session.query(
                "SELECT path, sha256, message_count::text FROM archived_conversations WHERE id = $1::uuid FOR UPDATE",
                [conversation.text]
            )
            guard let row = recorded.rows.first, let recordedPath = row[0], let sha256 = row[1],
                let count = row[2].flatMap({ Int($0) })
            else {
                let present = try session.query("SELECT 1 FROM conversations WHERE id = $1::uuid", [conversation.text])
                end = .rollback
                return present.rows.isEmpty ? .notArchived : .alreadyInPostgres
            }
            let path = recordedPath
            var chunk: [String] = []
            var chunkBytes = 0
            var conversationSeen = false
            var inserted = 0
            func insertChunk() throws {
                guard !chunk.isEmpty else { return }
                let array = "[" + chunk.joined(separator: ",") + "]"
                let result = try session.query(Self.insertMessages, [array])
                inserted += result.affectedRows
                _ = try session.query(Self.insertContexts, [array])
                chunk.removeAll(keepingCapacity: true)
                chunkBytes = 0
            }
            let read = try ArchiveReader.read(path) { line in
                if !conversationSeen {
                    guard line.hasPrefix("{\"type\":\"conversation\",") else {
                        throw ArchiveFileError(path: path, problem: "the first line is not the conversation")
                    }
                    let created = try session.query(Self.insertConversation, [line, conversation.text])
                    guard created.affectedRows == 1 else {
                        throw ArchiveFileError(
                            path: path,
                            problem: "it holds another conversation, or that conversation is in PostgreSQL"
                        )
                    }
                    conversationSeen = true
                    return
                }
                guard line.hasPrefix("{\"type\":\"message\",") else {
                    throw ArchiveFileError(path: path, problem: "a line after the first is not a message")
                }
                chunk.append(line)
                chunkBytes += line.utf8.count
                if chunk.count >= 1000 || chunkBytes >= 4 << 20 { try insertChunk() }
            }
            try insertChunk()
            guard read.sha256 == sha256 else {
                throw ArchiveFileError(path: path, problem: "its SHA-256 is not the one recorded when it was archived")
            }
            guard conversationSeen, inserted == count else {
                throw ArchiveFileError(path: path, problem: "it holds \(inserted) messages; \(count) were archived")
            }
            _ = try session.query(
                "UPDATE conversations SET updated_at = now() WHERE id = $1::uuid",
                [conversation.text]
            )
            _ = try session.query("DELETE FROM archived_conversations WHERE id = $1::uuid", [conversation.text])
            return .restored(messages: inserted, path: path)
        }
        if case .restored(_, let path) = restored { Durable.remove(archive: path) }
        return restored
    }

    /// The conversation line as a row, if it is the conversation `$2` and not in PostgreSQL.
    static let insertConversation = """
        INSERT INTO conversations
        SELECT r.* FROM json_populate_record(NULL::conversations, $1::json) AS r WHERE r.id = $2::uuid
        ON CONFLICT (id) DO NOTHING
        """

    /// Message lines (a JSON array of them) as rows, with their original arrival numbers, so
    /// that ties in `created_at` keep their order.
    static let insertMessages = """
        INSERT INTO messages OVERRIDING SYSTEM VALUE
        SELECT r.* FROM json_array_elements($1::json) AS l (line),
            json_populate_record(NULL::messages, l.line) AS r
        """

    static let insertContexts = """
        INSERT INTO message_contexts
        SELECT r.* FROM json_array_elements($1::json) AS l (line),
            json_array_elements(l.line -> 'contexts') AS x (context),
            json_populate_record(NULL::message_contexts, x.context) AS r
        """

    /// The owners of those of these conversations that are archived.
    public static func archivedOwners(
        of conversations: [CanonicalUUID],
        in session: PostgresSession
    ) throws -> [CanonicalUUID: String] {
        guard !conversations.isEmpty else { return [:] }
        let rows = try session.query(
            "SELECT id::text, user_id FROM archived_conversations WHERE id = ANY($1)",
            parameters: [.binary(PostgresBinary.uuidArray(Set(conversations).map(\.value)))]
        )
        var owners: [CanonicalUUID: String] = [:]
        for row in rows.rows {
            if let id = row[0].flatMap(CanonicalUUID.init), let owner = row[1] { owners[id] = owner }
        }
        return owners
    }
}
