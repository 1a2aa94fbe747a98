import Foundation
import Hummingbird
import HummingbirdTesting
import RedisClient
import Testing

@testable import Historian
@testable import HistoryAPI

/// `GET /v1/conversations/{id}/recent`: Redis's list, rebuilt through the pipeline's versioned
/// update when its key is gone, never over a newer one.
@Suite(.serialized)
struct RecentListTests {
    static func ids(_ body: [String: Any]) -> [String] {
        ((body["messages"] as? [[String: Any]]) ?? []).map { $0["id"] as? String ?? "" }
    }

    /// The list's elements as JSON objects, their null fields left out (as the API leaves them).
    static func held(_ key: String, _ redis: RedisConnection) async throws -> [[String: Any]] {
        let reply = try await redis.send("LRANGE", RedisArgument(key), "0", "-1")
        return try (reply.array ?? []).map { element in
            let object = try #require(
                try JSONSerialization.jsonObject(with: Data((element.string ?? "").utf8)) as? [String: Any]
            )
            return object.filter { !($0.value is NSNull) }
        }
    }

    @Test("a missing list is rebuilt and kept with its TTL, served from Redis after, and rebuilt again once expired")
    func rebuiltThenCachedThenExpired() async throws {
        try await APIServers.with { servers in
            let seed = Seeds.plain(1, count: 12)
            try await seed.insert(servers)
            let redis = try await servers.redis()
            defer { redis.close() }
            let key = "tenant-a:history:\(seed.id):recent"
            let reader = try servers.reader(keyPrefix: "tenant-a:")
            try await servers.serve(reader: reader) { client in
                let first = try await client.request("/v1/conversations/\(seed.id)/recent").object
                #expect(first["source"] as? String == "rebuilt")
                #expect(Self.ids(first) == seed.messages[2...].map(\.id))
                #expect(first["conversation_id"] as? String == seed.id)
                let ttl = try #require(try await redis.send("PTTL", RedisArgument(key)).int)
                #expect(ttl > 1_700_000 && ttl <= 1_800_000, "\(ttl)")
                #expect(
                    try await redis.send("GET", RedisArgument("tenant-a:history:\(seed.id):recent:version")).string?
                        .hasPrefix("1 ") == true
                )
                // Element by element what Redis holds, in §3's shape.
                let elements = try await Self.held(key, redis)
                let messages = try #require(first["messages"] as? [[String: Any]])
                #expect(try ConversationReadTests.canonical(messages) == ConversationReadTests.canonical(elements))

                let second = try await client.request("/v1/conversations/\(seed.id)/recent").object
                #expect(second["source"] as? String == "cache")
                #expect(Self.ids(second) == Self.ids(first))

                // The key expires (list and version together, as they do).
                _ = try await redis.send("PEXPIRE", RedisArgument(key), "1")
                _ = try await redis.send("PEXPIRE", RedisArgument("tenant-a:history:\(seed.id):recent:version"), "1")
                try await Task.sleep(for: .milliseconds(20))
                #expect(try await redis.send("EXISTS", RedisArgument(key)).int == 0)
                let third = try await client.request("/v1/conversations/\(seed.id)/recent").object
                #expect(third["source"] as? String == "rebuilt")
                #expect(Self.ids(third) == Self.ids(first))
                #expect(try await redis.send("EXISTS", RedisArgument(key)).int == 1)
            }
            let off = try servers.reader(recentSize: 0)
            try await servers.serve(reader: off) { client in
                let body = try await client.request("/v1/conversations/\(seed.id)/recent").object
                #expect(Self.ids(body).isEmpty && body["source"] as? String == "rebuilt")
            }
        }
    }

    @Test("a rebuild does not replace a newer list that a worker wrote while it ran")
    func neverOverANewerList() async throws {
        try await APIServers.with { servers in
            let seed = Seeds.plain(1, count: 12)
            try await seed.insert(servers)
            let redis = try await servers.redis()
            defer { redis.close() }
            let late = testUUID(0x7777, 1)
            var reader = try servers.reader()
            let settings = reader.cache
            // Between the rebuild's snapshot (version 1) and its write: a worker stores a message
            // (version 2) and, finding the list missing, writes its own snapshot.
            reader.beforeRebuild = {
                let postgres = try await servers.postgres()
                defer { postgres.close() }
                let newer = try await postgres.withSession { session -> CacheWrite in
                    try session.transaction { _ in
                        _ = try session.query(
                            """
                            INSERT INTO messages (id, conversation_id, role, content, created_at, stream_entry)
                            VALUES ($1::uuid, $2::uuid, 'user', 'the late one', '2025-04-02T00:00:00Z', '2-0')
                            """,
                            [late, seed.id]
                        )
                        _ = try session.query(
                            "UPDATE conversations SET cache_version = 2, updated_at = '2025-04-02T00:00:00Z' WHERE id = $1::uuid",
                            [seed.id]
                        )
                    }
                    return try RecentCache.snapshots(of: [seed.id], size: settings.recentSize, in: session)[0]
                }
                #expect(newer.version == 2)
                let connection = try await servers.redis()
                defer { connection.close() }
                _ = try await RecentCache.apply([newer], sessions: [], settings: settings, redis: connection)
            }
            try await servers.serve(reader: reader) { client in
                let body = try await client.request("/v1/conversations/\(seed.id)/recent").object
                #expect(body["source"] as? String == "rebuilt")
                #expect(Self.ids(body) == seed.messages[3...].map(\.id) + [late])
            }
            let version = try await redis.send("GET", RedisArgument("history:\(seed.id):recent:version")).string
            #expect(version?.hasPrefix("2 ") == true, "\(version ?? "nil")")
            #expect(try await Self.held("history:\(seed.id):recent", redis).last?["id"] as? String == late)
        }
    }

    @Test("an archived conversation's list comes from its file; nothing is written to Redis")
    func archivedFromItsFile() async throws {
        try await APIServers.with { servers in
            let seed = Seeds.plain(1, count: 12)
            try await seed.insert(servers)
            try await servers.archive(seed.id)
            let redis = try await servers.redis()
            defer { redis.close() }
            try await servers.serve { client in
                let response = try await client.request("/v1/conversations/\(seed.id)/recent")
                #expect(response.status == .ok)
                let body = try response.object
                #expect(body["source"] as? String == "archive")
                #expect(Self.ids(body) == seed.messages[2...].map(\.id))
                let messages = try #require(body["messages"] as? [[String: Any]])
                #expect(
                    messages.allSatisfy { $0["contexts"] == nil && $0["session_id"] == nil && $0["arrival"] == nil }
                )
                #expect(messages.last?["created_at"] as? String == "2025-04-01T00:00:11.000000Z")
            }
            #expect(try await redis.send("DBSIZE").int == 0)
        }
    }
}
