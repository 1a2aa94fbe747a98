import Foundation
import Historian
import LocalServers
import PostgresClient
import RedisClient

#if canImport(Glibc)
import Glibc
#endif

// MARK: - Ceiling

/// `COPY` of the workload's rows straight into Historian's tables, with their indexes and
/// constraints: the fastest way to get the same data into PostgreSQL, and the yardstick the
/// drain is held against. Measured with one connection and with two in parallel; the better
/// of the two is the ceiling.
struct CeilingPhase {
    let servers: BenchmarkServers
    let workload: Workload
    let messages: [WorkloadMessage]

    /// Rows per COPY statement (and transaction).
    static let chunkRows = 20_000

    func run() async throws -> CeilingResult {
        report("ceiling: encoding rows for COPY")
        let conversationRows = encodeConversations()
        let chunks = stride(from: 0, to: messages.count, by: Self.chunkRows).map { start in
            encodeChunk(start..<min(start + Self.chunkRows, messages.count))
        }
        var result = CeilingResult()
        for streams in [1, 2] {
            let database = "ceiling_\(streams)"
            let connections = try await (0..<streams).asyncMap { index in
                index == 0 ? try await servers.freshDatabase(database) : try await servers.postgresConnection(database)
            }
            defer { connections.forEach { $0.close() } }
            _ = try await connections[0].execute("CHECKPOINT")
            let cpuBefore = ServerCPU(servers)
            let machine = MachineProbe()
            defer { machine.cancel() }
            let start = monotonicNanoseconds()
            try await connections[0].withSession { session in
                _ = try session.copyIn(Self.copyConversations, data: conversationRows)
            }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (index, connection) in connections.enumerated() {
                    let mine = stride(from: index, to: chunks.count, by: streams).map { chunks[$0] }
                    group.addTask {
                        for chunk in mine {
                            try await Self.copy(chunk, into: connection)
                        }
                    }
                }
                try await group.waitForAll()
            }
            let seconds = Double(monotonicNanoseconds() - start) / 1e9
            // The backends of this round are still connected, so their CPU time is counted.
            let cpu = ServerCPU(servers).postgres - cpuBefore.postgres
            let machineResult = await machine.stop(origin: start)
            let rate = Double(messages.count) / seconds
            report(
                "ceiling, \(streams) connection(s): \(Int(rate)) messages/s (\(String(format: "%.2f", seconds)) s), "
                    + String(format: "PostgreSQL CPU %.1f s", cpu)
            )
            if streams == 1 {
                result.oneConnection = rate
                result.oneConnectionPostgresCPUSeconds = cpu
                result.oneConnectionMachine = machineResult
                try await verifyCount(connections[0])
            } else {
                result.twoConnections = rate
                result.twoConnectionsPostgresCPUSeconds = cpu
                result.twoConnectionsMachine = machineResult
            }
        }
        return result
    }

    private func verifyCount(_ connection: PostgresConnection) async throws {
        let rows = try await connection.query("SELECT count(*) AS count FROM messages")
        guard rows[0, "count"] == String(messages.count) else {
            throw BenchmarkError("ceiling: expected \(messages.count) messages, found \(rows[0, "count"] ?? "none")")
        }
    }

    static let copyConversations =
        "COPY conversations (id, user_id, dept_id, title, title_derived_from, created_at, updated_at) FROM STDIN"
    static let copyMessages = """
        COPY messages (id, conversation_id, role, content, tokens_used, latency_ms, created_at, metadata,
            session_id, stream_entry) FROM STDIN
        """
    static let copyContexts = "COPY message_contexts (id, message_id, position, doc_id, content, score, metadata) FROM STDIN"

    /// A chunk's rows in one transaction; with `alone`, a chunk without contexts is a lone `COPY`,
    /// which commits by itself in one round trip.
    static func copy(_ chunk: EncodedChunk, into connection: PostgresConnection, alone: Bool = false) async throws {
        try await connection.withSession { session in
            if alone, chunk.contexts.isEmpty {
                _ = try session.copyIn(copyMessages, data: chunk.messages)
                return
            }
            try session.execute("BEGIN")
            _ = try session.copyIn(copyMessages, data: chunk.messages)
            if !chunk.contexts.isEmpty {
                _ = try session.copyIn(copyContexts, data: chunk.contexts)
            }
            try session.execute("COMMIT")
        }
    }

    struct EncodedChunk: Sendable {
        var messages: [UInt8] = []
        var contexts: [UInt8] = []
    }

    /// Each conversation as Historian would store it: owner, department, and the explicit title
    /// or the one derived from its first user message.
    func encodeConversations() -> [UInt8] {
        var first: [Int: WorkloadMessage] = [:]
        var firstUser: [Int: WorkloadMessage] = [:]
        for message in messages {
            if first[message.conversation] == nil { first[message.conversation] = message }
            if message.role == "user", firstUser[message.conversation] == nil { firstUser[message.conversation] = message }
        }
        let now = Timestamp.now.rfc3339
        var out: [UInt8] = []
        for (index, conversation) in workload.conversations.enumerated() {
            guard let opening = first[index] else { continue }
            let derived = conversation.title == nil ? firstUser[index] : nil
            CopyText.appendRow(
                [
                    conversation.id, conversation.userID, conversation.deptID,
                    conversation.title ?? derived.flatMap { Title.derive(from: $0.content) },
                    derived.map { Timestamp(milliseconds: $0.createdAt).rfc3339 },
                    Timestamp(milliseconds: opening.createdAt).rfc3339, now,
                ],
                to: &out
            )
        }
        return out
    }

    func encodeChunk(_ range: Range<Int>) -> EncodedChunk {
        var chunk = EncodedChunk()
        for index in range {
            let message = messages[index]
            CopyText.appendRow(
                [
                    message.id, workload.conversations[message.conversation].id, message.role, message.content,
                    message.tokensUsed.map(String.init), message.latencyMS.map(String.init),
                    Timestamp(milliseconds: message.createdAt).rfc3339, message.metadata,
                    workload.conversations[message.conversation].sessionID, "\(message.createdAt)-\(index)",
                ],
                to: &chunk.messages
            )
            for (position, context) in message.contexts.enumerated() {
                let number = String(index * 4 + position, radix: 16)
                CopyText.appendRow(
                    [
                        "00000000-0000-4000-8000-" + String(repeating: "0", count: 12 - number.count) + number,
                        message.id, String(position + 1), context.docID, context.content, String(context.score),
                        #"{"page":\#(context.page)}"#,
                    ],
                    to: &chunk.contexts
                )
            }
        }
        return chunk
    }
}

