import Foundation
import Historian
import Testing

/// Every stored message, by ID: conversation, role, content.
func storedMessages(_ environment: TestEnvironment) async throws -> [String: (String, String, String)] {
    var stored: [String: (String, String, String)] = [:]
    for row in try await environment.rows("SELECT id::text, conversation_id::text, role, content FROM messages") {
        stored[row[0]!] = (row[1]!, row[2]!, row[3]!)
    }
    return stored
}

/// The batches a daemon logged at debug level (`batch done`), with their entries and bytes.
func batchesDone(_ log: String) -> [(entries: Int, bytes: Int)] {
    log.split(separator: "\n").filter { $0.contains("batch done") }.map { line in
        let value = { (name: String) in
            line.split(separator: " ").first { $0.hasPrefix(name + "=") }.flatMap { Int($0.dropFirst(name.count + 1)) }
        }
        return (entries: value("entries") ?? 0, bytes: value("bytes") ?? 0)
    }
}

/// Checks that PostgreSQL holds exactly `messages`, byte for byte, with the right conversations.
func expectStored(_ messages: [TestMessage], in environment: TestEnvironment) async throws {
    let stored = try await storedMessages(environment)
    #expect(stored.count == messages.count)
    var mismatches = 0
    for message in messages {
        guard let (conversation, role, content) = stored[message.id] else {
            mismatches += 1
            continue
        }
        if conversation != message.conversationID || role != message.role
            || Array(content.utf8) != Array(message.content.utf8)
        {
            mismatches += 1
        }
    }
    #expect(mismatches == 0, "messages missing or different in PostgreSQL")

    let firstByConversation = Dictionary(grouping: messages, by: \.conversationID).mapValues { $0 }
    let rows = try await environment.rows(
        """
        SELECT c.id::text, c.user_id, c.title, count(m.id)
        FROM conversations c LEFT JOIN messages m ON m.conversation_id = c.id
        GROUP BY c.id, c.user_id, c.title
        """
    )
    #expect(rows.count == firstByConversation.count)
    var wrongConversations: [String] = []
    for row in rows {
        guard let sent = firstByConversation[row[0]!] else {
            wrongConversations.append(row[0]!)
            continue
        }
        let first = sent[0]
        let expectedTitle = first.title ?? sent.first { $0.role == "user" }.flatMap { Title.derive(from: $0.content) }
        if row[1] != first.userID || row[2] != expectedTitle || Int(row[3]!) != sent.count {
            wrongConversations.append(
                "\(row[0]!): owner \(row[1] ?? "-")/\(first.userID), title \(row[2] ?? "-")/\(expectedTitle ?? "-"), "
                    + "count \(row[3] ?? "-")/\(sent.count)"
            )
        }
    }
    #expect(
        wrongConversations.isEmpty,
        "\(wrongConversations.count) conversations wrong, e.g. \(wrongConversations.prefix(3))"
    )
}
