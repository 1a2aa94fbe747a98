import Foundation

/// Why an entry went to the dead-letter stream: the contract's stable codes.
public enum DeadLetterReason: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case missingField = "missing_field"
    case invalidUUID = "invalid_uuid"
    case invalidRole = "invalid_role"
    case invalidUTF8 = "invalid_utf8"
    case nulByte = "nul_byte"
    case tooLarge = "too_large"
    case invalidJSON = "invalid_json"
    case invalidTimestamp = "invalid_timestamp"
    case invalidNumber = "invalid_number"
    case conflict
    case userMismatch = "user_mismatch"
    case poison
    case rejectedByDatabase = "rejected_by_database"

    public var description: String { rawValue }
}

/// An entry that can never be stored, with the reason and a human-readable detail.
///
/// The detail names fields and limits, never field values: it is written to logs and reports.
public struct Rejection: Error, Sendable, Hashable {
    public var reason: DeadLetterReason
    public var detail: String

    public init(_ reason: DeadLetterReason, _ detail: String) {
        self.reason = reason
        self.detail = detail
    }

    /// The same `message_id` is stored with another conversation, role or content.
    public static let conflict = Rejection(
        .conflict,
        "message_id is stored already with another conversation, role or content; the stored version is kept"
    )

    /// The message's user is not its conversation's owner.
    public static func userMismatch(_ conversation: CanonicalUUID) -> Rejection {
        Rejection(.userMismatch, "user_id is not the owner of conversation \(conversation)")
    }
}

/// A message's role in its conversation.
public enum Role: String, Sendable, Hashable, CaseIterable {
    case user, assistant, system, tool
}

/// A validated message, ready to be stored.
///
/// A value, held in one immutable box: a batch's messages are passed around, collected and
/// sorted many times on their way to PostgreSQL and Redis, and copying one is then one
/// reference count rather than one for each of its strings. Changing a property (only tests
/// do) puts the changed fields in a box of their own.
public struct IncomingMessage: Sendable, Hashable {
    struct Fields: Sendable, Hashable {
        var entryID: StreamID
        var id: CanonicalUUID
        var conversationID: CanonicalUUID
        var userID: String
        var role: Role
        var content: String
        var createdAt: Timestamp
        var sessionID: String?
        var deptID: String?
        var title: String?
        var tokensUsed: Int32?
        var latencyMs: Int32?
        var metadata: String?
        var contexts: String?
    }

    private final class Box: Sendable {
        let fields: Fields
        init(_ fields: Fields) { self.fields = fields }
    }

    private var box: Box

    public init(
        entryID: StreamID,
        id: CanonicalUUID,
        conversationID: CanonicalUUID,
        userID: String,
        role: Role,
        content: String,
        createdAt: Timestamp,
        sessionID: String? = nil,
        deptID: String? = nil,
        title: String? = nil,
        tokensUsed: Int32? = nil,
        latencyMs: Int32? = nil,
        metadata: String? = nil,
        contexts: String? = nil
    ) {
        box = Box(
            Fields(
                entryID: entryID,
                id: id,
                conversationID: conversationID,
                userID: userID,
                role: role,
                content: content,
                createdAt: createdAt,
                sessionID: sessionID,
                deptID: deptID,
                title: title,
                tokensUsed: tokensUsed,
                latencyMs: latencyMs,
                metadata: metadata,
                contexts: contexts
            )
        )
    }

    private mutating func change(_ body: (inout Fields) -> Void) {
        var fields = box.fields
        body(&fields)
        box = Box(fields)
    }

