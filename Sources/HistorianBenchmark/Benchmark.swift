import ArgumentParser
import Foundation
import Historian
import LocalServers
import Logging
import PostgresClient
import RedisClient
import UnixSignals

/// Measures Historian against the physical limit of the machine it runs on.
///
/// One run starts its own redis-server and PostgreSQL (durable settings: fsync on, synchronous
/// commit), generates a realistic workload, and measures, in order:
/// 1. the ceiling: `COPY` of the same rows straight into the same tables;
/// 2. the Redis floor: the least Redis work the contract asks for, as plain commands;
/// 3. the drain: a prefilled stream consumed by the release `historian run --once`;
/// 4. latency: a producer at a fixed rate against a running `historian run`; then the steady
///    floor: the least work of both servers at that rate, in batches of the same size;
/// 5. the sweep: more drains, with the daemon's default settings and with other `--workers`;
/// 6. langchain: pairs of drains without and with `--langchain-cache true`;
/// 7. api: the history API under `wrk` while the pipeline stores new messages;
/// and the daemon's peak RSS, and the statements, commands and round trips of a batch. It
/// prints a table with each target met or missed, and writes the figures as JSON.
@main
struct HistorianBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "historian-benchmark",
        abstract: "Measure Historian's drain, latency and memory against a COPY ceiling."
    )

    @Flag(help: "100,000 messages and a 20 s latency run instead of 1,000,000 and 60 s.")
    var quick = false

    @Option(help: "Messages in the prefilled stream (default 1,000,000; 100,000 with --quick).")
    var messages: Int?

    @Option(help: "Conversations the messages spread over.")
    var conversations = 10_000

    @Option(help: "Producer rate of the latency run, messages per second.")
    var rate = 5_000

    @Option(help: "Length of the latency run in seconds (default 60; 20 with --quick).")
    var latencySeconds: Int?

    @Option(
        help: """
            Messages per batch of the steady floor (default: the latency run's messages per \
            batch when it ran, else 10).
            """
    )
    var steadyBatch: Int?

    @Option(help: "Length of the steady floor in seconds.")
    var steadySeconds = 10

    @Option(help: "Make every message's content this many bytes (default: 20 to 2,000, about 300 on average).")
    var contentBytes: Int?

    @Option(help: "Workers of the historian process in the main drain and the latency run.")
    var workers = 3

    @Option(
        help: """
            Worker counts of the sweep's extra drains, comma-separated (the main drain's count is \
            not run again). The sweep also drains once with the default settings, without \
            --workers. Each drain costs a prefill and about as long as the main drain: the \
            default sweep (four drains) adds four to five main drains' time.
            """
    )
    var workersSweep = "1,2,4"

    @Option(help: "Extra historian option, e.g. --daemon-option=--batch-size=1000 (repeatable).")
    var daemonOption: [String] = []

    @Option(
        help: """
            Pairs of drains of the langchain phase, one drain of each without and one with \
            --langchain-cache true; the first pair runs without first, the second with first, \
            and so on. Each pair costs two drains as long as the main drain's.
            """
    )
    var langchainPairs = 1

    @Option(help: "Seconds of wrk against each of the api phase's two routes.")
    var apiSeconds = 5

    @Option(help: "Connections wrk keeps open in the api phase.")
    var apiConnections = 16

    @Option(help: "Messages per second the api phase's producer appends while wrk runs.")
    var apiPipelineRate = 1_000

    @Option(help: "Shard counts (--stream-shards) of the cluster phase's drains, comma-separated.")
    var clusterShards = "1,4,16"

    @Option(help: "Process counts of the cluster phase's drains, comma-separated; each shard count runs with each.")
    var clusterProcesses = "1,2,3"

    @Option(
        help: """
            Phases to run, comma-separated: \(HistorianBenchmark.allPhases.joined(separator: ", ")) \
            (by default all but cluster, which drains once per shard and process count).
            """
    )
    var phases = HistorianBenchmark.allPhases.filter { $0 != "cluster" }.joined(separator: ",")

    /// Every phase, in the order a run measures them.
    static let allPhases = ["ceiling", "floor", "drain", "latency", "steady", "sweep", "langchain", "api", "cluster"]

    @Option(help: "Where the figures go as JSON.")
    var json = "benchmark-results.json"

    @Option(help: "Also write every latency sample as CSV (seconds into the run, latency in ms), to see when a tail happened.")
    var latencySamples: String?

    @Option(help: "A PostgreSQL setting for the run, e.g. --postgres-setting min_wal_size=2GB (repeatable).")
    var postgresSetting: [String] = []

    @Option(help: "The historian executable (default: the one beside this program).")
    var historian: String?

    @Option(help: "Workload seed.")
    var seed: UInt64 = 1

    @Flag(help: "Keep the servers running after the run, for a closer look, until interrupted.")
    var keepServers = false

    mutating func run() async throws {
        let messageCount = messages ?? (quick ? 100_000 : 1_000_000)
        let latencyDuration = latencySeconds ?? (quick ? 20 : 60)
        let selected = Set(phases.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
        let unknown = selected.subtracting(Self.allPhases)
        guard unknown.isEmpty else {
            throw ValidationError(
                "unknown phase \(unknown.sorted().joined(separator: ", ")); "
                    + "the phases are \(Self.allPhases.joined(separator: ", "))"
            )
        }
        if selected.contains("langchain") {
            guard langchainPairs >= 1 else { throw ValidationError("--langchain-pairs must be at least 1") }
            guard !daemonOption.contains(where: { $0.hasPrefix("--langchain-cache") }) else {
                throw ValidationError(
                    "the langchain phase sets --langchain-cache itself; leave it out of --daemon-option"
                )
            }
        }
        let sweepCounts = try parsedWorkersSweep()
        let clusterShardCounts = try Self.counts(clusterShards, option: "--cluster-shards")
        let clusterProcessCounts = try Self.counts(clusterProcesses, option: "--cluster-processes")
        if let contentBytes, contentBytes < 1 {
            throw ValidationError("--content-bytes must be at least 1")
        }
        let executable = try historianExecutable()

        var results = BenchmarkResults(
            machine: MachineDescription.current(),
            messages: messageCount,
            conversations: conversations,
            workers: workers,
            daemonOptions: daemonOption,
            postgresSettings: postgresSetting
        )
        let servers = try await BenchmarkServers.start(postgresOverrides: try parsedPostgresSettings())
        do {
            report("servers: redis-server \(servers.redisVersion), PostgreSQL \(servers.postgresVersion)")
            results.machine.redis = servers.redisVersion
            results.machine.postgres = servers.postgresVersion
            report("generating \(messageCount) messages over \(conversations) conversations")
            var workload = Workload(
                conversations: conversations,
                seed: seed,
                startMilliseconds: Int64(Date().timeIntervalSince1970 * 1000) - 3_600_000
            )
            workload.contentBytes = contentBytes
            let batch = (0..<messageCount).map { _ in workload.next() }
            results.averageContentBytes = batch.reduce(0) { $0 + $1.content.utf8.count } / max(1, batch.count)

            if selected.contains("ceiling") {
                results.ceiling = try await CeilingPhase(servers: servers, workload: workload, messages: batch).run()
            }
            if selected.contains("floor") {
                results.redisFloor = try await RedisFloorPhase(servers: servers, workload: workload, messages: batch).run()
            }
            if selected.contains("drain") {
                let phase = DrainPhase(
                    servers: servers,
                    workload: workload,
                    messages: batch,
                    executable: executable,
                    arguments: daemonArguments,
                    workers: workers
                )
                results.drain = try await phase.run()
            }
            if selected.contains("latency") {
                var later = laterWorkload(stream: 1)
                let phase = LatencyPhase(
                    servers: servers,
                    messages: (0..<(rate * latencyDuration)).map { _ in
                        // Not `later.fields(of: later.next())`: that reads `later` before
                        // `next()` changes it, and the copy made every message copy the
                        // conversations (seconds of start-up for a quick run).
                        let message = later.next()
                        return later.fields(of: message)
                    },
                    rate: rate,
                    executable: executable,
                    arguments: daemonArguments,
                    migrate: !selected.contains("drain"),
                    samplesPath: latencySamples
                )
                results.latency = try await phase.run()
            }
            if selected.contains("steady") {
                // The batches the latency run made, so that both spend per batch alike.
                let latencyBatch = results.latency.flatMap { latency in
                    latency.traffic.map { Int((Double(latency.count) / Double(max(1, $0.batches))).rounded()) }
                }
                let steadyBatch = self.steadyBatch ?? latencyBatch ?? 10
                guard steadyBatch >= 1, steadySeconds >= 1 else {
                    throw ValidationError("--steady-batch and --steady-seconds must be at least 1")
                }
                let phase = SteadyFloorPhase(
                    servers: servers,
                    workload: workload,
                    messages: Array(batch.prefix(rate * steadySeconds)),
                    rate: rate,
                    batch: steadyBatch
                )
                results.steadyFloor = try await phase.run()
            }
            if selected.contains("sweep") {
                // After the latency run, which works on the main drain's tables and cache.
                let sweep = WorkersSweep(
                    servers: servers,
                    workload: workload,
                    messages: batch,
                    executable: executable,
                    arguments: sharedDaemonArguments,
                    workerCounts: sweepCounts.filter { !selected.contains("drain") || $0 != workers }
                )
                results.sweep = try await sweep.run()
            }
            if selected.contains("langchain") {
                // Last: each of its drains empties Redis, whose cache the latency run takes
                // over from the main drain, and the phases before it run as they did without it.
                let phase = LangchainPhase(
                    servers: servers,
                    workload: workload,
                    messages: batch,
                    executable: executable,
                    arguments: daemonArguments,
                    workers: workers,
                    pairs: langchainPairs
                )
                results.langchain = try await phase.run()
            }
            if selected.contains("api") {
                // Its seed drain empties Redis too.
                let later = laterWorkload(stream: 2)
                let phase = APIPhase(
                    servers: servers,
                    workload: workload,
                    messages: batch,
                    later: later,
                    executable: executable,
                    arguments: daemonArguments,
                    pipelineRate: apiPipelineRate,
                    seconds: apiSeconds,
                    connections: apiConnections
                )
                results.api = try await phase.run()
            }
            if selected.contains("cluster") {
                // Last: it runs a Redis Cluster beside the servers of the other phases.
                let phase = ClusterPhase(
                    servers: servers,
                    workload: workload,
                    messages: batch,
                    executable: executable,
                    arguments: daemonArguments,
                    workers: workers,
                    shardCounts: clusterShardCounts,
                    processCounts: clusterProcessCounts
                )
                results.cluster = try await phase.run()
            }
        } catch {
            try? await servers.destroy()
            throw error
        }
        print(results.table())
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(results).write(to: URL(fileURLWithPath: json))
        print("figures written to \(json)")
        if keepServers {
            let signals = await UnixSignalsSequence(trapping: .sigint, .sigterm)
            report("servers kept until interrupted: redis \(servers.redis.url), postgres \(servers.postgres.url(database: "drain"))")
            for await signal in signals {
                report("\(signal): stopping the servers")
                break
            }
        }
        try await servers.destroy()
    }

    /// New messages of the workload's conversations, from now on: `stream` keeps their IDs apart
    /// from those of the other workloads over the same conversations.
    private func laterWorkload(stream: UInt64) -> Workload {
        var later = Workload(
            conversations: conversations,
            seed: seed,
            stream: stream,
            startMilliseconds: Int64(Date().timeIntervalSince1970 * 1000)
        )
        later.contentBytes = contentBytes
        return later
    }

    private func parsedPostgresSettings() throws -> [String: String] {
        var settings: [String: String] = [:]
        for setting in postgresSetting {
            guard let equals = setting.firstIndex(of: "="), equals != setting.startIndex else {
                throw ValidationError("--postgres-setting takes name=value, not \(setting)")
            }
            settings[String(setting[..<equals])] = String(setting[setting.index(after: equals)...])
        }
        return settings
    }

    private var daemonArguments: [String] {
        ["--workers", String(workers)] + sharedDaemonArguments
    }

    /// The daemon's arguments in every drain and run but `--workers`.
    private var sharedDaemonArguments: [String] {
        ["--log-level", "warning"] + daemonOption
    }

    /// `1,4,16` as counts of at least 1.
    static func counts(_ text: String, option: String) throws -> [Int] {
        try text.split(separator: ",").map { item in
            guard let count = Int(item.trimmingCharacters(in: .whitespaces)), count >= 1 else {
                throw ValidationError("\(option) takes counts like 1,2,4, not \(text)")
            }
            return count
        }
    }

    private func parsedWorkersSweep() throws -> [Int] {
        try Self.counts(workersSweep, option: "--workers-sweep")
    }

    private func historianExecutable() throws -> String {
        if let historian { return historian }
        let here = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        let beside = here.appendingPathComponent("historian").path
        guard FileManager.default.isExecutableFile(atPath: beside) else {
            throw ValidationError("no historian executable beside this program; build it or pass --historian")
        }
        return beside
    }
}

