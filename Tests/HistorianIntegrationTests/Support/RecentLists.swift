import Foundation
import RedisClient

/// What each conversation's recent list should hold (contract §3): its latest `size` messages
/// in PostgreSQL, oldest first, as the contract's JSON elements, by conversation ID.
func expectedRecentLists(_ environment: TestEnvironment, size: Int = 10) async throws -> [String: [NSDictionary]] {
    try await expectedRecentLists(rows: environment.rows, size: size)
}

/// ``expectedRecentLists(_:size:)`` from whatever runs the query.
func expectedRecentLists(
    rows query: (String) async throws -> [[String?]],
    size: Int = 10
) async throws -> [String: [NSDictionary]] {
    let rows = try await query(
        """
        SELECT conversation_id::text, json_build_object('id', id, 'conversation_id', conversation_id, 'role', role,
            'created_at', to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
            'tokens_used', tokens_used, 'latency_ms', latency_ms, 'content', content, 'metadata', metadata)::text
        FROM (
            SELECT m.*, row_number() OVER (PARTITION BY conversation_id ORDER BY created_at DESC, arrival DESC) AS rank
            FROM messages m
        ) ranked
        WHERE rank <= \(size)
        ORDER BY conversation_id, created_at, arrival
        """
    )
    var lists: [String: [NSDictionary]] = [:]
    for row in rows {
        lists[row[0]!, default: []].append(try jsonObject(row[1]!))
    }
    return lists
}

/// A conversation's recent list in Redis, element by element.
func cachedRecentList(_ redis: RedisConnection, _ conversation: String, keyPrefix: String = "") async throws -> [NSDictionary] {
    let reply = try await redis.send("LRANGE", RedisArgument("\(keyPrefix)history:\(conversation):recent"), "0", "-1")
    return try (reply.array ?? []).map { try jsonObject($0.string ?? "{}") }
}

/// The conversations whose recent list differs from `expectedRecentLists`, among `conversations`.
func recentListsDiffering(
    _ conversations: some Sequence<String>,
    _ environment: TestEnvironment,
    _ redis: RedisConnection,
    size: Int = 10
) async throws -> [String] {
    let expected = try await expectedRecentLists(environment, size: size)
    var differing: [String] = []
    for conversation in conversations where try await cachedRecentList(redis, conversation) != expected[conversation] ?? [] {
        differing.append(conversation)
    }
    return differing
}

func jsonObject(_ json: String) throws -> NSDictionary {
    guard let object = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? NSDictionary else {
        throw UnexpectedReply(reply: json)
    }
    return object
}
