import Foundation
import LocalServers
import RedisClient
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Redis away for a while, and Redis holding something unexpected under a cache key: neither is
/// bad input, so neither becomes a dead letter.
@Suite(.serialized)
struct RedisOutageTests {
    @Test("Redis stopped for 10 s mid-load: nothing dead-lettered or lost, the daemon alive, recent lists equal PostgreSQL's")
    func tenSecondOutage() async throws {
        try await TestEnvironment.with(redisAppendOnly: true) { environment in
            try await environment.migrate()
            let messages = Producer.workload(count: 6_000, conversations: 60, seed: 93)
            let chunks = stride(from: 0, to: messages.count, by: 500).map { Array(messages[$0..<min($0 + 500, messages.count)]) }
            let daemon = try HistorianProcess(
                ["run", "--workers", "2", "--consumer", "outage"],
                environment: environment.historianEnvironment
            )
            defer { daemon.signal(SIGKILL) }

            var redis = try await environment.redis()
            try await eventually("the workers connected", timeout: .seconds(60)) {
                try await environment.pendingCount() == 0
            }
            for chunk in chunks[0..<6] { try await Producer.append(chunk, redis: redis) }
            redis.close()

            // Down for ten seconds while the workers are busy with those, stopped cleanly (its
            // append-only file keeps every entry).
            try await environment.redisServer.stop()
            let stoppedAt = try await environment.scalar("SELECT count(*) FROM messages")
            try await Task.sleep(for: .seconds(10))
            #expect(daemon.isRunning, "the daemon exited while Redis was down")
            try await environment.redisServer.start()

            redis = try await environment.redis()
            defer { redis.close() }
            for chunk in chunks[6...] { try await Producer.append(chunk, redis: redis) }
            try await eventually("every message stored and acknowledged", timeout: .seconds(120)) {
                let stored = try await environment.scalar("SELECT count(*) FROM messages")
                let pending = try await environment.pendingCount()
                return stored == messages.count && pending == 0
            }
            print("redisOutage: \(stoppedAt) of 3000 messages stored when Redis stopped")
            #expect(daemon.isRunning)
            #expect(try await deadLetterCount(redis) == 0, "dead letters for an outage")
            #expect(try await environment.scalar("SELECT count(DISTINCT id) FROM messages") == messages.count)
            #expect(daemon.errorOutput.contains("failed; retrying"), "the outage left no trace in the log")
            #expect(try await recentListsDiffering(Set(messages.map(\.conversationID)), environment, redis).isEmpty)
            daemon.signal(SIGTERM)
            #expect(try await daemon.wait(timeout: .seconds(30)) == 0)
        }
    }

    @Test("a string where a recent list belongs is removed and the list rebuilt; no dead letter, a warning in the log")
    func wrongTypeCacheKey() async throws {
        try await TestEnvironment.with { environment in
            try await environment.migrate()
            let redis = try await environment.redis()
            defer { redis.close() }
            let messages = Producer.workload(count: 60, conversations: 3, seed: 94)
            let conversation = messages[0].conversationID
            let session = try #require(messages[0].sessionID)
            // Someone else's values under the cache's names: a string for the list, a list for
            // its version, a string for a session hash.
            _ = try await redis.send("SET", RedisArgument("history:\(conversation):recent"), "not a list")
            _ = try await redis.send("RPUSH", RedisArgument("history:\(messages[1].conversationID):recent:version"), "x")
            _ = try await redis.send("SET", RedisArgument("session:\(session)"), "not a hash")

            let first = Array(messages.prefix(30))
            try await Producer.append(first, redis: redis)
            let once = try await HistorianProcess.run(["run", "--once"], environment: environment.historianEnvironment)
            #expect(once.status == 0, "\(once.errors)")
            #expect(once.errors.contains("cache keys held another type"), "\(once.errors.suffix(2000))")
            #expect(try await environment.scalar("SELECT count(*) FROM messages") == first.count)
            #expect(try await environment.pendingCount() == 0)
            #expect(try await deadLetterCount(redis) == 0)
            #expect(try await redis.send("TYPE", RedisArgument("session:\(session)")).string == "hash")
            #expect(try await recentListsDiffering(Set(first.map(\.conversationID)), environment, redis).isEmpty)

            // The repaired lists take the next messages in order, as any other.
            let rest = Array(messages.dropFirst(30))
            try await Producer.append(rest, redis: redis)
            let again = try await HistorianProcess.run(["run", "--once"], environment: environment.historianEnvironment)
            #expect(again.status == 0 && !again.errors.contains("cache keys held another type"))
            #expect(try await recentListsDiffering(Set(messages.map(\.conversationID)), environment, redis).isEmpty)
        }
    }
}