/// Progress goes to standard error, so standard output holds only the table.
func report(_ line: String) {
    FileHandle.standardError.write(Data(("• " + line + "\n").utf8))
}

/// Nanoseconds on the monotonic clock.
func monotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}

/// The servers of one run: a redis-server and a PostgreSQL cluster of their own, on loopback.
struct BenchmarkServers {
    let redis: RedisServer
    let postgres: PostgresServer
    let redisVersion: String
    let postgresVersion: String
    let logger: Logger

    /// PostgreSQL as it would run in production: every commit flushed to disk.
    static let postgresSettings = [
        "fsync": "on",
        "full_page_writes": "on",
        "synchronous_commit": "on",
        "shared_buffers": "512MB",
        "max_wal_size": "8GB",
        "checkpoint_timeout": "30min",
    ]

    static func start(postgresOverrides: [String: String] = [:]) async throws -> BenchmarkServers {
        let redis = try await RedisServer.start()
        let postgres: PostgresServer
        do {
            postgres = try await PostgresServer.start(settings: postgresSettings.merging(postgresOverrides) { _, new in new })
        } catch {
            try? await redis.destroy()
            throw error
        }
        var logger = Logger(label: "historian-benchmark")
        logger.logLevel = .warning
        let connection = try await RedisConnection.connect(try RedisConfiguration(url: redis.url), logger: logger)
        defer { connection.close() }
        let info = try await connection.send("INFO", "server").string ?? ""
        let redisVersion =
            info.split(separator: "\r\n").first { $0.hasPrefix("redis_version:") }.map { String($0.dropFirst(14)) } ?? "?"
        let postgresVersion = try await postgres.psql("SHOW server_version").trimmingCharacters(in: .whitespacesAndNewlines)
        return BenchmarkServers(
            redis: redis,
            postgres: postgres,
            redisVersion: redisVersion,
            postgresVersion: postgresVersion,
            logger: logger
        )
    }

    func redisConnection() async throws -> RedisConnection {
        try await RedisConnection.connect(try RedisConfiguration(url: redis.url), logger: logger)
    }

    /// A new database, migrated to Historian's schema.
    func freshDatabase(_ name: String) async throws -> PostgresConnection {
        try await postgres.createDatabase(name)
        let connection = try await postgresConnection(name)
        try await Schema.migrate(connection, logger: logger)
        return connection
    }

    func postgresConnection(_ database: String) async throws -> PostgresConnection {
        try await PostgresConnection.connect(
            conninfo: postgres.url(database: database),
            applicationName: "historian-benchmark",
            queryTimeout: .seconds(3600),
            logger: logger
        )
    }

    func destroy() async throws {
        try await redis.destroy()
        try await postgres.destroy()
    }
}
