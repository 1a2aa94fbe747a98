import ArgumentParser
import Foundation
#if canImport(CMalloc)
import CMalloc
#endif
import Historian
import HistoryAPI
import Logging
import OperationsEndpoint
import ServiceLifecycle
import SystemdNotify

@main
struct HistorianCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "historian",
        abstract: "Keeps chat history durable: Redis stream in, PostgreSQL out.",
        version: historianVersion,
        subcommands: [Run.self, Migrate.self, Check.self, ArchiveCommand.self, Restore.self, Dlq.self, Export.self, Import.self, Forget.self]
    )

    static func main() async {
        // Before anything allocates much; `load()` logs what was done.
        _ = mallocTuning
        await main(nil)
    }
}

/// What `tuneMalloc` did, once, at the start of the process.
let mallocTuning = tuneMalloc()

/// Tunes glibc's malloc for the daemon, unless the environment already tunes it.
///
/// - Two arenas at most. glibc gives threads that contend for the heap arenas of their own, up
///   to eight per core. Each worker's blocking I/O runs on a queue of its own, so a batch's
///   memory was often freed into another arena than the next batch allocated from, and the
///   process kept it all, for a larger peak RSS at the same speed.
/// - No fastbins. With chunks in the fastbins, every allocation of 1 KiB or more (a message's
///   content, a parameter buffer, a reply) first merges them all (`malloc_consolidate`).
///   Small blocks still come from the per-thread cache.
/// - Freed memory kept for the next batch: blocks of up to 32 MiB come from the arenas, and an
///   arena returns free memory to the kernel only past 64 MiB. glibc's own thresholds follow
///   the largest block freed (4 MiB or so with `batch_bytes` at 4 MiB), so it gave back most of
///   what each large batch freed, and the next batch faulted it back in, page by page, zeroed.
///   Keeping it costs a few MiB of peak RSS with large entries; docs/benchmark.md has the
///   figures.
///
/// - Returns: what was done, for the log: each setting and whether glibc took it.
func tuneMalloc() -> String {
    #if canImport(CMalloc)
    let environment = ProcessInfo.processInfo.environment
    guard environment["MALLOC_ARENA_MAX"] == nil, environment["GLIBC_TUNABLES"] == nil else {
        return "left to the environment (MALLOC_ARENA_MAX or GLIBC_TUNABLES is set)"
    }
    let settings: [(String, Int32, Int32)] = [
        ("arena_max", M_ARENA_MAX, 2), ("mxfast", M_MXFAST, 0),
        ("mmap_threshold", M_MMAP_THRESHOLD, 32 << 20), ("trim_threshold", M_TRIM_THRESHOLD, 64 << 20),
    ]
    // mallopt returns 1 on success, 0 on error.
    return settings.map { name, parameter, value in
        "\(name)=\(value)" + (mallopt(parameter, value) == 1 ? "" : " (refused)")
    }.joined(separator: " ")
    #else
    return "not tuned on this platform"
    #endif
}

/// The configuration keys as flags; each is optional so environment and file can supply it.
struct ConfigurationOptions: ParsableArguments {
    @Option(help: "Config file (default: /etc/historian/config.yaml when present).")
    var config: String?

