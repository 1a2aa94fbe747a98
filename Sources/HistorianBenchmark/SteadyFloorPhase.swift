import Foundation
import Historian
import PostgresClient
import RedisClient

/// The least work PostgreSQL and Redis do for messages arriving at the latency run's rate, in
/// batches of the size a worker collects at that rate: the steady-rate counterpart of the
/// ceiling and the Redis floor, and the yardstick of the steady-rate CPU target.
///
/// For `seconds`, three loops run side by side, each on a connection of its own:
/// - the producer and poller of the latency run: every millisecond, one pipeline with the
///   `XADD`s that have fallen due, `XINFO GROUPS` and `XPENDING` (what the latency run's
///   Redis CPU includes too);
/// - the Redis consumer: every `batch / rate` seconds, `XREADGROUP COUNT batch` and one
///   pipeline of the floor's plain cache commands with the `XACK`;
/// - the PostgreSQL writer: every `batch / rate` seconds, the next `batch` messages by `COPY`,
///   one transaction each, committed with `fsync` (a single `COPY` commits by itself).
///
/// Nothing is read back, compared or versioned, and no conversation row is updated: no correct
/// store and cache can do less per message at this rate and batch size on this machine.
struct SteadyFloorPhase {
    let servers: BenchmarkServers
    let workload: Workload
    /// The messages sent, `rate × seconds` of them at most.
    let messages: [WorkloadMessage]
    let rate: Int
    let batch: Int

    static let stream = "steady:messages"
    static let group = "steady"
    static let database = "steady_floor"

