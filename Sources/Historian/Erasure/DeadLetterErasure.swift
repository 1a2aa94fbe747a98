import RedisClient

/// Which dead letters belong to an erasure's subject: a user's are those whose `user_id` field
/// is exactly their id (byte for byte, as ingest compares owners); a conversation's, those
/// whose `conversation_id` field is its id as a UUID, in any case. A field that appears twice
/// counts by its first value, as ingest reads it. A dead letter without the field, or with one
/// that is not a UUID, belongs to no one's erasure.
///
/// So a user's erasure takes the dead letters they wrote, wherever they were headed, and
/// leaves another user's message dead-lettered as `user_mismatch` in one of their
/// conversations: that is the other user's data. A conversation's erasure takes every dead
/// letter headed for it.
struct DeadLetterMatch: Sendable {
    let subject: ErasureSubject

    func matches(userID: [UInt8]?, conversationID: [UInt8]?) -> Bool {
        switch subject.scope {
        case .user:
            guard let userID, let user = subject.userID else { return false }
            return userID == Array(user.utf8)
        case .conversation:
            guard let conversationID, let conversation = subject.conversation else { return false }
            return CanonicalUUID(conversationID) == conversation
        }
    }
}

/// The dead-letter part of an erasure: the dead-letter stream read in chunks (`XRANGE`), the
/// matching entries deleted by ID (`XDEL`) as each chunk is read. Only the two fields that
/// decide are copied out of a reply, never a message body.
enum DeadLetterErasure {
    /// One dead letter, as far as matching needs.
    struct Letter: Sendable {
        var id: StreamID
        var userID: [UInt8]?
        var conversationID: [UInt8]?
        var bytes: Int
    }

    /// Decodes one `[id, [field, value, …]]` element of an `XRANGE` reply in place.
    static func decode(_ item: RedisReplyView?) throws -> Letter {
        guard let item, item.count == 2, let id = item[0]?.withBytes({ StreamID(ascii: $0) }) else {
            throw HistorianError(.unexpectedReply, "a dead letter had an unexpected shape")
        }
        var letter = Letter(id: id, bytes: 0)
        guard let flat = item[1], flat.kind == .array else { return letter }
        var index = 0
        while index + 1 < flat.count, let name = flat[index], let value = flat[index + 1] {
            index += 2
            let nameBytes = name.withBytes { Array($0) }
            letter.bytes += nameBytes.count + value.withBytes { $0.count }
            if nameBytes == Self.userField, letter.userID == nil {
                letter.userID = value.withBytes { Array($0) }
            } else if nameBytes == Self.conversationField, letter.conversationID == nil {
                letter.conversationID = value.withBytes { Array($0) }
            }
        }
        return letter
    }

    static let userField = Array("user_id".utf8)
    static let conversationField = Array("conversation_id".utf8)

    /// Removes the subject's dead letters from `stream`, or with `dryRun` only counts them.
    /// Reads stay within `batchBytes` as a worker's do: a dead letter can be larger than
    /// `max_content_bytes` (`too_large`).
    /// - Returns: how many were removed (or would be).
    static func remove(
        _ match: DeadLetterMatch,
        stream: String,
        batchBytes: Int,
        firstEntryBytes: Int,
        dryRun: Bool,
        redis: RedisConnection
    ) async throws -> Int {
        var budget = ReadBudget(batchSize: 500, batchBytes: batchBytes, firstEntryBytes: firstEntryBytes)
        var start = "-"
        var removed = 0
        while true {
            let asked = budget.count()
            let letters = try await redis.send(
                ["XRANGE", RedisArgument(stream), RedisArgument(start), "+", "COUNT", RedisArgument(asked)]
            ) { reply in
                try (0..<reply.count).map { try decode(reply[$0]) }
            }
            budget.observe(largestEntryBytes: letters.reduce(0) { max($0, $1.bytes) })
            let matching = letters.filter { match.matches(userID: $0.userID, conversationID: $0.conversationID) }
            if !matching.isEmpty {
                if dryRun {
                    removed += matching.count
                } else {
                    let ids = matching.map { RedisArgument($0.id.description) }
                    removed += Int(try await redis.send(["XDEL", RedisArgument(stream)] + ids).int ?? 0)
                }
            }
            guard letters.count == asked, let last = letters.last else { return removed }
            start = "(" + last.id.description
        }
    }
}
