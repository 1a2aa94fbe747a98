import Foundation
import Testing

/// The batches a daemon logged at debug level (`batch done`), with their entries and bytes.
func batchesDone(_ log: String) -> [(entries: Int, bytes: Int)] {
    log.split(separator: "\n").filter { $0.contains("batch done") }.map { line in
        let value = { (name: String) in
            line.split(separator: " ").first { $0.hasPrefix(name + "=") }.flatMap { Int($0.dropFirst(name.count + 1)) }
        }
        return (entries: value("entries") ?? 0, bytes: value("bytes") ?? 0)
    }
}

/// Checks that PostgreSQL holds exactly `messages`, every column of `messages` and
/// `message_contexts` as the test sent it, and exactly their conversations, each with the owner,
/// department, title and first time the contract gives it.
///
/// What cannot be read from the input is written out by hand in it (`derivedTitle`,
/// `storedCreatedAt`); a message without `created_at` must have its stream entry's time.
func expectStored(
    _ messages: [TestMessage],
    in environment: TestEnvironment,
    sourceLocation: SourceLocation = #_sourceLocation
) async throws {
    // messages: every column but the generated `arrival`; `stream_entry` for the default time.
    let rows = try await environment.rows(
        """
        SELECT id::text, conversation_id::text, role, content, tokens_used::text, latency_ms::text,
            \(TestTime.sql("created_at")), metadata::text, session_id, stream_entry
        FROM messages
        """
    )
    let stored = Dictionary(rows.map { ($0[0] ?? "", $0) }) { first, _ in first }
    #expect(rows.count == messages.count, "messages stored", sourceLocation: sourceLocation)
    var wrong: [String] = []
    var createdAt: [String: String] = [:]
    for message in messages {
        guard let row = stored[message.id] else {
            wrong.append("\(message.id): missing")
            continue
        }
        let expectedTime = message.storedCreatedAt ?? message.createdAt ?? row[9].flatMap(entryTime)
        createdAt[message.id] = row[6]
        let differences = [
            ("conversation_id", row[1] == message.conversationID),
            ("role", row[2] == message.role),
            ("content", row[3].map { Array($0.utf8) } == Array(message.content.utf8)),
            ("tokens_used", row[4] == message.tokensUsed.map(String.init)),
            ("latency_ms", row[5] == message.latencyMs.map(String.init)),
            ("created_at \(row[6] ?? "NULL") for \(expectedTime ?? "-")", row[6] != nil && row[6] == expectedTime),
            ("metadata \(row[7] ?? "NULL")", sameJSON(row[7], message.metadata)),
            ("session_id", row[8] == message.sessionID),
        ].filter { !$0.1 }.map(\.0)
        if !differences.isEmpty { wrong.append("\(message.id): \(differences.joined(separator: ", "))") }
    }
    #expect(wrong.isEmpty, "\(wrong.count) messages wrong, e.g. \(wrong.prefix(3))", sourceLocation: sourceLocation)

    // message_contexts: one row per element of `contexts`, numbered from 1, in order.
    let contextRows = try await environment.rows(
        """
        SELECT message_id::text, position::text, doc_id, content, score::text, metadata::text
        FROM message_contexts ORDER BY message_id, position
        """
    )
    let storedContexts = Dictionary(grouping: contextRows) { $0[0] ?? "" }
    var wrongContexts: [String] = []
    var expectedContexts = 0
    for message in messages {
        let sent = try contextElements(message.contexts)
        expectedContexts += sent.count
        let rows = storedContexts[message.id] ?? []
        let same =
            rows.count == sent.count
            && zip(rows, sent).enumerated().allSatisfy { position, pair in
                let (row, element) = pair
                return row[1] == String(position + 1) && row[2] == element["doc_id"] as? String
                    && row[3] == element["content"] as? String
                    && row[4].flatMap(Double.init) == (element["score"] as? NSNumber)?.doubleValue
                    && sameJSON(row[5], element["metadata"].flatMap { $0 is NSNull ? nil : $0 })
            }
        if !same { wrongContexts.append("\(message.id): \(rows) for \(message.contexts ?? "none")") }
    }
    #expect(contextRows.count == expectedContexts, "context rows", sourceLocation: sourceLocation)
    #expect(
        wrongContexts.isEmpty,
        "\(wrongContexts.count) messages' contexts wrong, e.g. \(wrongContexts.prefix(2))",
        sourceLocation: sourceLocation
    )

    // conversations: the owner and department of the message that made it, the last title
    // given or else the one derived from its earliest user message (and that message's time),
    // its earliest time, no metadata, and all of its messages.
    let conversationRows = try await environment.rows(
        """
        SELECT c.id::text, c.user_id, c.dept_id, c.title, \(TestTime.sql("c.title_derived_from")),
            \(TestTime.sql("c.created_at")), c.metadata::text,
            (SELECT count(*) FROM messages AS m WHERE m.conversation_id = c.id)::text
        FROM conversations AS c
        """
    )
    let sentByConversation = Dictionary(grouping: messages, by: \.conversationID)
    #expect(conversationRows.count == sentByConversation.count, "conversations", sourceLocation: sourceLocation)
    var wrongConversations: [String] = []
    for row in conversationRows {
        guard let sent = sentByConversation[row[0] ?? ""] else {
            wrongConversations.append("\(row[0] ?? "-"): not sent")
            continue
        }
        let first = sent[0]
        let explicit = sent.last { $0.title != nil }?.title
        // The earliest user message by created_at; ties go to the one sent first.
        let namer = sent.enumerated().filter { $0.element.role == "user" }
            .min { (createdAt[$0.element.id] ?? "", $0.offset) < (createdAt[$1.element.id] ?? "", $1.offset) }?.element
        let title = explicit ?? namer?.derivedTitle
        let derivedFrom = explicit == nil ? namer.flatMap { createdAt[$0.id] } : nil
        let earliest = sent.compactMap { createdAt[$0.id] }.min()
        let expected: [String?] = [
            first.userID, first.deptID, title, derivedFrom, earliest, "{}", String(sent.count),
        ]
        if Array(row.dropFirst()) != expected {
            wrongConversations.append(
                "\(row[0] ?? "-"): \(row.dropFirst().map { $0 ?? "NULL" }) for \(expected.map { $0 ?? "NULL" })"
            )
        }
    }
    #expect(
        wrongConversations.isEmpty,
        "\(wrongConversations.count) conversations wrong (owner, dept, title, title from, created, metadata, messages), e.g. \(wrongConversations.prefix(3))",
        sourceLocation: sourceLocation
    )
}

/// The time of stream entry `id` (`MILLISECONDS-SEQUENCE`) in ``TestTime/utc(microseconds:)``'s form.
private func entryTime(_ id: String) -> String? {
    id.split(separator: "-").first.flatMap { Int64($0) }.map { TestTime.utc(microseconds: $0 * 1000) }
}

/// Whether two JSON texts (or an already parsed value) are the same JSON value, key order and
/// white space aside; nil is SQL's NULL, or no value.
private func sameJSON(_ stored: String?, _ sent: Any?) -> Bool {
    func canonical(_ value: Any?) -> Data? {
        guard var value else { return nil }
        if let text = value as? String {
            guard let parsed = try? JSONSerialization.jsonObject(with: Data(text.utf8), options: .fragmentsAllowed)
            else {
                return Data("unparsable: \(text)".utf8)
            }
            value = parsed
        }
        return try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys, .fragmentsAllowed])
    }
    return canonical(stored) == canonical(sent)
}

/// The elements of a `contexts` field as sent (none without one).
private func contextElements(_ contexts: String?) throws -> [[String: Any]] {
    guard let contexts else { return [] }
    return try #require(try JSONSerialization.jsonObject(with: Data(contexts.utf8)) as? [[String: Any]], "\(contexts)")
}
