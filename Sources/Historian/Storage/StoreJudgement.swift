import PostgresClient

/// A message as PostgreSQL holds it, for judging a redelivery.
public struct StoredMessage: Sendable, Hashable {
    public var conversationID: CanonicalUUID
    public var role: String
    public var content: String
}

/// Judges a message against what PostgreSQL already holds. The writer and the dry run share it.
public enum StoreJudgement {
    /// - Parameters:
    ///   - existing: the stored message with the same ID, if any.
    ///   - owner: the owner of the message's conversation, if it exists.
    /// - Returns: `nil` when the message is new and may be stored.
    public static func judge(_ message: IncomingMessage, existing: StoredMessage?, owner: String?) -> StoreResult? {
        if let existing {
            // Content byte for byte: String's == holds canonically equivalent text equal (é as
            // U+00E9 or as e + U+0301), which PostgreSQL stores as different bytes.
            let same =
                existing.conversationID == message.conversationID && existing.role == message.role.rawValue
                && existing.content.utf8.elementsEqual(message.content.utf8)
            return same ? .alreadyStored : .conflict
        }
        if let owner, owner != message.userID {
            return .userMismatch
        }
        return nil
    }
}

extension StoreJudgement {
    /// Judges messages against what is stored: `nil` for one that is new and may be stored.
    static func judge(_ messages: [IncomingMessage], in session: PostgresSession) throws -> [CanonicalUUID: StoreResult?] {
        let existing = try existing(ids: messages.map(\.id), in: session)
        let owners = try owners(of: messages.map(\.conversationID), in: session)
        var results: [CanonicalUUID: StoreResult?] = [:]
        for message in messages {
            results[message.id] = judge(message, existing: existing[message.id], owner: owners[message.conversationID])
        }
        return results
    }

    /// The stored messages with these IDs.
    static func existing(ids: [CanonicalUUID], in session: PostgresSession) throws -> [CanonicalUUID: StoredMessage] {
        let rows = try session.query(
            "SELECT m.id::text, m.conversation_id::text, m.role, m.content FROM messages AS m WHERE m.id = ANY($1)",
            parameters: [.binary(PostgresBinary.uuidArray(ids.map(\.value)))]
        )
        var found: [CanonicalUUID: StoredMessage] = [:]
        for row in rows.rows {
            guard let id = row[0].flatMap(CanonicalUUID.init), let conversation = row[1].flatMap(CanonicalUUID.init) else {
                continue
            }
            found[id] = StoredMessage(conversationID: conversation, role: row[2] ?? "", content: row[3] ?? "")
        }
        return found
    }

    /// The owners of those of these conversations that exist, read without locking them.
    static func owners(of conversations: [CanonicalUUID], in session: PostgresSession) throws -> [CanonicalUUID: String] {
        guard !conversations.isEmpty else { return [:] }
        let rows = try session.query(
            "SELECT id::text, user_id FROM conversations WHERE id = ANY($1)",
            parameters: [.binary(PostgresBinary.uuidArray(Set(conversations).map(\.value)))]
        )
        var owners: [CanonicalUUID: String] = [:]
        for row in rows.rows {
            if let id = row[0].flatMap(CanonicalUUID.init), let owner = row[1] { owners[id] = owner }
        }
        return owners
    }
}
