import Foundation
@testable import Historian
import LocalServers
import Logging
import RedisClient
import Testing

/// The cache's writes on a real local Redis Cluster (contract §9): one script call per
/// conversation, its keys in one slot, the versions guarding each list as on a single Redis.
@Suite(.serialized)
struct ClusterCacheTests {
    static let settings = CacheSettings(recentSize: 5, sessionTTL: .seconds(600), keyPrefix: "app:", cluster: true)

    /// An element in the contract's shape; the script reads its `created_at`.
    static func element(_ conversation: String, _ sequence: Int) -> String {
        let id = UUID().uuidString.lowercased()
        let at = String(format: "2026-12-07T10:%02d:%02d.000000Z", sequence / 60, sequence % 60)
        return #"{"id" : "\#(id)", "conversation_id" : "\#(conversation)", "role" : "user", "created_at" : "\#(at)", "#
            + #""tokens_used" : null, "latency_ms" : null, "content" : "message \#(sequence)", "metadata" : null}"#
    }

    static func withCluster(_ body: (RedisCluster, RedisClusterClient) async throws -> Void) async throws {
        // No replicas: nothing here fails over.
        let cluster = try await RedisCluster.start(replicasPerMaster: 0, nodeTimeoutMilliseconds: 5_000)
        let client = try RedisClusterClient(RedisClusterConfiguration(url: cluster.url), logger: Logger(label: "test"))
        do {
            try await body(cluster, client)
        } catch {
            client.close()
            try? await cluster.destroy()
            throw error
        }
        client.close()
        try await cluster.destroy()
    }

    static func list(_ conversation: String, _ client: RedisClusterClient) async throws -> [String] {
        let key = RedisArgument(settings.recentKey(conversation))
        return try await client.send(["LRANGE", key, "0", "-1"], key: key).array?.compactMap(\.string) ?? []
    }

    @Test("300 conversations and 40 sessions over 3 masters: lists in order, TTLs, a stale delta found, never backwards")
    func writesPerSlot() async throws {
        try await Self.withCluster { cluster, client in
            let conversations = (0..<300).map { _ in UUID().uuidString.lowercased() }
            var elements: [String: [String]] = [:]
            func delta(_ conversation: String, version: Int64, count: Int) -> CacheWrite {
                let new = (0..<count).map { Self.element(conversation, (elements[conversation]?.count ?? 0) + $0) }
                elements[conversation, default: []] += new
                return CacheWrite(mode: .delta, conversationID: conversation, version: version, elements: new)
            }
            let sessions = (0..<40).map { index in
                SessionTouch(
                    sessionID: "s-\(index)", userID: "u-\(index % 7)", deptID: nil, conversationID: conversations[index],
                    at: "2026-12-07T10:00:0\(index % 10).000000Z", first: "2026-12-07T10:00:00.000000Z"
                )
            }
            // A fresh cluster has no script loaded: the calls fall back to EVAL on every master.
            var applied = try await ClusterCache.apply(
                conversations.map { delta($0, version: 1, count: 2) }, sessions: sessions, settings: Self.settings, cluster: client
            )
            #expect(applied.stale.isEmpty)
            applied = try await ClusterCache.apply(
                conversations.map { delta($0, version: 2, count: 4) }, sessions: [], settings: Self.settings, cluster: client
            )
            #expect(applied.stale.isEmpty)
            for conversation in conversations {
                #expect(try await Self.list(conversation, client) == Array(elements[conversation]!.suffix(5)))
            }
            for key in [Self.settings.recentKey(conversations[0]), Self.settings.versionKey(conversations[0]),
                        Self.settings.sessionKey("s-3"), Self.settings.userSessionsKey("u-3")] {
                let ttl = try await client.send(["PTTL", RedisArgument(key)], key: RedisArgument(key)).int ?? -3
                #expect(ttl > 0 && ttl <= 600_000, "\(key): TTL \(ttl)")
            }
            let members = try await client.send(["SMEMBERS", "app:user:{u-3}:sessions"], key: "app:user:{u-3}:sessions").array ?? []
            #expect(Set(members.compactMap(\.string)) == ["s-3", "s-10", "s-17", "s-24", "s-31", "s-38"])
            let user = try await client.send(["HGET", "app:session:{s-3}", "user_id"], key: "app:session:{s-3}").string
            #expect(user == "u-3")

            // Version 4 on top of 2: stale, nothing written.
            let skipping = delta(conversations[0], version: 4, count: 1)
            elements[conversations[0]]!.removeLast()
            applied = try await ClusterCache.apply([skipping], sessions: [], settings: Self.settings, cluster: client)
            #expect(applied.stale == [conversations[0]])
            // A snapshot of version 4 applies; one of version 3 afterwards does not.
            let snapshot = CacheWrite(mode: .snapshot, conversationID: conversations[0], version: 4, elements: ["{\"created_at\" : \"x\"}"])
            _ = try await ClusterCache.apply([snapshot], sessions: [], settings: Self.settings, cluster: client)
            let older = CacheWrite(mode: .snapshot, conversationID: conversations[0], version: 3, elements: [])
            _ = try await ClusterCache.apply([older], sessions: [], settings: Self.settings, cluster: client)
            #expect(try await Self.list(conversations[0], client) == ["{\"created_at\" : \"x\"}"])
            _ = cluster
        }
    }