    @Option(help: "Redis URL: redis://[user:password@]host:port[/db] or unix:///path.") var redisUrl: String?
    @Option(help: "Whether redis-url names seed nodes of a Redis Cluster: true or false.") var redisCluster: String?
    @Option(help: "PostgreSQL libpq URI or conninfo.") var postgresUrl: String?
    @Option(help: "Ingest stream key.") var stream: String?
    @Option(help: "Ingest stream shards <stream>:{i} (1: the stream key alone).") var streamShards: String?
    @Option(help: "Consumer group.") var group: String?
    @Option(help: "Consumer name (default: host name, plus -instance).") var consumer: String?
    @Option(help: "Instance name appended to the default consumer name.") var instance: String?
    @Option(help: "Workers in this process.") var workers: String?
    @Option(help: "Dead-letter stream key.") var dlqStream: String?
    @Option(help: "Largest content accepted (e.g. 1MiB).") var maxContentBytes: String?
    @Option(help: "Most entries in one batch.") var batchSize: String?
    @Option(help: "About the most bytes of entries in one batch (e.g. 4MiB).") var batchBytes: String?
    @Option(help: "How long a batch waits to fill (e.g. 1ms).") var batchLinger: String?
    @Option(help: "Deliveries before an entry is poison.") var maxDeliveries: String?
    @Option(help: "Idle time before pending entries are claimed (e.g. 60s).") var claimIdle: String?
    @Option(help: "Messages per recent-history list (0: no cache).") var recentSize: String?
    @Option(help: "TTL of cache and session keys (e.g. 30m).") var sessionTtl: String?
    @Option(help: "Prefix of every cache key.") var keyPrefix: String?
    @Option(help: "Also keep LangChain's message_store:{id} lists: true or false.") var langchainCache: String?
    @Option(help: "Archive directory.") var archiveDir: String?
    @Option(help: "Idle time before a conversation is archived (e.g. 30d).") var archiveAfter: String?
    @Option(help: "Time between archive passes (e.g. 1h).") var archiveEvery: String?
    @Option(help: "Time to finish in-flight work on shutdown (e.g. 10s).") var shutdownGrace: String?
    @Option(help: "Metrics endpoint address.") var metricsAddress: String?
    @Option(help: "History API address (empty: off).") var apiAddress: String?
    @Option(help: "History API bearer token (better: the credential api-token).") var apiToken: String?
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.") var logLevel: String?
    @Option(help: "Log format: text, or json for one JSON object per line.") var logFormat: String?

    var flags: [String: String] {
        let pairs: [(String, String?)] = [
            ("redis_url", redisUrl), ("redis_cluster", redisCluster), ("postgres_url", postgresUrl), ("stream", stream),
            ("stream_shards", streamShards), ("group", group),
            ("consumer", consumer), ("instance", instance), ("workers", workers), ("dlq_stream", dlqStream),
            ("max_content_bytes", maxContentBytes), ("batch_size", batchSize), ("batch_bytes", batchBytes),
            ("batch_linger", batchLinger), ("max_deliveries", maxDeliveries), ("claim_idle", claimIdle),
            ("recent_size", recentSize), ("session_ttl", sessionTtl), ("key_prefix", keyPrefix),
            ("langchain_cache", langchainCache), ("archive_dir", archiveDir), ("archive_after", archiveAfter),
            ("archive_every", archiveEvery), ("shutdown_grace", shutdownGrace), ("metrics_address", metricsAddress),
            ("api_address", apiAddress), ("api_token", apiToken),
            ("log_level", logLevel), ("log_format", logFormat),
        ]
        return Dictionary(uniqueKeysWithValues: pairs.compactMap { name, value in value.map { (name, $0) } })
    }

    /// Loads the configuration and bootstraps logging to standard error at its level, in its format.
    func load() async throws -> (HistorianConfiguration, Logger) {
        let configuration: HistorianConfiguration
        do {
            configuration = try await HistorianConfiguration.load(flags: flags, configFile: config)
        } catch let error as HistorianError {
            throw ValidationError(error.message)
        }
        LoggingSystem.bootstrap { label in
            switch configuration.logFormat {
            case .text:
                var handler = StreamLogHandler.standardError(label: label)
                handler.logLevel = configuration.logLevel
                return handler
            case .json:
                var handler = JSONLogHandler.standardError(label: label)
                handler.logLevel = configuration.logLevel
                return handler
            }
        }
        let logger = Logger(label: "historian")
        logger.debug("malloc tuning", metadata: ["malloc": "\(mallocTuning)"])
        return (configuration, logger)
    }
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the daemon: consume, store, acknowledge.")

    @OptionGroup var options: ConfigurationOptions

    @Flag(help: "Report what would be done with each waiting entry; write and acknowledge nothing.")
    var dryRun = false

    @Flag(help: "Stop once nothing is waiting instead of waiting for more.")
    var once = false

    @Option(help: "When the run ends, write its final metrics to this file, as /metrics has them (e.g. after --once).")
    var metricsFile: String?

