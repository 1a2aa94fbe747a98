import Foundation
import Historian
import Testing

/// Stores a small workload (4 conversations of 10 messages, some with metadata and
/// contexts, the first with two) and makes the first `idle` of them look quiet for 40 days.
func storeConversations(_ environment: TestEnvironment, idle: Int) async throws -> [String] {
    let redis = try await environment.redis()
    defer { redis.close() }
    var messages = Producer.workload(count: 40, conversations: 4, seed: 7)
    // The first message has two contexts, with text that JSON must escape.
    messages[0].contexts =
        #"[{"doc_id":"d-1","content":"line one\nline \"two\"","score":0.9},{"doc_id":"d-2","content":"tab\there","score":0.5,"metadata":{"page":7}}]"#
    try await Producer.append(messages, redis: redis)
    let run = try await HistorianProcess.run(["run", "--once"], environment: environment.historianEnvironment)
    #expect(run.status == 0, "\(run.errors)")
    let conversations = (0..<4).map { messages[$0].conversationID }
    let quiet = conversations.prefix(idle).map { "'\($0)'" }.joined(separator: ",")
    _ = try await environment.rows(
        "UPDATE conversations SET updated_at = now() - interval '40 days' WHERE id IN (\(quiet))"
    )
    return conversations
}

/// Where today's archive of `conversation` goes.
func archivePath(_ directory: String, _ conversation: String) -> String {
    let location = ArchiveLayout(root: directory).location(of: CanonicalUUID(conversation)!, archivedAt: Date())
    return "\(location.directory)/\(location.name)"
}
