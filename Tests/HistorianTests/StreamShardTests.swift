import Foundation
import Gzip
import Logging
import Testing

@testable import Historian

/// Sharded streams without servers (contract §9): the shard a conversation goes to, the shards
/// each worker reads, and the configuration that turns them on.
struct StreamShardTests {
    @Test("crc32 is zlib's (IEEE): the check value of \"123456789\", and of nothing")
    func crcIsTheUsualOne() {
        #expect(crc32(Array("123456789".utf8)) == 0xCBF4_3926)
        #expect(crc32([UInt8]()) == 0)
    }

    @Test("a conversation's shard is crc32(conversation_id) mod N, the same every time; one shard is index 0")
    func shardOfAConversation() {
        let conversation = "01930200-0000-7000-8000-000000000001"
        let expected = Int(crc32(Array(conversation.utf8)) % 16)
        #expect(StreamShard.index(conversationID: conversation, count: 16) == expected)
        #expect(StreamShard.index(conversationID: conversation, count: 1) == 0)
        // Spread: 1,600 conversations over 16 shards, none empty and none with twice its share.
        var counts = [Int](repeating: 0, count: 16)
        for number in 0..<1_600 {
            counts[StreamShard.index(conversationID: UUID().uuidString.lowercased() + "\(number)", count: 16)] += 1
        }
        #expect(counts.allSatisfy { $0 > 0 && $0 < 200 }, "\(counts)")
        #expect(StreamShard.key("chat:messages", index: 7) == "chat:messages:{7}")
    }

    static func settings(shards: Int, workers: Int) async throws -> IngestSettings {
        let configuration = try await HistorianConfiguration.load(
            flags: ["stream_shards": String(shards), "workers": String(workers)],
            configFile: nil,
            environment: [:]
        )
        return IngestSettings(configuration, once: true)
    }

    @Test("each shard is read by exactly one worker of a process, whatever the counts; more workers than shards share them")
    func workersCoverEveryShard() async throws {
        for (shards, workers) in [(16, 2), (16, 3), (4, 4), (3, 2), (5, 1)] {
            let settings = try await Self.settings(shards: shards, workers: workers)
            #expect(settings.shards.map(\.stream) == (0..<shards).map { "chat:messages:{\($0)}" })
            let read = (0..<workers).flatMap { settings.shards(ofWorker: $0).map(\.stream) }
            #expect(read.sorted() == settings.shards.map(\.stream).sorted(), "\(shards) shards, \(workers) workers")
            #expect(settings.shards.allSatisfy { $0.group == "historian" && $0.dlqStream == "chat:messages:dlq" })
        }
        let shared = try await Self.settings(shards: 2, workers: 5)
        #expect((0..<5).map { shared.shards(ofWorker: $0).map(\.stream) } == [
            ["chat:messages:{0}"], ["chat:messages:{1}"], ["chat:messages:{0}"], ["chat:messages:{1}"], ["chat:messages:{0}"],
        ])
        let single = try await Self.settings(shards: 1, workers: 3)
        #expect(single.shards.map(\.stream) == ["chat:messages"])
        #expect((0..<3).allSatisfy { single.shards(ofWorker: $0).map(\.stream) == ["chat:messages"] })
    }

    static func load(_ flags: [String: String]) async throws -> HistorianConfiguration {
        try await HistorianConfiguration.load(flags: flags, configFile: nil, environment: [:])
    }

    @Test("cluster settings: seeds parsed, hash-tagged key names; LangChain lists, braces in key_prefix and a database refused")
    func clusterConfiguration() async throws {
        let cluster = try await Self.load([
            "redis_cluster": "true", "redis_url": "redis://127.0.0.1:7000,127.0.0.1:7001", "stream_shards": "16",
        ])
        #expect(cluster.redisCluster && cluster.streamShards == 16 && cluster.isSharded)
        #expect(cluster.redactedLines.contains("redis_cluster = true") && cluster.redactedLines.contains("stream_shards = 16"))
        let endpoints = try ServerEndpoints(cluster)
        #expect(endpoints.redisCluster?.seeds.map(\.endpoint.description) == ["127.0.0.1:7000", "127.0.0.1:7001"])
        let cache = CacheSettings(cluster)
        #expect(cache.recentKey("c") == "history:{c}:recent" && cache.sessionKey("s") == "session:{s}")
        #expect(cache.userSessionsKey("u") == "user:{u}:sessions")

        await #expect(throws: HistorianError.self) {
            try await Self.load(["redis_cluster": "true", "langchain_cache": "true"])
        }
        await #expect(throws: HistorianError.self) { try await Self.load(["redis_cluster": "true", "key_prefix": "{app}:"]) }
        await #expect(throws: HistorianError.self) { try await Self.load(["stream_shards": "0"]) }
        await #expect(throws: HistorianError.self) { try await Self.load(["redis_cluster": "maybe"]) }
        // A cluster has one database: a seed naming another is refused.
        await #expect(throws: (any Error).self) {
            try ServerEndpoints(try await Self.load(["redis_cluster": "true", "redis_url": "redis://127.0.0.1:7000/2"]))
        }

        // What does not handle shards yet says so, instead of reading one stream of many.
        #expect(throws: HistorianError.self) { try cluster.requireSingleNode(for: "historian dlq") }
        #expect(throws: HistorianError.self) { try DryRun(configuration: cluster, logger: Logger(label: "test")) }
        let sharded = try await Self.load(["stream_shards": "4"])
        try sharded.requireSingleNode(for: "historian dlq")
        #expect(throws: HistorianError.self) { try DryRun(configuration: sharded, logger: Logger(label: "test")) }
        let plain = try await Self.load([:])
        #expect(!plain.isSharded && CacheSettings(plain).recentKey("c") == "history:c:recent")
        try plain.requireSingleNode(for: "historian dlq")
    }
}
