import Foundation

/// One message of a conversation as a JSON object, with the keys it is ordered by.
///
/// Read from PostgreSQL, `json` is the line an archive would hold for the message
/// (`{"type":"message", …every column, "contexts":[…]}`); read from an archive, it is that
/// line. Both sources give the same text, so whoever turns it into an answer has one shape to
/// read. (The recent list's elements, contract §3, have a subset of its keys.)
public struct HistoryLine: Sendable, Hashable {
    public var json: String
    public var cursor: MessageCursor

    public init(json: String, cursor: MessageCursor) {
        self.json = json
        self.cursor = cursor
    }

    /// The line with its keys read from it.
    /// - Throws: `HistorianError` (`archive_unreadable`) when it is not a message line: the
    ///   archive files are the only source of lines that PostgreSQL did not just print.
    package init(line: String, in path: String) throws {
        let fields = try MessageLineFields.read(line, in: path)
        guard let arrival = fields.arrival else {
            throw HistorianError(.archiveUnreadable, "archive \(path): a message line has no arrival number")
        }
        self.init(json: line, cursor: MessageCursor(createdAt: fields.createdAt, arrival: arrival))
    }
}

/// The fields of a message line that the history reads itself: its order, and what it counts
/// against a token budget.
struct MessageLineFields: Decodable {
    var createdAt: Timestamp
    var arrival: Int64?
    var tokensUsed: Int?
    var content: String

    enum CodingKeys: String, CodingKey {
        case createdAt = "created_at"
        case arrival
        case tokensUsed = "tokens_used"
        case content
    }

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let text = try container.decode(String.self, forKey: .createdAt)
        guard let createdAt = Timestamp(rfc3339: text) else {
            throw DecodingError.dataCorruptedError(forKey: .createdAt, in: container, debugDescription: "not RFC 3339")
        }
        self.createdAt = createdAt
        arrival = try container.decodeIfPresent(Int64.self, forKey: .arrival)
        tokensUsed = try container.decodeIfPresent(Int.self, forKey: .tokensUsed)
        content = try container.decode(String.self, forKey: .content)
    }

    /// Reads `line`, naming `path` (never the line's text) when it is not a message.
    static func read(_ line: String, in path: String) throws -> MessageLineFields {
        do {
            return try JSONDecoder().decode(MessageLineFields.self, from: Data(line.utf8))
        } catch {
            throw HistorianError(.archiveUnreadable, "archive \(path): a message line is not a message")
        }
    }
}

/// What a message counts against a context window's token budget.
public enum TokenCount {
    /// Its `tokens_used` when it has one; else ceil(UTF-8 bytes of its content / 4), the usual
    /// rule of thumb for English text with BPE tokenizers (about four characters a token).
    /// - Returns: the count, and whether it is the estimate.
    public static func of(tokensUsed: Int?, contentBytes: Int) -> (tokens: Int, estimated: Bool) {
        if let tokensUsed { return (tokensUsed, false) }
        return ((contentBytes + 3) / 4, true)
    }
}