    public var entryID: StreamID {
        get { box.fields.entryID }
        set { change { $0.entryID = newValue } }
    }
    public var id: CanonicalUUID {
        get { box.fields.id }
        set { change { $0.id = newValue } }
    }
    public var conversationID: CanonicalUUID {
        get { box.fields.conversationID }
        set { change { $0.conversationID = newValue } }
    }
    public var userID: String {
        get { box.fields.userID }
        set { change { $0.userID = newValue } }
    }
    public var role: Role {
        get { box.fields.role }
        set { change { $0.role = newValue } }
    }
    public var content: String {
        get { box.fields.content }
        set { change { $0.content = newValue } }
    }
    public var createdAt: Timestamp {
        get { box.fields.createdAt }
        set { change { $0.createdAt = newValue } }
    }
    public var sessionID: String? {
        get { box.fields.sessionID }
        set { change { $0.sessionID = newValue } }
    }
    public var deptID: String? {
        get { box.fields.deptID }
        set { change { $0.deptID = newValue } }
    }
    public var title: String? {
        get { box.fields.title }
        set { change { $0.title = newValue } }
    }
    public var tokensUsed: Int32? {
        get { box.fields.tokensUsed }
        set { change { $0.tokensUsed = newValue } }
    }
    public var latencyMs: Int32? {
        get { box.fields.latencyMs }
        set { change { $0.latencyMs = newValue } }
    }
    /// A JSON object, as the producer wrote it (validated, not re-encoded).
    public var metadata: String? {
        get { box.fields.metadata }
        set { change { $0.metadata = newValue } }
    }
    /// A JSON array of `{doc_id, content, score, metadata}`, as the producer wrote it (validated).
    public var contexts: String? {
        get { box.fields.contexts }
        set { change { $0.contexts = newValue } }
    }

    public static func == (lhs: IncomingMessage, rhs: IncomingMessage) -> Bool {
        lhs.box === rhs.box || lhs.box.fields == rhs.box.fields
    }

    public func hash(into hasher: inout Hasher) {
        box.fields.hash(into: &hasher)
    }

    /// The title this message would give a new conversation: the explicit title, else derived
    /// from a user message.
    public var derivedTitle: String? {
        role == .user ? Title.derive(from: content) : nil
    }
}

/// Limits that validation enforces; the defaults are the contract's.
public struct ValidationLimits: Sendable, Hashable {
    public var maxContentBytes: Int = 1 << 20
    public var maxMetadataBytes: Int = 64 << 10
    public var maxTitleCharacters: Int = 500

    public init(maxContentBytes: Int = 1 << 20) {
        self.maxContentBytes = maxContentBytes
    }
}

/// Checks every field of an entry against the contract (§1) and turns it into a message.
public struct EntryValidator: Sendable {
    public var limits: ValidationLimits

    public init(limits: ValidationLimits = ValidationLimits()) {
        self.limits = limits
    }

    public func validate(_ entry: StreamEntry) -> Result<IncomingMessage, Rejection> {
        Result { try validateOrThrow(entry) }.mapError { $0 as! Rejection }
    }

