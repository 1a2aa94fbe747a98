import Foundation
import Logging
import PostgresClient
import RedisClient

/// `historian check`: configuration, connectivity, schema version, stream and group state.
public struct HealthCheck: Sendable {
    let configuration: HistorianConfiguration
    let logger: Logger

    public init(configuration: HistorianConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    /// Reports each finding as a line; returns the problems found (none: healthy).
    public func run(report: @Sendable (String) -> Void) async -> [String] {
        var problems: [String] = []
        func problem(_ text: String) {
            problems.append(text)
            report("problem: \(text)")
        }
        report("configuration:")
        for line in configuration.redactedLines { report("  \(line)") }

        // A Redis URL the client cannot use (rediss://) leaves PostgreSQL to check all the same.
        var endpoints: ServerEndpoints?
        do {
            endpoints = try ServerEndpoints(configuration)
        } catch {
            problem(StartFailure.reason(error) ?? "redis_url: \(error)")
        }

        do {
            let postgres = try await connectPostgres(endpoints)
            defer { postgres.close() }
            report("ok: PostgreSQL reachable (server version \(postgres.serverVersion))")
            let schema = Readiness.Schema(recorded: try await postgres.withSession { try Schema.recordedVersion($0) })
            switch schema {
            case .current, .unknown:
                report("ok: schema version \(Schema.currentVersion) (current)")
            case .missing, .behind:
                problem("schema: \(Readiness.describe(schema)); run `historian migrate`")
            case .ahead:
                problem("schema: \(Readiness.describe(schema)); upgrade Historian")
            }
            // More rights than the runtime needs is a warning, not a problem: it works.
            for warning in try await postgres.withSession({ try RolePrivileges.read($0) }).warnings {
                report("warning: \(warning)")
            }
        } catch {
            // TLS that fails names its problem: the server is up, the certificates or settings are wrong.
            problem(StartFailure.reason(error) ?? "PostgreSQL unreachable: \(error)")
        }

        if let endpoints {
            do {
                let redis = try await endpoints.connectRouted(logger: logger)
                defer { redis.close() }
                _ = try await redis.send(["PING"], key: "")
                if let cluster = redis as? RedisClusterClient {
                    let masters = try await cluster.masters()
                    report("ok: Redis Cluster reachable through \(endpoints.redis.endpoint): \(masters.count) masters")
                } else {
                    report("ok: Redis reachable at \(endpoints.redis.endpoint)")
                }
                let base = IngestStream(
                    stream: configuration.stream,
                    group: configuration.group,
                    dlqStream: configuration.dlqStream
                )
                for ingest in StreamShard.streams(of: base, count: configuration.streamShards) {
                    try await checkStream(ingest, redis: redis, report: report, problem: problem)
                }
                let dlq = RedisArgument(configuration.dlqStream)
                let dlqType = try await redis.send(["TYPE", dlq], key: dlq)
                if dlqType.string == "stream" {
                    let length = try await redis.send(["XLEN", dlq], key: dlq)
                    report("note: dead-letter stream \(configuration.dlqStream): \(length.int ?? 0) entries")
                } else if dlqType.string != "none" {
                    problem("dead-letter stream \(configuration.dlqStream) is a \(dlqType.string ?? "?"), not a stream")
                }
            } catch {
                problem("Redis unreachable: \(error)")
            }
        }
        if let trouble = Self.archiveDirectoryProblem(configuration.archiveDir) {
            problem("archive_dir \(configuration.archiveDir): \(trouble)")
        } else {
            report("ok: archive_dir \(configuration.archiveDir) is writable")
        }
        report(problems.isEmpty ? "healthy" : "\(problems.count) problem(s)")
        return problems
    }

    private func connectPostgres(_ endpoints: ServerEndpoints?) async throws -> PostgresConnection {
        if let endpoints {
            return try await endpoints.connectPostgres(logger: logger, applicationName: "historian-check")
        }
        return try await PostgresConnection.connect(
            conninfo: configuration.postgresURL,
            password: configuration.postgresPassword,
            applicationName: "historian-check",
            logger: logger
        )
    }

    /// One stream (or shard): its length and its group's state.
    private func checkStream(
        _ ingest: IngestStream,
        redis: some RoutedRedis,
        report: (String) -> Void,
        problem: (String) -> Void
    ) async throws {
        let stream = ingest.stream
        let key = RedisArgument(stream)
        let type = try await redis.send(["TYPE", key], key: key)
        switch type.string {
        case "stream":
            let info = try await redis.send(["XINFO", "STREAM", key], key: key).fieldPairs
            report("ok: stream \(stream): \(info["length"]?.int ?? 0) entries")
            if let group = try await ingest.groupState(redis) {
                report(
                    "ok: group \(ingest.group): \(group.consumers) consumers, \(group.pending) pending, "
                        + "lag \(group.lag.map(String.init) ?? "unknown"), last delivered \(group.lastDelivered ?? "-")"
                )
            } else {
                report("note: group \(ingest.group) does not exist yet; `historian run` creates it")
            }
        case "none":
            report("note: stream \(stream) does not exist yet; `historian run` creates it")
        default:
            problem("stream \(stream) is a \(type.string ?? "?"), not a stream")
        }
    }

    /// Why archive passes could not write below `directory`, or `nil`: it is a writable
    /// directory, or its nearest existing parent is one (passes create the rest).
    static func archiveDirectoryProblem(_ directory: String) -> String? {
        var path = directory.isEmpty ? "." : directory
        var isDirectory: ObjCBool = false
        while !FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) {
            let parent = (path as NSString).deletingLastPathComponent
            if parent.isEmpty || parent == path { return "no existing parent directory" }
            path = parent
        }
        guard isDirectory.boolValue else { return "\(path) is not a directory" }
        guard access(path, W_OK | X_OK) == 0 else { return "\(path) is not writable by this user" }
        return nil
    }
}