    @Test("entries of three stream shards acknowledged after the cache, and not while a list is stale")
    func acknowledgesPerShard() async throws {
        try await Self.withCluster { _, client in
            let shards = (0..<3).map { "app:chat:{\($0)}" }
            var pending: [RecentCache.Acknowledge] = []
            for shard in shards {
                let key = RedisArgument(shard)
                _ = try await client.send(["XGROUP", "CREATE", key, "historian", "$", "MKSTREAM"], key: key)
                for index in 0..<10 { _ = try await client.send(["XADD", key, "*", "n", RedisArgument(index)], key: key) }
                let read = try await client.send(["XREADGROUP", "GROUP", "historian", "c", "COUNT", "100", "STREAMS", key, ">"], key: key)
                let entries = read.array?.first?.array?[1].array ?? []
                let ids = entries.compactMap { $0.array?.first?.string.flatMap(StreamID.init) }
                #expect(ids.count == 10)
                pending.append(RecentCache.Acknowledge(stream: shard, group: "historian", ids: ids))
            }
            func pendingCount() async throws -> Int {
                var total = 0
                for shard in shards {
                    let reply = try await client.send(["XPENDING", RedisArgument(shard), "historian"], key: RedisArgument(shard))
                    total += Int(reply.array?.first?.int ?? -1)
                }
                return total
            }
            let conversation = UUID().uuidString.lowercased()
            let stale = CacheWrite(mode: .delta, conversationID: conversation, version: 5, elements: [Self.element(conversation, 0)])
            var applied = try await ClusterCache.apply([stale], sessions: [], acknowledge: pending, settings: Self.settings, cluster: client)
            #expect(!applied.acknowledged && applied.stale == [conversation])
            #expect(try await pendingCount() == 30)
            let fresh = CacheWrite(mode: .snapshot, conversationID: conversation, version: 5, elements: [Self.element(conversation, 0)])
            applied = try await ClusterCache.apply([fresh], sessions: [], acknowledge: pending, settings: Self.settings, cluster: client)
            #expect(applied.acknowledged && applied.stale.isEmpty)
            #expect(try await pendingCount() == 0)
        }
    }

    @Test("another type under a list or a user's set: its keys removed, the list then stale; a flushed script is sent again")
    func repairsWrongTypes() async throws {
        try await Self.withCluster { _, client in
            let conversation = UUID().uuidString.lowercased()
            let list = RedisArgument(Self.settings.recentKey(conversation))
            let users = RedisArgument(Self.settings.userSessionsKey("u-1"))
            let first = CacheWrite(mode: .delta, conversationID: conversation, version: 1, elements: [Self.element(conversation, 0)])
            _ = try await ClusterCache.apply([first], sessions: [], settings: Self.settings, cluster: client)
            _ = try await client.send(["SET", list, "not a list"], key: list)
            _ = try await client.send(["SET", users, "not a set"], key: users)
            _ = try await client.sendToMasters(["SCRIPT", "FLUSH"])
            let touch = SessionTouch(
                sessionID: "s-1", userID: "u-1", deptID: "d", conversationID: conversation,
                at: "2026-12-07T10:00:00.000000Z", first: "2026-12-07T10:00:00.000000Z"
            )
            let second = CacheWrite(mode: .delta, conversationID: conversation, version: 2, elements: [Self.element(conversation, 1)])
            let applied = try await ClusterCache.apply([second], sessions: [touch], settings: Self.settings, cluster: client)
            #expect(Set(applied.repaired) == [Self.settings.recentKey(conversation), Self.settings.versionKey(conversation), Self.settings.userSessionsKey("u-1")])
            // The list went with its version: the delta is stale, for a snapshot to rebuild it.
            #expect(applied.stale == [conversation])
            #expect(try await client.send(["EXISTS", list], key: list).int == 0)
            #expect(try await client.send(["SISMEMBER", users, "s-1"], key: users).int == 1)
        }
    }
}