struct CeilingResult: Codable {
    var oneConnection = 0.0
    var twoConnections = 0.0
    /// CPU time of every PostgreSQL process during each round.
    var oneConnectionPostgresCPUSeconds = 0.0
    var twoConnectionsPostgresCPUSeconds = 0.0
    /// The whole machine's CPU during each round.
    var oneConnectionMachine: MachineProbeResult?
    var twoConnectionsMachine: MachineProbeResult?
    /// The better of the two: what PostgreSQL can take on this machine.
    var messagesPerSecond: Double { max(oneConnection, twoConnections) }
    /// The lesser of the two rounds' PostgreSQL CPU time: the least it spent to take in the
    /// messages (one connection usually spends less per message, two finish sooner).
    var postgresCPUSeconds: Double {
        min(oneConnectionPostgresCPUSeconds, twoConnectionsPostgresCPUSeconds)
    }

    enum CodingKeys: String, CodingKey {
        case oneConnection = "one_connection_messages_per_second"
        case twoConnections = "two_connections_messages_per_second"
        case oneConnectionPostgresCPUSeconds = "one_connection_postgres_cpu_seconds"
        case twoConnectionsPostgresCPUSeconds = "two_connections_postgres_cpu_seconds"
        case oneConnectionMachine = "one_connection_machine"
        case twoConnectionsMachine = "two_connections_machine"
    }
}

// MARK: - Redis floor

/// The least Redis work the contract asks for each message, measured: the same entries read
/// with `XREADGROUP` in batches of Historian's default size, and per batch one pipeline of plain
/// commands with the cache writes of §3 and the `XACK`. Per conversation `RPUSH`, `LTRIM` and
/// `PEXPIRE` of its recent list; per session `HSET` and `PEXPIRE` of its hash, `SADD` and
/// `PEXPIRE` of its user's set. Nothing is read back or compared first, so the list may go
/// backwards and no version is kept: this is a floor, not a correct cache. With the ceiling's
/// PostgreSQL CPU it bounds what any drain can reach on this machine.
struct RedisFloorPhase {
    let servers: BenchmarkServers
    let workload: Workload
    let messages: [WorkloadMessage]

    /// Historian's default `batch_size`.
    static let batchSize = 500
    /// Historian's default key names, list size and TTL.
    static let cache = CacheSettings()
    static let ttlMilliseconds = RedisArgument(String(cache.sessionTTL.components.seconds * 1000))

    func run() async throws -> RedisFloorResult {
        let redis = try await servers.redisConnection()
        defer { redis.close() }
        _ = try await redis.send("FLUSHALL")
        try await prefill(redis, with: messages, of: workload, phase: "Redis floor")
        _ = try await redis.send("XGROUP", "CREATE", "chat:messages", "floor", "0")

        report("Redis floor: reading and writing the cache with plain commands")
        let before = ServerCPU(servers)
        let start = monotonicNanoseconds()
        var next = 0
        while true {
            let read = try await serveBatch(redis, stream: "chat:messages", group: "floor", count: Self.batchSize, from: next)
            guard read > 0 else { break }
            next += read
        }
        let seconds = Double(monotonicNanoseconds() - start) / 1e9
        let cpu = ServerCPU(servers).redis - before.redis
        guard next == messages.count else {
            throw BenchmarkError("Redis floor: read \(next) of \(messages.count) entries")
        }
        _ = try await redis.send("FLUSHALL")
        report(String(format: "Redis floor: Redis CPU %.1f s (%.1f µs per message) in %.1f s", cpu, cpu / Double(messages.count) * 1e6, seconds))
        return RedisFloorResult(redisCPUSeconds: cpu, batchSize: Self.batchSize)
    }

    /// Reads up to `count` new entries of `stream` as the group's only consumer, and sends their
    /// cache writes and the `XACK` in one pipeline; returns how many it read. One consumer reads
    /// the stream in order, so the entries are the messages from `next` on.
    func serveBatch(_ redis: RedisConnection, stream: String, group: String, count: Int, from next: Int) async throws -> Int {
        let reply = try await redis.send(
            ["XREADGROUP", "GROUP", RedisArgument(group), "floor", "COUNT", RedisArgument(count), "STREAMS", RedisArgument(stream), ">"]
        )
        let ids = (reply.array?.first?.array?.last?.array ?? []).compactMap { $0.array?.first?.string }
        guard !ids.isEmpty else { return 0 }
        guard next + ids.count <= messages.count else {
            throw BenchmarkError("Redis floor: read more entries than were written")
        }
        let acknowledge: [RedisArgument] = ["XACK", RedisArgument(stream), RedisArgument(group)] + ids.map { RedisArgument($0) }
        let replies = try await redis.pipeline(try commands(for: messages[next..<(next + ids.count)]) + [acknowledge])
        if let failed = replies.first(where: { if case .error = $0 { true } else { false } }) {
            throw BenchmarkError("Redis floor: a command failed: \(failed)")
        }
        return ids.count
    }

