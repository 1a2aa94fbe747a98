import Foundation
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

/// Where the archive of `conversation` is: `DIRECTORY/YYYY/MM/DD/ID.jsonl.gz`, the day (UTC) the
/// one PostgreSQL recorded it as archived on.
func archivePath(_ directory: String, _ conversation: String, in environment: TestEnvironment) async throws -> String {
    let rows = try await environment.rows(
        "SELECT to_char(archived_at AT TIME ZONE 'UTC', 'YYYY/MM/DD') FROM archived_conversations WHERE id = '\(conversation)'"
    )
    let day = try #require(rows.first?.first ?? nil, "\(conversation) is not recorded as archived")
    return "\(directory)/\(day)/\(conversation).jsonl.gz"
}

/// Where an archive of `conversation` written between `start` and `end` can be: one path for
/// each day (UTC) in between, so that a pass that runs across midnight finds its file.
func archivePaths(_ directory: String, _ conversation: String, from start: Date, to end: Date) -> [String] {
    let formatter = DateFormatter()
    formatter.locale = Locale(identifier: "en_US_POSIX")
    formatter.calendar = Calendar(identifier: .gregorian)
    formatter.timeZone = TimeZone(identifier: "UTC")
    formatter.dateFormat = "yyyy/MM/dd"
    let days = [formatter.string(from: start), formatter.string(from: end)]
    return Array(Set(days)).sorted().map { "\(directory)/\($0)/\(conversation).jsonl.gz" }
}