    private func validateOrThrow(_ entry: StreamEntry) throws(Rejection) -> IncomingMessage {
        func required(_ name: String) throws(Rejection) -> [UInt8] {
            guard let value = entry[name] else { throw Rejection(.missingField, "field \(name) is missing") }
            return value
        }
        func uuid(_ name: String) throws(Rejection) -> CanonicalUUID {
            let value = try required(name)
            guard let parsed = CanonicalUUID(value) else { throw Rejection(.invalidUUID, "\(name) is not a UUID") }
            return parsed
        }
        func text(_ bytes: [UInt8], _ name: String) throws(Rejection) -> String {
            guard let string = String(validating: bytes, as: UTF8.self) else {
                throw Rejection(.invalidUTF8, "\(name) is not valid UTF-8")
            }
            if bytes.withUnsafeBytes({ $0.baseAddress.map { memchr($0, 0, bytes.count) != nil } ?? false }) {
                throw Rejection(.nulByte, "\(name) contains a NUL byte")
            }
            return string
        }
        func bounded(_ name: String, _ range: ClosedRange<Int>, required isRequired: Bool) throws(Rejection) -> String? {
            guard let bytes = isRequired ? try required(name) : entry[name] else { return nil }
            let value = try text(bytes, name)
            guard bytes.count >= range.lowerBound else {
                throw Rejection(.missingField, "\(name) is empty")
            }
            guard bytes.count <= range.upperBound else {
                throw Rejection(.tooLarge, "\(name) is \(bytes.count) bytes, more than \(range.upperBound)")
            }
            return value
        }
        func count(_ name: String) throws(Rejection) -> Int32? {
            guard let bytes = entry[name] else { return nil }
            guard !bytes.isEmpty, bytes.count <= 10, bytes.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
                case let value = bytes.reduce(Int64(0), { $0 * 10 + Int64($1 - 0x30) }), value <= Int32.max
            else {
                throw Rejection(.invalidNumber, "\(name) is not an integer from 0 to \(Int32.max)")
            }
            return Int32(value)
        }

        // Checked in the order of the contract's table, so the first problem is the one reported.
        let id = try uuid("message_id")
        let conversationID = try uuid("conversation_id")
        let userID = try bounded("user_id", 1...255, required: true)!
        let roleText = try text(try required("role"), "role")
        guard let role = Role(rawValue: roleText) else {
            throw Rejection(.invalidRole, "role must be user, assistant, system or tool")
        }
        let contentBytes = try required("content")
        if contentBytes.count > limits.maxContentBytes {
            throw Rejection(.tooLarge, "content is \(contentBytes.count) bytes, more than \(limits.maxContentBytes)")
        }
        let content = try text(contentBytes, "content")

        let createdAt: Timestamp
        if let raw = entry["created_at"] {
            createdAt = try Self.timestamp(raw)
        } else if let idTime = Timestamp(unixMilliseconds: entry.id.milliseconds) {
            createdAt = idTime
        } else {
            // A producer may give XADD any ID; one past the year 9999 is no time to store.
            throw Rejection(.invalidTimestamp, "no created_at, and the entry ID's time is after the year 9999")
        }
        let sessionID = try bounded("session_id", 1...255, required: false)
        let deptID = try bounded("dept_id", 1...100, required: false)
        var title: String?
        if let raw = entry["title"] {
            let value = try text(raw, "title")
            guard value.unicodeScalars.count <= limits.maxTitleCharacters else {
                throw Rejection(.tooLarge, "title is longer than \(limits.maxTitleCharacters) characters")
            }
            title = value.isEmpty ? nil : value
        }
        let tokensUsed = try count("tokens_used")
        let latencyMs = try count("latency_ms")
        var metadata: String?
        if let raw = entry["metadata"] {
            guard raw.count <= limits.maxMetadataBytes else {
                throw Rejection(.tooLarge, "metadata is \(raw.count) bytes, more than \(limits.maxMetadataBytes)")
            }
            let value = try text(raw, "metadata")
            guard Self.isJSONObject(raw) else { throw Rejection(.invalidJSON, "metadata is not a JSON object") }
            metadata = value
        }
        var contexts: String?
        if let raw = entry["contexts"] {
            guard raw.count <= limits.maxContentBytes else {
                throw Rejection(.tooLarge, "contexts is \(raw.count) bytes, more than \(limits.maxContentBytes)")
            }
            let value = try text(raw, "contexts")
            try Self.checkContexts(raw)
            contexts = value
        }
        return IncomingMessage(
            entryID: entry.id,
            id: id,
            conversationID: conversationID,
            userID: userID,
            role: role,
            content: content,
            createdAt: createdAt,
            sessionID: sessionID,
            deptID: deptID,
            title: title,
            tokensUsed: tokensUsed,
            latencyMs: latencyMs,
            metadata: metadata,
            contexts: contexts
        )
    }

    /// RFC 3339 with an offset, or integer Unix milliseconds.
    static func timestamp(_ raw: [UInt8]) throws(Rejection) -> Timestamp {
        let text = String(decoding: raw, as: UTF8.self)
        if !raw.isEmpty, raw.count <= 16, raw.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let ms = UInt64(text),
            let value = Timestamp(unixMilliseconds: ms)
        {
            return value
        }
        guard let value = Timestamp(rfc3339: text) else {
            throw Rejection(
                .invalidTimestamp,
                "created_at is neither RFC 3339 with an offset nor Unix milliseconds"
            )
        }
        return value
    }

    /// Whether `raw` is one JSON object that PostgreSQL's `jsonb` accepts, with numbers that are
    /// finite as a `Double`: one pass over the bytes (see `JSONCheck`), which `text` has checked
    /// to be UTF-8 without NUL bytes.
    static func isJSONObject(_ raw: [UInt8]) -> Bool {
        JSONCheck.isJSONObject(raw)
    }

    /// Whether `raw` is an array of `{doc_id, content, score, metadata}` objects: one pass over
    /// the bytes (see `JSONCheck`), which `text` has checked to be UTF-8 without NUL bytes. The
    /// details name the first problem, as `contexts[2].score has the wrong type`.
    static func checkContexts(_ raw: [UInt8]) throws(Rejection) {
        try JSONCheck.checkContexts(raw)
    }
}