    /// The batch's cache writes: each conversation's messages in one `RPUSH`, each session's
    /// latest message in one `HSET`.
    private func commands(for batch: ArraySlice<WorkloadMessage>) throws -> [[RedisArgument]] {
        var order: [Int] = []
        var elements: [Int: [RedisArgument]] = [:]
        var latest: [Int: WorkloadMessage] = [:]
        for message in batch {
            if elements[message.conversation] == nil { order.append(message.conversation) }
            elements[message.conversation, default: []].append(RedisArgument(try element(message)))
            latest[message.conversation] = message
        }
        var commands: [[RedisArgument]] = []
        commands.reserveCapacity(7 * order.count)
        for index in order {
            let key = RedisArgument(Self.cache.recentKey(workload.conversations[index].id))
            commands.append(["RPUSH", key] + elements[index]!)
            commands.append(["LTRIM", key, RedisArgument(-Self.cache.recentSize), "-1"])
            commands.append(["PEXPIRE", key, Self.ttlMilliseconds])
        }
        // Sessions belong to conversations in this workload, one each.
        for index in order {
            let conversation = workload.conversations[index]
            let at = RedisArgument(Timestamp(milliseconds: latest[index]!.createdAt).rfc3339)
            let session = RedisArgument(Self.cache.sessionKey(conversation.sessionID))
            let users = RedisArgument(Self.cache.userSessionsKey(conversation.userID))
            commands.append(
                [
                    "HSET", session, "user_id", RedisArgument(conversation.userID), "dept_id",
                    RedisArgument(conversation.deptID ?? ""), "conversation_id", RedisArgument(conversation.id),
                    "created_at", at, "last_active", at,
                ]
            )
            commands.append(["PEXPIRE", session, Self.ttlMilliseconds])
            commands.append(["SADD", users, RedisArgument(conversation.sessionID)])
            commands.append(["PEXPIRE", users, Self.ttlMilliseconds])
        }
        return commands
    }

    /// The contract's element, as Historian builds it (with the metadata as the producer wrote it).
    private func element(_ message: WorkloadMessage) throws -> String {
        let fields = workload.fields(of: message).map { StreamEntry.Field(name: Array($0.0.utf8), value: Array($0.1.utf8)) }
        let entry = StreamEntry(id: StreamID(milliseconds: UInt64(message.createdAt), sequence: 0), fields: fields)
        switch EntryValidator().validate(entry) {
        case .success(let incoming): return RecentCache.element(of: incoming, metadata: incoming.metadata)
        case .failure(let rejection): throw BenchmarkError("Redis floor: a generated message is invalid: \(rejection.detail)")
        }
    }
}

struct RedisFloorResult: Codable {
    var redisCPUSeconds: Double
    var batchSize: Int

    enum CodingKeys: String, CodingKey {
        case redisCPUSeconds = "redis_cpu_seconds"
        case batchSize = "batch_size"
    }
}

/// Appends every message to `chat:messages`, 1,000 `XADD`s per pipeline.
func prefill(_ redis: RedisConnection, with messages: [WorkloadMessage], of workload: Workload, phase: String) async throws {
    report("\(phase): prefilling the stream with \(messages.count) entries")
    let fillStart = monotonicNanoseconds()
    var start = 0
    while start < messages.count {
        let commands: [[RedisArgument]] = messages[start..<min(start + 1000, messages.count)].map { message in
            ["XADD", "chat:messages", "*"]
                + workload.fields(of: message).flatMap { [RedisArgument($0.0), RedisArgument($0.1)] }
        }
        for reply in try await redis.pipeline(commands) where reply.string == nil {
            throw BenchmarkError("XADD failed: \(reply)")
        }
        start += 1000
    }
    let fillSeconds = Double(monotonicNanoseconds() - fillStart) / 1e9
    report("\(phase): prefilled at \(Int(Double(messages.count) / fillSeconds)) entries/s")
}

// MARK: - Drain

/// A stream prefilled with the whole workload, drained by `historian run --once` with the cache
/// on; timed from the process's start to its exit, and checked afterwards. The daemon leaves
/// its final metrics in a file (`--metrics-file`), from which come the statements, commands and
/// round trips per batch.
struct DrainPhase {
    let servers: BenchmarkServers
    let workload: Workload
    let messages: [WorkloadMessage]
    let executable: String
    let arguments: [String]
    /// The `--workers` in `arguments`, if any, for the results.
    var workers: Int?
    /// A new database of this name is made for the drain.
    var database = "drain"
    /// What the progress lines call this drain.
    var label = "drain"

