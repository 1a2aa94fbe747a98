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
            _ = try session.copyIn(CeilingPhase.copyConversations, data: ceiling.encodeConversations())
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
                    try await CeilingPhase.copy(chunk, into: postgres, alone: true)
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
            commands += LatencyPhase.pollCommands(stream: Self.stream, group: Self.group)
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
        var next = 0
        var round = 0
        while next < messages.count {
            round += 1
            try await Task.sleep(until: start + interval * round, clock: .continuous)
            next += try await floor.serveBatch(redis, stream: Self.stream, group: Self.group, count: batch, from: next)
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