    func validate() throws {
        if dryRun, metricsFile != nil {
            throw ValidationError("--metrics-file: a dry run records no metrics")
        }
    }

    func run() async throws {
        let (configuration, logger) = try await options.load()
        do {
            try await run(configuration, logger: logger)
        } catch {
            // No restart can fix these (a schema newer than this build, TLS to PostgreSQL that
            // fails, a rediss:// URL): the units do not restart on this status.
            guard let reason = StartFailure.reason(error) else { throw error }
            logger.critical("cannot start: \(reason)")
            throw ExitCode(Self.cannotStart)
        }
    }

    private func run(_ configuration: HistorianConfiguration, logger: Logger) async throws {
        if dryRun {
            try await DryRun(configuration: configuration, logger: logger).run(follow: !once) { print($0) }
            return
        }
        let environment = ProcessInfo.processInfo.environment
        // A loop stuck for half the watchdog's interval stops the pings in time.
        let watchdog = SystemdNotifier.watchdogInterval(environment)
        let health = DaemonHealth(stallLimit: watchdog.map { $0 / 2 } ?? DaemonHealth.defaultStallLimit)
        // The endpoint serves the daemon; a run --once ends before anyone would scrape it, and
        // leaves its figures in the metrics file instead, if asked to.
        let address = once ? nil : configuration.metricsAddress
        let registry = address != nil || metricsFile != nil ? OperationsEndpoint.bootstrap() : nil
        var endpoint: OperationsEndpoint?
        if let address, let registry {
            endpoint = OperationsEndpoint(address: address, registry: registry, health: health, logger: logger)
        }
        // Made after the bootstrap: a metric made before it would record nothing, ever.
        let metrics = DaemonMetrics()
        let ingest = try IngestService(configuration: configuration, once: once, metrics: metrics, health: health, logger: logger)
        // ServiceGroup starts these in order and stops them in reverse, each after the one
        // behind it has finished: the notifier says STOPPING=1 first, the endpoint stops last.
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        if let endpoint {
            services.append(.init(service: endpoint))
            // Nothing is read before the endpoint listens: a taken port stops the daemon at once.
            let waitForEndpoint = { @Sendable in try await endpoint.waitUntilListening() }
            services.append(
                .init(
                    service: StartAfter(precondition: waitForEndpoint, service: ingest),
                    successTerminationBehavior: .gracefullyShutdownGroup
                )
            )
        } else {
            services.append(.init(service: ingest, successTerminationBehavior: .gracefullyShutdownGroup))
        }
        if !once {
            // Checked before anything starts: no token on an address others reach stops the daemon.
            let api: HistoryAPIService?
            do {
                api = try HistoryAPIService(
                    configuration: configuration,
                    eraser: try Erasure(configuration: configuration, logger: logger),
                    logger: logger
                )
            } catch let error as HistorianError where error.code == .invalidConfiguration {
                logger.critical("cannot start: \(error.message)")
                throw ExitCode(Self.cannotStart)
            }
            if let api { services.append(.init(service: api)) }
            // Archive passes on their schedule; one that ends (archive_every 0s) leaves the rest running.
            let archive = try ArchiveService(configuration: configuration, metrics: metrics, logger: logger)
            services.append(.init(service: archive, successTerminationBehavior: .ignore))
            let probe = try ReadinessProbe(configuration: configuration, health: health, metrics: metrics, logger: logger)
            services.append(.init(service: probe))
            if let notifier = try SystemdNotifier(environment: environment, health: health, logger: logger) {
                services.append(.init(service: notifier))
            }
        }
        var groupConfiguration = ServiceGroupConfiguration(
            services: services,
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        )
        // Past the grace period the workers are cancelled; their batch stays pending.
        groupConfiguration.maximumGracefulShutdownDuration = configuration.shutdownGrace
        try await ServiceGroup(configuration: groupConfiguration).run()
        if let metricsFile, let registry {
            try MetricsFile.write(registry, to: metricsFile)
        }
    }

