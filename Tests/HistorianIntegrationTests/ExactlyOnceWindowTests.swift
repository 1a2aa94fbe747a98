import Foundation
import LocalServers
import RedisClient
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The window between a batch's commit and its acknowledgement, held open for real: Redis
/// refuses `XACK` to the daemon (an ACL rule), so it stores and cannot acknowledge; then it is
/// killed with SIGKILL, the rule is lifted, and a new process takes over its pending entries.
@Suite(.serialized)
struct ExactlyOnceWindowTests {
    @Test("committed, acknowledgement refused, SIGKILL, restart: stored once, counted as repeats, no dead letter")
    func storedMessages() async throws {
        try await TestEnvironment.with { environment in
            try await environment.migrate()
            let redis = try await environment.redis()
            defer { redis.close() }
            _ = try await redis.send("ACL", "SETUSER", "default", "-xack")

            let messages = Producer.workload(count: 300, conversations: 12, seed: 91)
            try await Producer.append(messages, redis: redis)
            let first = try HistorianProcess(["run", "--consumer", "window"], environment: environment.historianEnvironment)
            defer { first.signal(SIGKILL) }
            try await eventually("every message committed", timeout: .seconds(60)) {
                try await environment.scalar("SELECT count(*) FROM messages") == messages.count
            }
            // The cache script acknowledges the batch; Redis refuses its XACK, and the script with it.
            try await eventually("the acknowledgement refused", timeout: .seconds(30)) {
                first.errorOutput.contains("can't run this command") && first.errorOutput.contains("refreshing the cache failed")
            }
            first.signal(SIGKILL)
            _ = try await first.wait(timeout: .seconds(10))
            #expect(try await environment.pendingCount() == messages.count, "nothing acknowledged before the kill")

            _ = try await redis.send("ACL", "SETUSER", "default", "+xack")
            let port = try Loopback.freePort()
            var variables = environment.historianEnvironment
            variables["HISTORIAN_METRICS_ADDRESS"] = "127.0.0.1:\(port)"
            let second = try HistorianProcess(["run", "--consumer", "window"], environment: variables)
            defer { second.signal(SIGKILL) }
            try await eventually("every entry acknowledged", timeout: .seconds(60)) {
                try await environment.pendingCount() == 0
            }
            let metrics = try Prometheus.samples(port: port)
            #expect(metrics["historian_messages_duplicate_total"] == Double(messages.count))
            #expect(metrics["historian_messages_stored_total"] == 0)
            #expect(try await environment.scalar("SELECT count(*) FROM messages") == messages.count)
            #expect(try await environment.scalar("SELECT count(DISTINCT id) FROM messages") == messages.count)
            #expect(try await deadLetterCount(redis) == 0)
            second.signal(SIGTERM)
            #expect(try await second.wait(timeout: .seconds(30)) == 0)
        }
    }

    @Test("a dead letter whose acknowledgement is refused: exactly one dead letter after SIGKILL and restart")
    func deadLetter() async throws {
        try await TestEnvironment.with { environment in
            try await environment.migrate()
            let redis = try await environment.redis()
            defer { redis.close() }
            _ = try await redis.send("ACL", "SETUSER", "default", "-xack")

            let bad: [(String, String)] = [
                ("message_id", "not-a-uuid"), ("conversation_id", Producer.uuid(0x0C, 1)), ("user_id", "u-1"),
                ("role", "user"), ("content", "a message with a bad id"),
            ]
            let ids = try await Producer.appendRaw([bad], redis: redis)
            let first = try HistorianProcess(["run", "--consumer", "window"], environment: environment.historianEnvironment)
            defer { first.signal(SIGKILL) }
            try await eventually("the dead letter's transaction refused", timeout: .seconds(60)) {
                first.errorOutput.contains("NOPERM") && first.errorOutput.contains("acknowledging a batch failed")
            }
            first.signal(SIGKILL)
            _ = try await first.wait(timeout: .seconds(10))
            // The dead letter's XADD and the XACK go together in MULTI/EXEC: neither happened.
            #expect(try await deadLetterCount(redis) == 0)
            #expect(try await environment.pendingCount() == 1)

            _ = try await redis.send("ACL", "SETUSER", "default", "+xack")
            let second = try HistorianProcess(["run", "--consumer", "window"], environment: environment.historianEnvironment)
            defer { second.signal(SIGKILL) }
            try await eventually("the entry acknowledged", timeout: .seconds(60)) {
                try await environment.pendingCount() == 0
            }
            let letters = try await streamRecords(redis, "chat:messages:dlq")
            #expect(letters.count == 1)
            #expect(letters.first?.value("dlq_reason") == "invalid_uuid")
            #expect(letters.first?.value("dlq_source_id") == ids.first)
            #expect(letters.first?.value("content") == "a message with a bad id")
            second.signal(SIGTERM)
            #expect(try await second.wait(timeout: .seconds(30)) == 0)
        }
    }
}
