import SQLiteReader

/// A conversation of the file that passed its checks: what the import writes for it.
struct ImportedConversation: Sendable, Hashable {
    /// Its SQLite ID, as reports show it.
    var sqliteID: String
    var id: CanonicalUUID
    var owner: String
    /// The explicit title; `nil` lets the first user message name the conversation.
    var title: String?
    var createdAt: Timestamp?
    /// A JSON object to merge into `conversations.metadata`: the file's, with `source_id` (the
    /// SQLite ID) when that is not a UUID.
    var metadata: String?
    var sourceID: String?
}

/// Turns rows of the tutorial schema into what the daemon's store takes, with the stream's own
/// checks (`EntryValidator`), so an import accepts exactly what a frontend may send.
///
/// Each message becomes the stream entry a frontend would have written for it; its fields and
/// the conversation's are checked by the same code, and a row that fails gets the same reason
/// code and detail as a dead letter would.
struct ImportMapping: Sendable {
    var validator: EntryValidator

    /// Roles other stores write, taken as the contract's: LangChain's message types.
    static let roleAliases: [String: Role] = ["human": .user, "ai": .assistant]

    static let roleRejection = Rejection(
        .invalidRole,
        "role must be user, assistant, system or tool (or human or ai, taken as user and assistant)"
    )

    /// Checks a conversation row; a failure keeps all of its messages out.
    func conversation(_ row: SourceConversation) -> Result<ImportedConversation, Rejection> {
        Result { () throws(Rejection) in try checkConversation(row) }
    }

    private func checkConversation(_ row: SourceConversation) throws(Rejection) -> ImportedConversation {
        let idBytes = Self.bytes(row.id) ?? []
        guard let idText = String(validating: idBytes, as: UTF8.self) else {
            throw Rejection(.invalidUTF8, "id is not valid UTF-8")
        }
        guard !idBytes.contains(0) else { throw Rejection(.nulByte, "id contains a NUL byte") }
        let (id, isUUID) = ImportIDs.conversation(idBytes)
        guard let owner = Self.bytes(row.userID) else { throw Rejection(.missingField, "user_id is NULL") }
        let title = Self.bytes(row.title).flatMap { $0.isEmpty ? nil : $0 }
        let metadata = Self.bytes(row.metadata).flatMap(Self.presentJSON)
        // The stream's checks of user_id, title and metadata: on an entry that carries them, with
        // message fields that pass.
        var fields: [StreamEntry.Field] = [
            field("message_id", Array(id.text.utf8)),
            field("conversation_id", Array(id.text.utf8)),
            field("user_id", owner),
            field("role", Array("user".utf8)),
            field("content", []),
        ]
        if let title { fields.append(field("title", title)) }
        if let metadata { fields.append(field("metadata", metadata)) }
        let checked = try validator.validate(StreamEntry(id: .zero, fields: fields)).get()
        var createdAt: Timestamp?
        if row.createdAt != .null {
            guard let parsed = SQLiteTimestamp.parse(row.createdAt) else { throw Self.timestampRejection("created_at") }
            createdAt = parsed
        }
        return ImportedConversation(
            sqliteID: Self.displayed(idBytes),
            id: id,
            owner: checked.userID,
            title: checked.title,
            createdAt: createdAt,
            metadata: checked.metadata,
            sourceID: isUUID ? nil : idText
        )
    }

    /// The stream entry a frontend would have written for a message of `conversation`, under
    /// the entry ID `ImportIDs.entry`; validating it gives the message to store.
    func entry(_ row: SourceMessage, in conversation: ImportedConversation) -> Result<StreamEntry, Rejection> {
        Result { () throws(Rejection) in try check(row, conversation) }
    }

    private func check(_ row: SourceMessage, _ conversation: ImportedConversation) throws(Rejection) -> StreamEntry {
        guard case .integer(let sqliteID) = row.id else { throw Rejection(.invalidNumber, "id is not an integer") }
        guard let roleBytes = Self.bytes(row.role) else { throw Rejection(.missingField, "role is NULL") }
        guard let role = Self.role(roleBytes) else { throw Self.roleRejection }
        guard let content = Self.bytes(row.content) else { throw Rejection(.missingField, "content is NULL") }
        guard row.timestamp != .null else { throw Rejection(.missingField, "timestamp is NULL") }
        guard let createdAt = SQLiteTimestamp.parse(row.timestamp) else { throw Self.timestampRejection("timestamp") }
        var fields: [StreamEntry.Field] = [
            field("message_id", Array(ImportIDs.message(sqliteID, in: conversation.id).text.utf8)),
            field("conversation_id", Array(conversation.id.text.utf8)),
            field("user_id", Array(conversation.owner.utf8)),
            field("role", Array(role.rawValue.utf8)),
            field("content", content),
            field("created_at", Array(createdAt.rfc3339.utf8)),
        ]
        if let title = conversation.title { fields.append(field("title", Array(title.utf8))) }
        if let metadata = Self.bytes(row.metadata).flatMap(Self.presentJSON) {
            fields.append(field("metadata", metadata))
        }
        return StreamEntry(id: ImportIDs.entry(sqliteID), fields: fields)
    }

    private func field(_ name: String, _ value: [UInt8]) -> StreamEntry.Field {
        StreamEntry.Field(name: Array(name.utf8), value: value)
    }

    /// One of the contract's roles or an alias, in any ASCII case.
    static func role(_ bytes: [UInt8]) -> Role? {
        guard bytes.count <= 16, bytes.allSatisfy({ $0 < 0x80 }) else { return nil }
        let name = String(decoding: bytes, as: UTF8.self).lowercased()
        return Role(rawValue: name) ?? roleAliases[name]
    }

    static func timestampRejection(_ column: String) -> Rejection {
        Rejection(
            .invalidTimestamp,
            "\(column) is neither YYYY-MM-DD HH:MM:SS (UTC), RFC 3339 with an offset, nor Unix seconds or milliseconds"
        )
    }

    /// A value's bytes as text: text and blobs as they are, numbers in decimal; `nil` for NULL.
    static func bytes(_ value: SQLiteValue) -> [UInt8]? {
        switch value {
        case .null: nil
        case .integer(let number): Array(String(number).utf8)
        case .real(let number): Array(String(number).utf8)
        case .text(let bytes), .blob(let bytes): bytes
        }
    }

    /// JSON text that holds something: an empty string and `null` are no metadata, as a
    /// column that was never filled in.
    static func presentJSON(_ bytes: [UInt8]) -> [UInt8]? {
        let isSpace = { (byte: UInt8) in byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D }
        guard let first = bytes.firstIndex(where: { !isSpace($0) }), let last = bytes.lastIndex(where: { !isSpace($0) })
        else { return nil }
        return bytes[first...last].elementsEqual("null".utf8) ? nil : bytes
    }

    /// A SQLite ID as a report line shows it: as it is when it is printable UTF-8, else with
    /// `\xNN` for each byte that is not printable ASCII.
    static func displayed(_ bytes: [UInt8]) -> String {
        if let text = String(validating: bytes, as: UTF8.self),
            !text.unicodeScalars.contains(where: { $0.properties.generalCategory == .control })
        {
            return text
        }
        return bytes.map { byte in
            byte >= 0x20 && byte < 0x7F && byte != 0x5C
                ? String(UnicodeScalar(byte)) : "\\x" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2)
        }.joined()
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