    /// The exit status of a start that no restart can fix (sysexits' EX_CONFIG); the units name
    /// it in `RestartPreventExitStatus=`.
    static let cannotStart: Int32 = 78
}

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create or upgrade the PostgreSQL schema.")

    @OptionGroup var options: ConfigurationOptions

    func run() async throws {
        let (configuration, logger) = try await options.load()
        let postgres = try await ServerEndpoints(configuration).connectPostgres(logger: logger)
        defer { postgres.close() }
        let applied = try await Schema.migrate(postgres, logger: logger)
        print(
            applied.isEmpty
                ? "schema is current (version \(Schema.currentVersion))"
                : "applied migrations \(applied.map(String.init).joined(separator: ", ")); schema version \(Schema.currentVersion)"
        )
    }
}

struct Check: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check configuration, connectivity, schema, stream and group; exit 1 on a problem."
    )

    @OptionGroup var options: ConfigurationOptions

    func run() async throws {
        let (configuration, logger) = try await options.load()
        let problems = await HealthCheck(configuration: configuration, logger: logger).run { print($0) }
        if !problems.isEmpty { throw ExitCode(1) }
    }
}

struct ArchiveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "archive",
        abstract: "Run one archive pass now: idle conversations to verified gzipped JSONL files."
    )

    @OptionGroup var options: ConfigurationOptions

    @Option(help: "Archive conversations idle for longer than this, e.g. 30d (default: archive_after).")
    var olderThan: String?

    @Flag(help: "List what would be archived; write and delete nothing.")
    var dryRun = false

    func validate() throws {
        if let olderThan, HistorianConfiguration.parseDuration(olderThan) == nil {
            throw ValidationError("--older-than: expected a duration like 30m, 36h or 30d, got '\(olderThan)'")
        }
    }

    func run() async throws {
        let (configuration, logger) = try await options.load()
        let olderThan = olderThan.flatMap(HistorianConfiguration.parseDuration) ?? configuration.archiveAfter
        let started = ContinuousClock.now
        let summary = try await ArchivePass(configuration: configuration, logger: logger).run(
            olderThan: olderThan,
            dryRun: dryRun
        ) {
            print($0)
        }
        let elapsed = (ContinuousClock.now - started).components
        let seconds = Double(elapsed.seconds) + Double(elapsed.attoseconds) / 1e18
        if dryRun {
            print(
                "dry run: would archive \(summary.archived) conversations (\(summary.messages) messages); nothing written"
            )
        } else if !summary.locked {
            print(
                String(
                    format: "archived %d conversations (%d messages) in %.1f s; %d skipped, %d failed",
                    summary.archived,
                    summary.messages,
                    seconds,
                    summary.skipped,
                    summary.failed
                )
            )
        }
        if summary.failed > 0 { throw ExitCode(1) }
    }
}

struct Restore: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Bring archived conversations back into PostgreSQL.")

    @OptionGroup var options: ConfigurationOptions

    @Argument(help: "IDs of the conversations to restore.")
    var ids: [String]

    func validate() throws {
        guard !ids.isEmpty else { throw ValidationError("name at least one conversation ID") }
        for id in ids where CanonicalUUID(id) == nil {
            throw ValidationError("'\(id)' is not a UUID")
        }
    }

    func run() async throws {
        let (configuration, logger) = try await options.load()
        let postgres = try await ServerEndpoints(configuration).connectPostgres(
            logger: logger,
            applicationName: "historian-restore"
        )
        defer { postgres.close() }
        var problems = 0
        for id in ids.compactMap(CanonicalUUID.init) {
            do {
                switch try await postgres.withSession({ try Archiver.restore(id, in: $0) }) {
                case .restored(let messages, let path):
                    print("restored \(id.text): \(messages) messages from \(path)")
                case .alreadyInPostgres:
                    print("\(id.text) is in PostgreSQL, not archived: nothing to do")
                case .notArchived:
                    problems += 1
                    print("\(id.text): no such conversation, archived or not")
                }
            } catch {
                problems += 1
                print("\(id.text): not restored: \(error)")
            }
        }
        if problems > 0 { throw ExitCode(1) }
    }
}
