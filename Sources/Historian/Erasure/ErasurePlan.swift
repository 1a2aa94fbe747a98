import Foundation

/// What the steps after the rows need to find the rest of an erasure once the rows are gone:
/// read in the transaction that deletes the rows and kept, in that same transaction, in the
/// journal row's `pending` column until the erasure is closed. Identifiers only, never content.
struct ErasurePlan: Sendable, Hashable, Codable {
    /// Every conversation erased, live or archived, in canonical form: their Redis keys and
    /// archive files are named after them.
    var conversations: [String] = []
    /// The archive paths `archived_conversations` recorded for them.
    var files: [String] = []
    /// The session ids their messages named (a user's erasure only): `session:{id}` keys.
    var sessions: [String] = []

    /// The plan as the journal keeps it.
    var json: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Arrays of strings always encode.
        return String(decoding: (try? encoder.encode(self)) ?? Data("{}".utf8), as: UTF8.self)
    }

    init(conversations: [String] = [], files: [String] = [], sessions: [String] = []) {
        self.conversations = conversations
        self.files = files
        self.sessions = sessions
    }

    init(json: String) throws {
        self = try JSONDecoder().decode(Self.self, from: Data(json.utf8))
    }
}