    func run() async throws -> DrainResult {
        let database = try await servers.freshDatabase(self.database)
        defer { database.close() }
        let redis = try await servers.redisConnection()
        defer { redis.close() }

        // A stream of its own, and no cache left by an earlier phase.
        _ = try await redis.send("FLUSHALL")
        try await prefill(redis, with: messages, of: workload, phase: label)
        _ = try await database.execute("CHECKPOINT")

        // Every command that keeps Redis busy for over a millisecond goes to the slow log: while
        // one runs, Redis serves no other client (a frontend's XADD included).
        for command: [RedisArgument] in [
            ["CONFIG", "SET", "slowlog-log-slower-than", "1000"], ["CONFIG", "SET", "slowlog-max-len", "100000"],
            ["SLOWLOG", "RESET"], ["CONFIG", "RESETSTAT"],
        ] {
            _ = try await redis.send(command)
        }

        report("\(label): historian run --once \(arguments.joined(separator: " "))")
        let log = try temporaryFile("historian-drain")
        let metricsFile = try temporaryFile("historian-drain-metrics", suffix: ".prom")
        defer { unlink(metricsFile) }
        let serversBefore = ServerCPU(servers)
        let probe = DiskProbe(directory: servers.postgres.directory)
        defer { probe.cancel() }
        let machine = MachineProbe()
        defer { machine.cancel() }
        let timeStart = monotonicNanoseconds()
        let daemon = try ChildProcess(
            executable: executable,
            arguments: [
                "run", "--once", "--redis-url", servers.redis.url, "--postgres-url",
                servers.postgres.url(database: self.database), "--metrics-file", metricsFile,
            ] + arguments,
            standardError: log
        )
        // VmHWM only grows; the last reading before the exit is the peak, give or take the
        // last 20 ms.
        var peakRSS = 0
        let deadline = ContinuousClock.now + .seconds(Int64(messages.count / 500 + 600))
        while daemon.isRunning {
            peakRSS = max(peakRSS, daemon.peakResidentBytes ?? 0)
            if ContinuousClock.now > deadline {
                daemon.signal(SIGKILL)
                throw BenchmarkError("\(label): historian did not finish; its log is \(log)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        let status = daemon.exitStatus ?? -1
        let seconds = Double(monotonicNanoseconds() - timeStart) / 1e9
        let disk = try await probe.stop(origin: timeStart)
        let machineResult = await machine.stop(origin: timeStart)
        // Lets the historian's backends exit and the postmaster reap them, so their CPU counts.
        try await Task.sleep(for: .milliseconds(300))
        let serversAfter = ServerCPU(servers)
        guard status == 0 else {
            throw BenchmarkError("\(label): historian exited with status \(status); its log is \(log)")
        }
        keepLogIfNotEmpty(log)
        let traffic = try BatchTraffic(exposition: String(contentsOfFile: metricsFile, encoding: .utf8))
        let stored = try await database.query("SELECT count(*) AS count FROM messages")[0, "count"].flatMap { Int($0) } ?? -1
        let deadLetters = try await redis.send("XLEN", "chat:messages:dlq").int ?? -1
        guard stored == messages.count, deadLetters == 0 else {
            throw BenchmarkError("\(label): \(stored) of \(messages.count) messages stored, \(deadLetters) dead letters")
        }
        let usage = daemon.resourceUsage
        let pauses = try await RedisPauses.read(redis)
        let cpuSeconds = (usage?.userSeconds ?? 0) + (usage?.systemSeconds ?? 0)
        let postgresCPUSeconds = serversAfter.postgres - serversBefore.postgres
        let redisCPUSeconds = serversAfter.redis - serversBefore.redis
        let result = DrainResult(
            messages: messages.count,
            workers: workers,
            messagesPerSecond: Double(messages.count) / seconds,
            seconds: seconds,
            peakRSSBytes: peakRSS,
            cpuSeconds: cpuSeconds,
            postgresCPUSeconds: postgresCPUSeconds,
            redisCPUSeconds: redisCPUSeconds,
            cpuPerMessage: CPUPerMessage(
                historianSeconds: cpuSeconds,
                postgresSeconds: postgresCPUSeconds,
                redisSeconds: redisCPUSeconds,
                messages: messages.count
            ),
            traffic: traffic,
            disk: disk,
            machine: machineResult,
            redisPauses: pauses
        )
        report(
            "\(label): \(Int(result.messagesPerSecond)) messages/s, peak RSS \(result.peakRSSBytes / 1_048_576) MiB, "
                + String(
                    format: "CPU: historian %.1f s, PostgreSQL %.1f s, Redis %.1f s",
                    result.cpuSeconds,
                    result.postgresCPUSeconds,
                    result.redisCPUSeconds
                )
        )
        return result
    }

    /// `run()`, then the drain's database dropped: its rows are not needed again, and their
    /// disk space may be.
    func runDroppingDatabase() async throws -> DrainResult {
        let result = try await run()
        try await servers.postgres.psql("DROP DATABASE \(database) WITH (FORCE)")
        return result
    }
}

struct DrainResult: Encodable {
    var messages: Int
    /// The drain's `--workers`; nil: the daemon's default.
    var workers: Int?
    var messagesPerSecond: Double
    var seconds: Double
    var peakRSSBytes: Int
    /// The historian process's own CPU time, user plus system.
    var cpuSeconds: Double
    /// CPU time of every PostgreSQL process (postmaster, backends, background workers) meanwhile.
    var postgresCPUSeconds: Double
    /// CPU time of redis-server meanwhile.
    var redisCPUSeconds: Double
    /// The three CPU times per message stored.
    var cpuPerMessage: CPUPerMessage
    /// What the ingest workers sent to the servers, from the daemon's final metrics.
    var traffic: BatchTraffic?
    /// `fdatasync` times on PostgreSQL's disk meanwhile.
    var disk: DiskProbeResult?
    /// The whole machine's CPU meanwhile.
    var machine: MachineProbeResult?
    /// How long Redis was kept busy by single commands meanwhile.
    var redisPauses: RedisPauses?

    enum CodingKeys: String, CodingKey {
        case messages, workers
        case messagesPerSecond = "messages_per_second"
        case seconds
        case peakRSSBytes = "peak_rss_bytes"
        case cpuSeconds = "historian_cpu_seconds"
        case postgresCPUSeconds = "postgres_cpu_seconds"
        case redisCPUSeconds = "redis_cpu_seconds"
        case cpuPerMessage = "cpu_us_per_message"
        case traffic
        case disk, machine
        case redisPauses = "redis_pauses"
    }
}

/// CPU seconds (user plus system) the servers have used so far, from /proc. PostgreSQL's is the
/// postmaster's own, its reaped children's (backends that have exited), and its live children's.
struct ServerCPU {
    var postgres = 0.0
    var redis = 0.0

    init(_ servers: BenchmarkServers) {
        if let pid = servers.redis.pid, let stat = Self.stat(pid) {
            redis = stat.own
        }
        guard let postmaster = servers.postgres.postmasterPID, let stat = Self.stat(postmaster) else { return }
        postgres = stat.own + stat.children
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        for entry in entries {
            guard let pid = pid_t(entry), let child = Self.stat(pid), child.parent == postmaster else { continue }
            postgres += child.own
        }
    }

    /// Fields of `/proc/<pid>/stat`: the parent, the process's CPU time, and its reaped children's.
    static func stat(_ pid: pid_t) -> (parent: pid_t, own: Double, children: Double)? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = text.lastIndex(of: ")")
        else { return nil }
        // After "pid (comm) ": state, ppid, …; utime, stime, cutime, cstime are fields 14–17.
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 15, let parent = pid_t(fields[1]) else { return nil }
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        let values = fields[11...14].map { (Double($0) ?? 0) / ticks }
        return (parent, values[0] + values[1], values[2] + values[3])
    }
}

// MARK: - Latency

/// A producer appends at a fixed rate to a stream a running `historian run` consumes, and
/// watches the consumer group to note when each entry is acknowledged. Historian
/// acknowledges an entry only after its message is committed and the cache refreshed, so the
/// time from XADD to acknowledgement is the time to committed-and-cached. The daemon's metrics,
/// scraped as the producer starts and once every entry is acknowledged, give the statements,
/// commands and round trips per batch meanwhile.
struct LatencyPhase {
    let servers: BenchmarkServers
    let messages: [[(String, String)]]
    let rate: Int
    let executable: String
    let arguments: [String]
    /// Whether the database still needs the schema (when the drain did not run first).
    let migrate: Bool
    /// Where each sample goes as CSV, if anywhere.
    let samplesPath: String?

    static let stream = "bench:latency"
    static let group = "historian"

    func run() async throws -> LatencyResult {
        if migrate {
            try await servers.freshDatabase("drain").close()
        }
        // The phase measures steady ingest, not the aftermath of the drain's bulk load: the
        // vacuum that the drain's inserts call for is done now (autovacuum would otherwise start
        // it during the phase, at a time that varies from run to run), and, as before the drain,
        // the previous writes are on disk, so that writing them back does not share the disk
        // with this phase's commits (`sync` writes back whatever else is waiting).
        let settle = try await servers.postgresConnection("drain")
        _ = try await settle.execute("VACUUM ANALYZE")
        _ = try await settle.execute("CHECKPOINT")
        settle.close()
        sync()
        let log = try temporaryFile("historian-latency")
        // The endpoint on a free port, unless the daemon's options name one.
        var endpoint: [String] = []
        let metricsPort: Int
        if let address = MetricsScrape.address(in: arguments) {
            guard let port = address.split(separator: ":").last.flatMap({ Int($0) }) else {
                throw BenchmarkError("latency: the phase reads the daemon's metrics, which --metrics-address \"\(address)\" turns off")
            }
            metricsPort = port
        } else {
            metricsPort = try Loopback.freePort()
            endpoint = ["--metrics-address", "127.0.0.1:\(metricsPort)"]
        }
        let daemon = try ChildProcess(
            executable: executable,
            arguments: [
                "run", "--redis-url", servers.redis.url, "--postgres-url", servers.postgres.url(database: "drain"),
                "--stream", Self.stream, "--dlq-stream", Self.stream + ":dlq",
            ] + endpoint + arguments,
            standardError: log
        )
        defer { daemon.signal(SIGKILL) }
        let redis = try await servers.redisConnection()
        defer { redis.close() }
        try await waitUntilReading(redis, daemon: daemon, log: log)

        report("latency: \(rate) messages/s for \(messages.count / max(1, rate)) s")
        let serversBefore = ServerCPU(servers)
        let ownBefore = ServerCPU.stat(getpid())?.own ?? 0
        let probe = DiskProbe(directory: servers.postgres.directory)
        defer { probe.cancel() }
        let machine = MachineProbe()
        defer { machine.cancel() }
        let watcher = try await servers.postgresConnection("drain")
        defer { watcher.close() }
        let autovacuum = AutovacuumProbe(connection: watcher)
        defer { autovacuum.cancel() }
        let trafficBefore = try BatchTraffic(exposition: MetricsScrape.get(port: metricsPort))
        let (samples, achievedRate) = try await produceAndWatch(redis)
        let traffic = try BatchTraffic(exposition: MetricsScrape.get(port: metricsPort)) - trafficBefore
        let firstSent = samples.lazy.map(\.sent).min() ?? 0
        let disk = try await probe.stop(origin: firstSent)
        let machineResult = await machine.stop(origin: firstSent)
        let autovacuumRuns = await autovacuum.stop(origin: firstSent)
        let serversAfter = ServerCPU(servers)
        let ownAfter = ServerCPU.stat(getpid())?.own ?? 0
        daemon.signal(SIGTERM)
        guard try await daemon.wait(timeout: .seconds(30)) == 0 else {
            throw BenchmarkError("latency: historian did not exit cleanly; its log is \(log)")
        }
        keepLogIfNotEmpty(log)
        if let samplesPath { try writeSamples(samples, to: samplesPath) }
        var result = LatencyResult(rate: rate, sorted: samples.map(\.latency).sorted(), achievedRate: achievedRate)
        // The historian's figure includes its start and its exit, which take a few milliseconds.
        let usage = daemon.resourceUsage
        result.cpuSeconds = (usage?.userSeconds ?? 0) + (usage?.systemSeconds ?? 0)
        result.postgresCPUSeconds = serversAfter.postgres - serversBefore.postgres
        result.redisCPUSeconds = serversAfter.redis - serversBefore.redis
        result.benchmarkCPUSeconds = ownAfter - ownBefore
        result.cpuPerMessage = CPUPerMessage(
            historianSeconds: result.cpuSeconds ?? 0,
            postgresSeconds: result.postgresCPUSeconds ?? 0,
            redisSeconds: result.redisCPUSeconds ?? 0,
            messages: result.count
        )
        result.traffic = traffic
        result.disk = disk
        result.machine = machineResult
        result.autovacuum = autovacuumRuns
        result.windows = LatencyWindow.split(
            samples, origin: firstSent, disk: disk, machine: machineResult, autovacuum: autovacuumRuns
        )
        result.streamLength = try await redis.send("XLEN", RedisArgument(Self.stream)).int.map { Int($0) }
        report(
            "latency: p50 \(format(result.p50)) ms, p99 \(format(result.p99)) ms, max \(format(result.max)) ms "
                + "over \(result.count) messages"
        )
        return result
    }

    private func waitUntilReading(_ redis: RedisConnection, daemon: ChildProcess, log: String) async throws {
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            guard daemon.isRunning else { throw BenchmarkError("latency: historian exited early; its log is \(log)") }
            let reply = try? await redis.send("XINFO", "CONSUMERS", RedisArgument(Self.stream), RedisArgument(Self.group))
            if let consumers = reply?.array, !consumers.isEmpty { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw BenchmarkError("latency: historian did not start reading within 30 s; its log is \(log)")
    }

    /// Appends the messages on schedule and watches the consumer group, on one connection in one
    /// loop: every millisecond, one pipeline sends the `XADD`s that are due by then and reads the
    /// group's state. An entry at or below the group's last-delivered ID that is no longer
    /// pending has been acknowledged.
    ///
    /// The producer and the poller share the two cores with what they measure, so they wake as
    /// rarely as the 1 ms resolution allows. The messages due in a millisecond go out together,
    /// and each one's latency counts from the moment its pipeline is sent.
    /// What the poller asks every millisecond besides the due `XADD`s: the group's last-delivered
    /// ID and its pending entries (which show when each entry is acknowledged).
    static func pollCommands(stream: String, group: String) -> [[RedisArgument]] {
        [["XINFO", "GROUPS", RedisArgument(stream)], ["XPENDING", RedisArgument(stream), RedisArgument(group), "-", "+", "10000"]]
    }

    private func produceAndWatch(_ redis: RedisConnection) async throws -> (samples: [LatencySample], achievedRate: Double) {
        var samples: [LatencySample] = []
        samples.reserveCapacity(messages.count)
        // Every entry sent, in ID order (one producer: also the sending order), and how many of
        // them the group has delivered.
        var sent: [(id: StreamID, sent: UInt64)] = []
        sent.reserveCapacity(messages.count)
        var delivered = 0
        var waiting: [(id: StreamID, sent: UInt64)] = []
        var producing: UInt64 = 0
        let start = monotonicNanoseconds()
        var lastProgress = ContinuousClock.now
        while true {
            let due = min(messages.count, Int(Double(monotonicNanoseconds() - start) * Double(rate) / 1e9) + 1)
            var commands: [[RedisArgument]] = messages[sent.count..<max(sent.count, due)].map { fields in
                ["XADD", RedisArgument(Self.stream), "*"] + fields.flatMap { [RedisArgument($0.0), RedisArgument($0.1)] }
            }
            let appending = commands.count
            commands += Self.pollCommands(stream: Self.stream, group: Self.group)
            let time = monotonicNanoseconds()
            let replies = try await redis.pipeline(commands)
            let now = monotonicNanoseconds()
            for reply in replies[..<appending] {
                guard let id = reply.string.flatMap(StreamID.init) else { throw BenchmarkError("XADD failed: \(reply)") }
                sent.append((id, time))
            }
            if appending > 0, sent.count == messages.count { producing = now - start }

            let groupInfo = (replies[appending].array ?? []).map(\.fieldPairs).first { $0["name"]?.string == Self.group }
            guard let lastDelivered = groupInfo?["last-delivered-id"]?.string.flatMap(StreamID.init) else {
                throw BenchmarkError("latency: the consumer group is gone")
            }
            let pendingList = (replies[appending + 1].array ?? []).compactMap { $0.array?.first?.string.flatMap(StreamID.init) }
            let pending = Set(pendingList)
            // With 10,000 listed, entries past the last listed one may be pending too.
            let knownUpTo = pendingList.count >= 10_000 ? pendingList.last! : lastDelivered
            while delivered < sent.count, sent[delivered].id <= lastDelivered {
                waiting.append(sent[delivered])
                delivered += 1
            }
            let before = samples.count
            waiting.removeAll { entry in
                guard entry.id <= knownUpTo, !pending.contains(entry.id) else { return false }
                samples.append(LatencySample(sent: entry.sent, latency: now - entry.sent))
                return true
            }
            if samples.count > before { lastProgress = .now }
            if sent.count == messages.count, samples.count == sent.count {
                return (samples, Double(sent.count) / max(1e-9, Double(producing) / 1e9))
            }
            if ContinuousClock.now - lastProgress > .seconds(30) {
                throw BenchmarkError("latency: no acknowledgement for 30 s (\(samples.count) of \(sent.count))")
            }
            try await Task.sleep(for: .milliseconds(1))
        }
    }

    /// One line per message in sending order: seconds since the first was sent, latency in ms.
    private func writeSamples(_ samples: [LatencySample], to path: String) throws {
        let ordered = samples.sorted { $0.sent < $1.sent }
        let start = ordered.first?.sent ?? 0
        var text = "sent_s,latency_ms\n"
        for sample in ordered {
            text += String(format: "%.4f,%.2f\n", Double(sample.sent - start) / 1e9, Double(sample.latency) / 1e6)
        }
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        report("latency: samples written to \(path)")
    }
}

/// When a message was sent (monotonic nanoseconds) and how long it took to be acknowledged.
struct LatencySample {
    var sent: UInt64
    var latency: UInt64
}

struct LatencyResult: Encodable {
    var rate: Int
    var achievedRate: Double
    var count: Int
    var p50: Double
    var p99: Double
    var p999: Double
    var max: Double
    /// CPU time meanwhile, as in `DrainResult`.
    var cpuSeconds: Double?
    var postgresCPUSeconds: Double?
    var redisCPUSeconds: Double?
    /// The benchmark's own CPU time meanwhile (its producer and its poller), which shares the
    /// cores with the rest.
    var benchmarkCPUSeconds: Double?
    /// The three processes' CPU times per message.
    var cpuPerMessage: CPUPerMessage?
    /// What the ingest workers sent to the servers meanwhile, from the daemon's metrics.
    var traffic: BatchTraffic?

    /// `fdatasync` times on PostgreSQL's disk meanwhile.
    var disk: DiskProbeResult?
    /// The whole machine's CPU meanwhile.
    var machine: MachineProbeResult?
    /// PostgreSQL's autovacuum runs in the benchmark's database meanwhile.
    var autovacuum: [AutovacuumEvent]?
    /// The run in windows of `LatencyWindow.seconds`, each with what the probes saw in it.
    var windows: [LatencyWindow]?
    /// Entries left in the run's stream when it ends: what upkeep has not trimmed (yet).
    var streamLength: Int?

    /// From latencies in nanoseconds, sorted; the figures are in milliseconds.
    init(rate: Int, sorted: [UInt64], achievedRate: Double) {
        self.rate = rate
        self.achievedRate = achievedRate
        count = sorted.count
        p50 = percentile(sorted, 0.50)
        p99 = percentile(sorted, 0.99)
        p999 = percentile(sorted, 0.999)
        max = Double(sorted.last ?? 0) / 1e6
    }

    enum CodingKeys: String, CodingKey {
        case rate = "target_rate"
        case achievedRate = "achieved_rate"
        case count = "messages"
        case p50 = "p50_ms"
        case p99 = "p99_ms"
        case p999 = "p999_ms"
        case max = "max_ms"
        case cpuSeconds = "historian_cpu_seconds"
        case postgresCPUSeconds = "postgres_cpu_seconds"
        case redisCPUSeconds = "redis_cpu_seconds"
        case benchmarkCPUSeconds = "benchmark_cpu_seconds"
        case cpuPerMessage = "cpu_us_per_message"
        case traffic
        case disk, machine, autovacuum, windows
        case streamLength = "stream_length_at_end"
    }
}

/// A few seconds of a latency run: the latencies of the messages sent in it, and whether the
/// disk stalled or the host took the cores meanwhile. Those two hold up every message in flight
/// whatever Historian does, so the windows they spared show what the code itself achieves.
struct LatencyWindow: Codable {
    static let seconds = 5.0

    /// Seconds since the first message.
    var start: Double
    var messages: Int
    var p50: Double
    var p99: Double
    var max: Double
    /// Flushes over `DiskProbe.stallNanoseconds` that overlapped the window.
    var slowFlushes: Int
    /// 100 ms windows of the machine probe with over `MachineProbe.spellMilliseconds` of steal
    /// in the window.
    var stealSpells: Int
    /// Autovacuum runs that overlapped the window. PostgreSQL's own upkeep is part of the
    /// workload, not the machine's doing, so it does not make a window unclean; it is listed
    /// to explain a stall the other probes do not.
    var autovacuumRuns: Int
    /// The page cache's writebacks (`Writeback`) that overlapped the window. Linux writes back
    /// PostgreSQL's pages as it would in production, on this disk, so they do not make a window
    /// unclean either; they too are listed to explain a stall.
    var writebacks: Int

    /// Whether neither the disk nor the host held the window up.
    var isClean: Bool { slowFlushes == 0 && stealSpells == 0 }

    static func split(
        _ samples: [LatencySample],
        origin: UInt64,
        disk: DiskProbeResult,
        machine: MachineProbeResult?,
        autovacuum: [AutovacuumEvent] = []
    ) -> [LatencyWindow] {
        let since = { (sample: LatencySample) in Double(sample.sent - Swift.min(sample.sent, origin)) / 1e9 }
        // The last few messages of a run can fall just past its last whole window; they join it.
        let count = Swift.max(1, Int(((samples.map(since).max() ?? 0) / seconds).rounded()))
        var latencies: [Int: [UInt64]] = [:]
        for sample in samples {
            latencies[Swift.min(count - 1, Int(since(sample) / seconds)), default: []].append(sample.latency)
        }
        return latencies.keys.sorted().map { index in
            let sorted = latencies[index]!.sorted()
            let start = Double(index) * seconds
            // A message sent just before a stall waits through it too, so a stall counts for the
            // window it ends in as well as the one it starts in.
            let overlapping = { (at: Double, milliseconds: Double) in at < start + seconds && at + milliseconds / 1000 > start }
            return LatencyWindow(
                start: start,
                messages: sorted.count,
                p50: percentile(sorted, 0.50),
                p99: percentile(sorted, 0.99),
                max: Double(sorted.last ?? 0) / 1e6,
                slowFlushes: disk.stalls.filter { overlapping($0.at, $0.milliseconds) }.count,
                stealSpells: machine?.spells.filter { overlapping($0.at, 100) }.count ?? 0,
                autovacuumRuns: autovacuum.filter { overlapping($0.at, $0.milliseconds) }.count,
                writebacks: machine?.writebacks.filter { overlapping($0.at, $0.milliseconds) }.count ?? 0
            )
        }
    }

    enum CodingKeys: String, CodingKey {
        case start = "start_s"
        case messages
        case p50 = "p50_ms"
        case p99 = "p99_ms"
        case max = "max_ms"
        case slowFlushes = "slow_flushes"
        case stealSpells = "steal_spells"
        case autovacuumRuns = "autovacuum_runs"
        case writebacks
    }
}

// MARK: - Support

struct BenchmarkError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// The value at `fraction` of `sorted` (nanoseconds, ascending), in milliseconds.
func percentile(_ sorted: [UInt64], _ fraction: Double) -> Double {
    guard !sorted.isEmpty else { return 0 }
    let index = min(sorted.count - 1, Int((Double(sorted.count) * fraction).rounded(.up)) - 1)
    return Double(sorted[max(0, index)]) / 1e6
}

func format(_ milliseconds: Double) -> String {
    String(format: "%.1f", milliseconds)
}

func temporaryFile(_ prefix: String, suffix: String = ".log") throws -> String {
    var template = Array((NSTemporaryDirectory() + "/\(prefix)-XXXXXX\(suffix)").utf8CString)
    let descriptor = template.withUnsafeMutableBufferPointer { mkstemps($0.baseAddress!, Int32(suffix.utf8.count)) }
    guard descriptor >= 0 else { throw BenchmarkError("cannot create a temporary file") }
    close(descriptor)
    return String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// A daemon's log after a clean run: kept, and its path reported, only when it says something
/// (at a lower `--log-level`, say).
func keepLogIfNotEmpty(_ path: String) {
    var status = stat()
    guard stat(path, &status) == 0 else { return }
    if status.st_size == 0 {
        unlink(path)
    } else {
        report("the daemon's log is \(path)")
    }
}

extension Sequence {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async throws -> [T] {
        var results: [T] = []
        for element in self { results.append(try await transform(element)) }
        return results
    }
}

/// How long single commands kept Redis busy during a phase, from its slow log (commands over
/// 1 ms) and its command statistics.
struct RedisPauses: Codable {
    /// Cache script calls (`EVALSHA`, `EVAL`) and their average time.
    var scriptCalls: Int
    var scriptMillisecondsPerCall: Double
    /// Commands that took longer than 1 ms, and the longest of them.
    var commandsOverOneMillisecond: Int
    var longestMilliseconds: Double
    var longestCommand: String

    enum CodingKeys: String, CodingKey {
        case scriptCalls = "script_calls"
        case scriptMillisecondsPerCall = "script_ms_per_call"
        case commandsOverOneMillisecond = "commands_over_1ms"
        case longestMilliseconds = "longest_ms"
        case longestCommand = "longest_command"
    }

    static func read(_ redis: RedisConnection) async throws -> RedisPauses {
        var calls = 0
        var microseconds = 0.0
        let info = try await redis.send("INFO", "commandstats").string ?? ""
        for line in info.split(whereSeparator: \.isNewline)
        where line.hasPrefix("cmdstat_evalsha:") || line.hasPrefix("cmdstat_eval:") {
            for field in line.split(separator: ":", maxSplits: 1).last?.split(separator: ",") ?? [] {
                let pair = field.split(separator: "=")
                guard pair.count == 2 else { continue }
                if pair[0] == "calls" { calls += Int(pair[1]) ?? 0 }
                if pair[0] == "usec" { microseconds += Double(pair[1]) ?? 0 }
            }
        }
        // [id, time, microseconds, [command, arguments…], client, name]
        let entries = try await redis.send("SLOWLOG", "GET", "-1").array ?? []
        var longest = (microseconds: 0, command: "")
        for entry in entries {
            guard let fields = entry.array, fields.count >= 4, let duration = fields[2].int else { continue }
            if Int(duration) > longest.microseconds {
                longest = (Int(duration), fields[3].array?.first?.string ?? "")
            }
        }
        return RedisPauses(
            scriptCalls: calls,
            scriptMillisecondsPerCall: calls == 0 ? 0 : microseconds / Double(calls) / 1000,
            commandsOverOneMillisecond: entries.count,
            longestMilliseconds: Double(longest.microseconds) / 1000,
            longestCommand: longest.command
        )
    }

    var summary: String {
        String(
            format: "cache script %.1f ms per call (%d calls); %d commands over 1 ms, longest %.1f ms",
            scriptMillisecondsPerCall,
            scriptCalls,
            commandsOverOneMillisecond,
            longestMilliseconds
        ) + (longestCommand.isEmpty ? "" : " (\(longestCommand))")
    }
}