    func run() async throws -> SteadyFloorResult {
        let interval = Duration.seconds(Double(batch) / Double(rate))
        let ceiling = CeilingPhase(servers: servers, workload: workload, messages: messages)
        let floor = RedisFloorPhase(servers: servers, workload: workload, messages: messages)
        let chunks = stride(from: 0, to: messages.count, by: batch).map { start in
            ceiling.encodeChunk(start..<min(start + batch, messages.count))
        }
        let postgres = try await servers.freshDatabase(Self.database)
        defer { postgres.close() }
        try await postgres.withSession { session in
            _ = try session.copyIn(
                "COPY conversations (id, user_id, dept_id, title, title_derived_from, created_at, updated_at) FROM STDIN",
                data: ceiling.encodeConversations()
            )
        }
        _ = try await postgres.execute("VACUUM ANALYZE")
        _ = try await postgres.execute("CHECKPOINT")
        let producer = try await servers.redisConnection()
        defer { producer.close() }
        let consumer = try await servers.redisConnection()
        defer { consumer.close() }
        _ = try await producer.send("FLUSHALL")
        _ = try await producer.send("XGROUP", "CREATE", RedisArgument(Self.stream), RedisArgument(Self.group), "$", "MKSTREAM")

        report(
            "steady floor: \(messages.count) messages at \(rate) messages/s in batches of \(batch), "
                + "by COPY and plain Redis commands"
        )
        let before = ServerCPU(servers)
        let start = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await produce(producer, from: start) }
            group.addTask { try await consume(consumer, floor: floor, from: start, every: interval) }
            group.addTask {
                for (index, chunk) in chunks.enumerated() {
                    try await Task.sleep(until: start + interval * index, clock: .continuous)
                    try await Self.copy(chunk, into: postgres)
                }
            }
            try await group.waitForAll()
        }
        let seconds = Double((ContinuousClock.now - start) / .milliseconds(1)) / 1000
        let after = ServerCPU(servers)
        _ = try await producer.send("FLUSHALL")
        let result = SteadyFloorResult(
            rate: rate,
            batch: batch,
            messages: messages.count,
            seconds: seconds,
            postgresCPUSeconds: after.postgres - before.postgres,
            redisCPUSeconds: after.redis - before.redis
        )
        report(
            String(
                format: "steady floor: %.1f s; CPU per message PostgreSQL %.1f µs, Redis %.1f µs",
                seconds, result.postgresCPUPerMessage, result.redisCPUPerMessage
            )
        )
        try await servers.postgres.psql("DROP DATABASE \(Self.database) WITH (FORCE)")
        return result
    }

    /// A batch's rows in one transaction: a lone `COPY` commits by itself, one round trip.
    private static func copy(_ chunk: CeilingPhase.EncodedChunk, into connection: PostgresConnection) async throws {
        try await connection.withSession { session in
            let messages = """
                COPY messages (id, conversation_id, role, content, tokens_used, latency_ms, created_at, metadata,
                    session_id, stream_entry) FROM STDIN
                """
            guard !chunk.contexts.isEmpty else {
                _ = try session.copyIn(messages, data: chunk.messages)
                return
            }
            try session.execute("BEGIN")
            _ = try session.copyIn(messages, data: chunk.messages)
            _ = try session.copyIn(
                "COPY message_contexts (id, message_id, position, doc_id, content, score, metadata) FROM STDIN",
                data: chunk.contexts
            )
            try session.execute("COMMIT")
        }
    }

    /// The latency run's producer and poller, without the bookkeeping: every millisecond, the
    /// `XADD`s that have fallen due, `XINFO GROUPS` and `XPENDING`.
    private func produce(_ redis: RedisConnection, from start: ContinuousClock.Instant) async throws {
        var sent = 0
        let stream = RedisArgument(Self.stream)
        while sent < messages.count {
            let elapsed = Double((ContinuousClock.now - start) / .microseconds(1)) / 1e6
            let due = min(messages.count, Int(elapsed * Double(rate)) + 1)
            var commands: [[RedisArgument]] = messages[sent..<max(sent, due)].map { message in
                ["XADD", stream, "*"] + workload.fields(of: message).flatMap { [RedisArgument($0.0), RedisArgument($0.1)] }
            }
            let appending = commands.count
            commands.append(["XINFO", "GROUPS", stream])
            commands.append(["XPENDING", stream, RedisArgument(Self.group), "-", "+", "10000"])
            let replies = try await redis.pipeline(commands)
            for reply in replies[..<appending] where reply.string == nil {
                throw BenchmarkError("steady floor: XADD failed: \(reply)")
            }
            sent += appending
            try await Task.sleep(for: .milliseconds(1))
        }
    }

    /// Every `interval`, up to a batch of new entries and the floor's cache commands for them;
    /// the entries are the next messages (one producer, one consumer).
    private func consume(
        _ redis: RedisConnection,
        floor: RedisFloorPhase,
        from start: ContinuousClock.Instant,
        every interval: Duration
    ) async throws {
        let stream = RedisArgument(Self.stream)
        var next = 0
        var round = 0
        while next < messages.count {
            round += 1
            try await Task.sleep(until: start + interval * round, clock: .continuous)
            let reply = try await redis.send(
                ["XREADGROUP", "GROUP", RedisArgument(Self.group), "steady", "COUNT", RedisArgument(batch), "STREAMS", stream, ">"]
            )
            let ids = (reply.array?.first?.array?.last?.array ?? []).compactMap { $0.array?.first?.string }
            guard !ids.isEmpty else { continue }
            guard next + ids.count <= messages.count else {
                throw BenchmarkError("steady floor: read more entries than were written")
            }
            let commands = try floor.commands(for: messages[next..<(next + ids.count)])
            next += ids.count
            let replies = try await redis.pipeline(commands + [["XACK", stream, RedisArgument(Self.group)] + ids.map { RedisArgument($0) }])
            if let failed = replies.first(where: { if case .error = $0 { true } else { false } }) {
                throw BenchmarkError("steady floor: a command failed: \(failed)")
            }
        }
    }
}

struct SteadyFloorResult: Codable {
    var rate: Int
    var batch: Int
    var messages: Int
    var seconds: Double
    var postgresCPUSeconds: Double
    var redisCPUSeconds: Double

    var postgresCPUPerMessage: Double { postgresCPUSeconds / Double(max(1, messages)) * 1e6 }
    var redisCPUPerMessage: Double { redisCPUSeconds / Double(max(1, messages)) * 1e6 }
    /// What the two servers spend per message at the least, in µs.
    var cpuPerMessage: Double { postgresCPUPerMessage + redisCPUPerMessage }

    enum CodingKeys: String, CodingKey {
        case rate, batch, messages, seconds
        case postgresCPUSeconds = "postgres_cpu_seconds"
        case redisCPUSeconds = "redis_cpu_seconds"
    }
}
