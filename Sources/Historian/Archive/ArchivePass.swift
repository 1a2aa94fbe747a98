import Foundation
import Logging
import PostgresClient
import RedisClient
import ServiceLifecycle

/// One archive pass: every conversation idle for longer than `olderThan` goes to its file, then
/// its recent-history keys leave Redis. `historian archive` runs one; the daemon one every
/// `archive_every`. Only one pass runs at a time across all instances (an advisory lock).
public struct ArchivePass: Sendable {
    let endpoints: ServerEndpoints
    let archiver: Archiver
    let cache: CacheSettings
    let metrics: DaemonMetrics
    let logger: Logger

    /// - Parameter metrics: counts the conversations archived and those that failed.
    public init(configuration: HistorianConfiguration, metrics: DaemonMetrics = .disabled, logger: Logger) throws {
        self.endpoints = try ServerEndpoints(configuration)
        self.archiver = Archiver(layout: ArchiveLayout(root: configuration.archiveDir))
        self.cache = CacheSettings(configuration)
        self.metrics = metrics
        self.logger = logger
    }

    /// What a pass did.
    public struct Summary: Sendable, Hashable {
        public var archived = 0
        public var messages = 0
        public var skipped = 0
        public var failed = 0
        /// Another instance held the lock: this pass did nothing.
        public var locked = false
    }

    /// Arbitrary but fixed: the advisory lock a pass holds ("Archive!").
    static let lockKey: Int64 = 0x4172_6368_6976_6521

    /// Conversations read per query.
    static let page = 100

    /// Runs the pass, reporting each conversation as a line.
    /// - Parameters:
    ///   - dryRun: only report what would be archived; write and delete nothing.
    ///   - beforeDelete: see `Archiver.archive`.
    public func run(
        olderThan: Duration,
        dryRun: Bool = false,
        beforeDelete: @Sendable @escaping (WrittenArchive) throws -> Void = { _ in },
        report: @Sendable (String) -> Void
    ) async throws -> Summary {
        let postgres = try await endpoints.connectPostgres(logger: logger, applicationName: "historian-archive")
        defer { postgres.close() }
        let locked = try await postgres.withSession { session in
            try Archiver.prepare(session)
            return try session.query("SELECT pg_try_advisory_lock($1)", [String(Self.lockKey)])[
                0,
                "pg_try_advisory_lock"
            ] == "t"
        }
        var summary = Summary()
        guard locked else {
            summary.locked = true
            report("another archive pass is running; this one does nothing")
            return summary
        }
        // The lock is the session's: closing the connection releases it.

        if !dryRun {
            let leftovers = Durable.removeTemporaryFiles(below: archiver.layout.root)
            if !leftovers.isEmpty {
                logger.notice(
                    "archive pass: removed temporary files an interrupted pass left",
                    metadata: ["archive.files": "\(leftovers.joined(separator: " "))"]
                )
            }
        }

        var redis: (any RoutedRedis)?
        if !dryRun {
            do {
                redis = try await endpoints.connectRouted(logger: logger)
            } catch {
                logger.warning(
                    "archive pass: Redis unreachable; recent-history keys will expire on their own",
                    metadata: ["error": "\(error)"]
                )
            }
        }
        defer { redis?.close() }

        var after: Archiver.Candidate?
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            let page = try await postgres.withSession { [after] in
                try Archiver.candidates(olderThan: olderThan, limit: Self.page, after: after, in: $0)
            }
            guard let last = page.last else { break }
            after = last
            for candidate in page {
                if Task.isCancelled || Task.isShuttingDownGracefully { break }
                let id = candidate.id
                if dryRun {
                    report(
                        "would archive \(id.text): \(candidate.messages) messages, last stored \(candidate.updatedAt)"
                    )
                    summary.archived += 1
                    summary.messages += candidate.messages
                    continue
                }
                do {
                    let archiver = archiver
                    let outcome = try await postgres.withSession {
                        try archiver.archive(id, in: $0, beforeDelete: beforeDelete)
                    }
                    switch outcome {
                    case .archived(let path, let messages):
                        summary.archived += 1
                        summary.messages += messages
                        metrics.recordArchived()
                        report("archived \(id.text): \(messages) messages -> \(path)")
                        logger.info(
                            "conversation archived",
                            metadata: [
                                "conversation.id": "\(id.text)", "archive.path": "\(path)", "messages": "\(messages)",
                            ]
                        )
                        await removeCacheKeys(of: id, redis: redis)
                    case .skipped(let reason):
                        summary.skipped += 1
                        report("skipped \(id.text): \(reason)")
                    }
                } catch {
                    summary.failed += 1
                    metrics.recordArchiveFailure()
                    report("failed \(id.text): \(error)")
                    logger.error(
                        "archiving a conversation failed",
                        metadata: ["conversation.id": "\(id.text)", "error": "\(error)"]
                    )
                    if postgres.isBroken { throw error }
                }
            }
        }
        return summary
    }

    /// The conversation's list, its version key and its LangChain list; they would expire on
    /// their own, so a failure here is only logged.
    /// On a cluster the keys share their conversation's slot, so one `DEL` still takes them all.
    private func removeCacheKeys(of conversation: CanonicalUUID, redis: (any RoutedRedis)?) async {
        guard let redis else { return }
        do {
            let keys = cache.conversationKeys(conversation.text).map { RedisArgument($0) }
            _ = try await redis.send(["DEL"] + keys, key: keys[0])
        } catch {
            logger.warning(
                "archive pass: cannot remove recent-history keys",
                metadata: ["conversation.id": "\(conversation.text)", "error": "\(error)"]
            )
        }
    }
}

/// The daemon's archive schedule: a pass shortly after start, then one every `archive_every`
/// (`0s` turns it off). A failed pass is logged and tried again at the next turn.
public struct ArchiveService: Service, CustomStringConvertible {
    let pass: ArchivePass
    let every: Duration
    let olderThan: Duration
    let logger: Logger

    public init(configuration: HistorianConfiguration, metrics: DaemonMetrics = .disabled, logger: Logger) throws {
        self.pass = try ArchivePass(configuration: configuration, metrics: metrics, logger: logger)
        self.every = configuration.archiveEvery
        self.olderThan = configuration.archiveAfter
        self.logger = logger
    }

    public var description: String { "ArchiveService(every: \(every), after: \(olderThan))" }

    /// The wait before the first pass: the workers start first.
    static let firstPassAfter: Duration = .seconds(10)

    public func run() async throws {
        guard every > .zero else { return }
        try? await cancelWhenGracefulShutdown {
            var wait = min(every, Self.firstPassAfter)
            while true {
                try await Task.sleep(for: wait)
                wait = every
                do {
                    let summary = try await pass.run(olderThan: olderThan) { _ in }
                    if summary.archived > 0 || summary.failed > 0 {
                        logger.notice(
                            "archive pass done",
                            metadata: [
                                "archived": "\(summary.archived)", "messages": "\(summary.messages)",
                                "skipped": "\(summary.skipped)", "failed": "\(summary.failed)",
                            ]
                        )
                    }
                } catch is CancellationError {
                    throw CancellationError()
                } catch {
                    pass.metrics.recordArchiveFailure()
                    logger.error("archive pass failed; will try again", metadata: ["error": "\(error)"])
                }
            }
        }
    }
}
