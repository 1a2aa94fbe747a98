/// Where a page of a user's conversations ended: the last conversation it gave out, by the
/// order the list is in (`updated_at` newest first, then `id` from the highest).
public struct ConversationCursor: Sendable, Hashable {
    public var updatedAt: Timestamp
    public var id: CanonicalUUID

    public init(updatedAt: Timestamp, id: CanonicalUUID) {
        self.updatedAt = updatedAt
        self.id = id
    }
}

/// Where a page of a conversation's messages ended: the last message it gave out, by the order
/// messages are in (`created_at`, then arrival).
///
/// Arrival numbers go into the archive with the rows and come back with a restore, so a cursor
/// stays valid when its conversation is archived or restored between two pages.
public struct MessageCursor: Sendable, Hashable, Comparable {
    public var createdAt: Timestamp
    public var arrival: Int64

    public init(createdAt: Timestamp, arrival: Int64) {
        self.createdAt = createdAt
        self.arrival = arrival
    }

    public static func < (lhs: MessageCursor, rhs: MessageCursor) -> Bool {
        (lhs.createdAt, lhs.arrival) < (rhs.createdAt, rhs.arrival)
    }
}

/// The text form of cursors that clients pass back: `c1.<microseconds>.<id>` for a
/// conversation list, `m1.<microseconds>.<arrival>` for messages. Clients treat it as opaque;
/// it is plain so that openapi.yaml can give its exact pattern, and every string of that
/// pattern is a cursor (a time beyond the years `Timestamp` prints is taken as the nearest it
/// does). The kind keeps a cursor of one list from being taken by another; the `1` is the
/// format's version.
public enum HistoryCursorText {
    static let conversationKind = "c1"
    static let messageKind = "m1"

    public static func encode(_ cursor: ConversationCursor) -> String {
        "\(conversationKind).\(cursor.updatedAt.microseconds).\(cursor.id.text)"
    }

    public static func encode(_ cursor: MessageCursor) -> String {
        "\(messageKind).\(cursor.createdAt.microseconds).\(cursor.arrival)"
    }

    /// The cursor `text` stands for, or `nil` when it is not of the form `encode` makes.
    public static func conversationCursor(_ text: String) -> ConversationCursor? {
        guard let fields = fields(text, kind: conversationKind), let time = timestamp(fields[0]),
            fields[1].utf8.allSatisfy({ $0 == 0x2D || ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }),
            let id = CanonicalUUID(String(fields[1]))
        else { return nil }
        return ConversationCursor(updatedAt: time, id: id)
    }

    /// The cursor `text` stands for, or `nil` when it is not of the form `encode` makes.
    public static func messageCursor(_ text: String) -> MessageCursor? {
        guard let fields = fields(text, kind: messageKind), let time = timestamp(fields[0]),
            let arrival = digits(fields[1], negative: false)
        else { return nil }
        return MessageCursor(createdAt: time, arrival: arrival)
    }

    private static func fields(_ text: String, kind: String) -> [Substring]? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == kind else { return nil }
        return Array(parts[1...])
    }

    /// Up to 18 digits (so always an `Int64`), after a `-` where `negative` allows one.
    private static func digits(_ text: Substring, negative: Bool) -> Int64? {
        let unsigned = negative && text.hasPrefix("-") ? text.dropFirst() : text
        guard (1...18).contains(unsigned.utf8.count), unsigned.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
            return nil
        }
        return Int64(text)
    }

    /// Microseconds, held to the years `Timestamp` parses and prints.
    private static func timestamp(_ text: Substring) -> Timestamp? {
        guard let micros = digits(text, negative: true) else { return nil }
        return Timestamp(microseconds: min(max(micros, Timestamp.earliest.microseconds), Timestamp.latest.microseconds))
    }
}
