import PostgresClient

/// The conversation rows of an import, written once all of their messages are stored.
///
/// The store creates a conversation from its first message, with its owner and title (the
/// explicit title, else the first user message's). What it does not know is written here:
/// the file's `metadata` (merged into the row's, with `source_id` when the SQLite ID is not a
/// UUID) and the file's `created_at` (when earlier than the first message). A conversation
/// none of whose messages were stored (it has none, or none passed) is created here, empty.
/// Every statement changes only what differs, so a second import writes nothing.
enum ImportedConversations {
    /// What PostgreSQL holds for a conversation of the file, once it is written (or, in a dry
    /// run, as it is).
    struct Found: Sendable, Hashable {
        /// This import created the row (an empty conversation).
        var inserted = false
        /// This import changed its metadata or `created_at`.
        var updated = false
        /// Its owner in `conversations`, if it is there.
        var owner: String?
        /// Its owner in `archived_conversations`, if it is archived and not in `conversations`.
        var archivedOwner: String?
    }

    /// What an import did (or would do) with a conversation row.
    enum Outcome: Sendable, Hashable {
        case imported
        case alreadyPresent
        case reported(Rejection)
    }

    /// The outcome of a conversation of which `messagesImported` messages were (or, in a dry
    /// run, would be) stored by this import.
    static func outcome(
        _ conversation: ImportedConversation,
        _ found: Found,
        messagesImported: Int,
        dryRun: Bool
    ) -> Outcome {
        if let owner = found.owner ?? found.archivedOwner {
            guard owner == conversation.owner else {
                return .reported(
                    Rejection(
                        .userMismatch,
                        "user_id is not the owner of conversation \(conversation.id) in PostgreSQL"
                            + (found.owner == nil ? " (archived)" : "")
                    )
                )
            }
            return found.inserted || found.updated || messagesImported > 0 ? .imported : .alreadyPresent
        }
        // Nowhere: in a dry run, one that would be created; after writing it, one that was erased
        // meanwhile (`historian forget`).
        guard dryRun else {
            return .reported(
                Rejection(.rejectedByDatabase, "conversation \(conversation.id) was erased while it was imported")
            )
        }
        return .imported
    }

    /// The parameters of the statements below, one array per column, in ID order.
    static func parameters(_ conversations: [ImportedConversation]) -> [PostgresParameter] {
        [
            .binary(PostgresBinary.uuidArray(conversations.map(\.id.value))),
            .binary(PostgresBinary.textArray(conversations.map(\.owner))),
            .binary(PostgresBinary.textArray(conversations.map(\.title))),
            .binary(PostgresBinary.timestamptzArray(conversations.map { $0.createdAt?.microseconds })),
            .binary(PostgresBinary.jsonbArray(conversations.map(\.metadata))),
            .binary(PostgresBinary.textArray(conversations.map(\.sourceID))),
        ]
    }

    /// The file's conversations as rows, with the metadata they add: the file's object, then
    /// `source_id` (which wins over a key of that name in the file's metadata).
    static let wanted = """
        SELECT t.id, t.owner, t.title, t.created_at,
                coalesce(t.metadata, '{}'::jsonb)
                    || CASE WHEN t.source_id IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('source_id', t.source_id) END
                    AS metadata
            FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::jsonb[], $6::text[])
                AS t (id, owner, title, created_at, metadata, source_id)
        """

    /// Creates the conversations that are missing and not archived (an archived one is there
    /// already, in its archive), in ID order as the store does, so that concurrent writers
    /// cannot deadlock. A title given is explicit; without one, the daemon derives it from the
    /// conversation's first user message when one arrives.
    static let insertMissing = """
        INSERT INTO conversations (id, user_id, title, created_at, updated_at, metadata)
        SELECT w.id, w.owner, w.title, coalesce(w.created_at, now()), now(), w.metadata
        FROM (\(wanted)) AS w
        WHERE NOT EXISTS (SELECT 1 FROM archived_conversations AS a WHERE a.id = w.id)
        ORDER BY w.id
        ON CONFLICT (id) DO NOTHING
        RETURNING id::text
        """

    /// Locks the conversations in ID order, as the store does, and reads their owners.
    static let lockOwners = """
        SELECT c.id::text, c.user_id FROM conversations AS c WHERE c.id = ANY ($1) ORDER BY c.id FOR NO KEY UPDATE
        """

    /// Adds the file's metadata and `created_at` to the conversations of the same owner, where
    /// they change anything.
    static let update = """
        UPDATE conversations AS c
        SET metadata = c.metadata || w.metadata, created_at = least(c.created_at, coalesce(w.created_at, c.created_at))
        FROM (\(wanted)) AS w
        WHERE c.id = w.id AND c.id = ANY ($1) AND c.user_id = w.owner
            AND ((c.metadata || w.metadata) <> c.metadata OR c.created_at > w.created_at)
        RETURNING c.id::text
        """

    /// Writes the conversations, in one transaction, and says what PostgreSQL then holds.
    static func write(
        _ conversations: [ImportedConversation],
        in session: PostgresSession
    ) throws -> [CanonicalUUID: Found] {
        let sorted = conversations.sorted { $0.id < $1.id }
        let parameters = parameters(sorted)
        var found: [CanonicalUUID: Found] = [:]
        try session.transaction { _ in
            for row in try session.query(insertMissing, parameters: parameters).rows {
                if let id = row[0].flatMap(CanonicalUUID.init) { found[id, default: Found()].inserted = true }
            }
            for row in try session.query(lockOwners, parameters: [parameters[0]]).rows {
                if let id = row[0].flatMap(CanonicalUUID.init) { found[id, default: Found()].owner = row[1] }
            }
            for row in try session.query(update, parameters: parameters).rows {
                if let id = row[0].flatMap(CanonicalUUID.init) { found[id, default: Found()].updated = true }
            }
        }
        try addArchived(sorted, to: &found, in: session)
        return found
    }

    /// What PostgreSQL holds for these conversations, read only (a dry run).
    static func read(
        _ conversations: [ImportedConversation],
        in session: PostgresSession
    ) throws -> [CanonicalUUID: Found] {
        var found: [CanonicalUUID: Found] = [:]
        for (id, owner) in try StoreJudgement.owners(of: conversations.map(\.id), in: session) {
            found[id, default: Found()].owner = owner
        }
        try addArchived(conversations, to: &found, in: session)
        return found
    }

    private static func addArchived(
        _ conversations: [ImportedConversation],
        to found: inout [CanonicalUUID: Found],
        in session: PostgresSession
    ) throws {
        let absent = conversations.map(\.id).filter { found[$0]?.owner == nil }
        for (id, owner) in try Archiver.archivedOwners(of: absent, in: session) {
            found[id, default: Found()].archivedOwner = owner
        }
    }
}
