import Configuration
import Foundation
import Logging
import SystemPackage

/// Everything Historian can be told, resolved from flags, environment, a config file and defaults.
///
/// Each key has one name everywhere: `archive_dir` in the file, `HISTORIAN_ARCHIVE_DIR` in the
/// environment, `--archive-dir` on the command line.
public struct HistorianConfiguration: Sendable {
    public var redisURL: String
    public var postgresURL: String
    public var redisPassword: String?
    /// Whether `redis_url` names seed nodes of a Redis Cluster (contract §9).
    public var redisCluster: Bool
    /// How many keys the ingest stream is sharded over: 1 is the plain `stream` key; N > 1 are
    /// `<stream>:{0}` … `<stream>:{N-1}` (contract §9).
    public var streamShards: Int
    public var postgresPassword: String?
    public var stream: String
    public var group: String
    public var consumer: String
    public var workers: Int
    public var dlqStream: String
    public var maxContentBytes: Int
    public var batchSize: Int
    public var batchBytes: Int
    public var batchLinger: Duration
    public var maxDeliveries: Int
    public var claimIdle: Duration
    public var recentSize: Int
    public var sessionTTL: Duration
    public var keyPrefix: String
    /// Whether the cache also keeps LangChain's `message_store:{id}` lists (contract §8).
    public var langchainCache: Bool
    public var archiveDir: String
    public var archiveAfter: Duration
    public var archiveEvery: Duration
    public var shutdownGrace: Duration
    /// Where `run` serves `GET /metrics`; `nil` (an empty `metrics_address`) turns it off.
    public var metricsAddress: MetricsAddress?
    /// Where `run` serves the history API (contract §7); `nil` (an empty `api_address`, the
    /// default) turns it off.
    public var apiAddress: MetricsAddress?
    /// The bearer token the history API asks for: `api_token`, else the credential `api-token`.
    public var apiToken: String?
    public var logLevel: Logger.Level
    public var logFormat: LogFormat

    /// How log lines are written to standard error.
    public enum LogFormat: String, Sendable {
        /// swift-log's text lines, for people and the journal.
        case text
        /// One JSON object per line, for log shippers (`JSONLogHandler`).
        case json
    }

    /// One configuration key: its name, default and meaning.
    public struct Key: Sendable {
        public var name: String
        public var defaultValue: String
        public var help: String
        public var isSecret: Bool = false

        /// `HISTORIAN_ARCHIVE_DIR` for `archive_dir`.
        public var environmentName: String { "HISTORIAN_" + name.uppercased() }
        /// `--archive-dir` for `archive_dir`.
        public var flagName: String { "--" + name.replacingOccurrences(of: "_", with: "-") }
    }

    /// Every key, in the order `check` prints them.
    public static let keys: [Key] = [
        Key(name: "redis_url", defaultValue: "redis://127.0.0.1:6379", help: "Redis server URL", isSecret: true),
        Key(name: "redis_cluster", defaultValue: "false", help: "redis_url names seed nodes of a Redis Cluster"),
        Key(name: "postgres_url", defaultValue: "", help: "libpq URI or conninfo (empty: libpq defaults)", isSecret: true),
        Key(name: "stream", defaultValue: "chat:messages", help: "ingest stream key"),
        Key(name: "stream_shards", defaultValue: "1", help: "ingest stream shards <stream>:{i} (1: one stream)"),
        Key(name: "group", defaultValue: "historian", help: "consumer group"),
        Key(name: "consumer", defaultValue: "", help: "consumer name (default: host name, plus -instance)"),
        Key(name: "instance", defaultValue: "", help: "instance name appended to the default consumer name"),
        Key(name: "workers", defaultValue: "2", help: "workers in this process"),
        Key(name: "dlq_stream", defaultValue: "chat:messages:dlq", help: "dead-letter stream key"),
        Key(name: "max_content_bytes", defaultValue: "1MiB", help: "largest content accepted"),
        Key(name: "batch_size", defaultValue: "500", help: "most entries in one batch"),
        Key(name: "batch_bytes", defaultValue: "4MiB", help: "about the most bytes of entries in one batch"),
        Key(name: "batch_linger", defaultValue: "1ms", help: "how long a batch waits to fill up"),
        Key(name: "max_deliveries", defaultValue: "10", help: "deliveries before an entry is poison"),
        Key(name: "claim_idle", defaultValue: "60s", help: "idle time after which pending entries are claimed"),
        Key(name: "recent_size", defaultValue: "10", help: "messages in each recent-history list (0: no cache)"),
        Key(name: "session_ttl", defaultValue: "30m", help: "TTL of cache and session keys"),
        Key(name: "key_prefix", defaultValue: "", help: "prefix of every cache key"),
        Key(name: "langchain_cache", defaultValue: "false", help: "also keep LangChain's message_store:{id} lists"),
        Key(name: "archive_dir", defaultValue: "/var/lib/historian/archive", help: "where archives are written"),
        Key(name: "archive_after", defaultValue: "30d", help: "idle time after which a conversation is archived"),
        Key(name: "archive_every", defaultValue: "1h", help: "time between archive passes"),
        Key(name: "shutdown_grace", defaultValue: "10s", help: "time to finish in-flight work on shutdown"),
        Key(name: "metrics_address", defaultValue: "127.0.0.1:9464", help: "address of the metrics endpoint"),
        Key(name: "api_address", defaultValue: "", help: "address of the history API (empty: off)"),
        Key(name: "api_token", defaultValue: "", help: "bearer token of the history API", isSecret: true),
        Key(name: "log_level", defaultValue: "info", help: "trace, debug, info, notice, warning, error or critical"),
        Key(name: "log_format", defaultValue: "text", help: "text, or json for one JSON object per line"),
    ]

    /// The default config file, read when present and no `--config` is given.
    public static let defaultConfigFile = "/etc/historian/config.yaml"

    /// Resolves the configuration.
    /// - Parameters:
    ///   - flags: values given on the command line, by key name (`archive_dir`).
    ///   - configFile: `--config`; when `nil`, the default file if it exists.
    ///   - environment: the process environment (`HISTORIAN_*`, `CREDENTIALS_DIRECTORY`).
    public static func load(
        flags: [String: String],
        configFile: String?,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) async throws -> HistorianConfiguration {
        var values: [AbsoluteConfigKey: ConfigValue] = [:]
        for (name, value) in flags {
            let secret = keys.first { $0.name == name }?.isSecret ?? false
            values[AbsoluteConfigKey([name])] = ConfigValue(.string(value), isSecret: secret)
        }
        var providers: [any ConfigProvider] = [
            InMemoryProvider(name: "flags", values: values),
            EnvironmentVariablesProvider(
                environmentVariables: environment,
                secretsSpecifier: .specific(["HISTORIAN_REDIS_URL", "HISTORIAN_POSTGRES_URL", "HISTORIAN_API_TOKEN"])
            ).prefixKeys(with: "historian"),
        ]
        let file = configFile ?? (FileManager.default.fileExists(atPath: defaultConfigFile) ? defaultConfigFile : nil)
        if let file {
            do {
                providers.append(try await FileProvider<YAMLSnapshot>(filePath: FilePath(file)))
            } catch {
                throw HistorianError(.invalidConfiguration, "cannot read config file \(file): \(error)")
            }
        }
        let reader = ConfigReader(providers: providers)
        func value(_ name: String) -> String {
            let key = keys.first { $0.name == name }!
            return reader.string(forKey: ConfigKey(name), isSecret: key.isSecret) ?? key.defaultValue
        }
        return try HistorianConfiguration(value: value, environment: environment)
    }

    /// Resolves the configuration from each key's value (`value("archive_dir")`), as `load` does
    /// once it has read its sources.
    package init(value: (String) -> String, environment: [String: String]) throws {
        // Values reach C (libpq, hiredis, the file system) as C strings, which end at a NUL: one
        // holding a NUL would be read as something other than what was written (and redacted).
        for key in Self.keys where value(key.name).utf8.contains(0) {
            throw HistorianError(.invalidConfiguration, "\(key.name) holds a NUL byte")
        }
        func parsed<T>(_ name: String, _ parse: (String) -> T?, _ expected: String) throws -> T {
            let raw = value(name)
            guard let result = parse(raw.trimmingCharacters(in: .whitespaces)) else {
                throw HistorianError(.invalidConfiguration, "\(name): \"\(raw)\" is not \(expected)")
            }
            return result
        }
        func count(_ name: String, _ range: ClosedRange<Int>) throws -> Int {
            try parsed(name, { Int($0).flatMap { range.contains($0) ? $0 : nil } }, "a whole number in \(range)")
        }
        func duration(_ name: String) throws -> Duration {
            try parsed(name, Self.parseDuration, "a duration like 500ms, 30s, 30m, 36h or 30d")
        }
        redisURL = value("redis_url")
        redisCluster = try parsed("redis_cluster", Self.parseBool, "true or false")
        streamShards = try count("stream_shards", 1...1024)
        postgresURL = value("postgres_url")
        stream = value("stream")
        group = value("group")
        dlqStream = value("dlq_stream")
        let instance = value("instance")
        let consumer = value("consumer")
        self.consumer = consumer.isEmpty ? Self.hostName() + (instance.isEmpty ? "" : "-" + instance) : consumer
        workers = try count("workers", 1...64)
        maxContentBytes = try parsed("max_content_bytes", Self.parseSize, "a size like 1048576, 512KiB or 1MiB")
        batchSize = try count("batch_size", 1...100_000)
        batchBytes = try parsed("batch_bytes", Self.parseSize, "a size like 4194304, 512KiB or 4MiB")
        batchLinger = try duration("batch_linger")
        maxDeliveries = try count("max_deliveries", 1...1_000_000)
        claimIdle = try duration("claim_idle")
        recentSize = try count("recent_size", 0...10_000)
        sessionTTL = try duration("session_ttl")
        keyPrefix = value("key_prefix")
        langchainCache = try parsed("langchain_cache", Self.parseBool, "true or false")
        archiveDir = value("archive_dir")
        archiveAfter = try duration("archive_after")
        archiveEvery = try duration("archive_every")
        shutdownGrace = try duration("shutdown_grace")
        let metrics = value("metrics_address").trimmingCharacters(in: .whitespaces)
        metricsAddress = metrics.isEmpty ? nil : try MetricsAddress(parsing: metrics)
        let api = value("api_address").trimmingCharacters(in: .whitespaces)
        do {
            apiAddress = api.isEmpty ? nil : try MetricsAddress(parsing: api)
        } catch let error as HistorianError {
            // The same form as metrics_address, and the same checks; the message names this key.
            let message = error.message.replacingOccurrences(of: "metrics_address", with: "api_address")
            throw HistorianError(error.code, message)
        }
        logLevel = try parsed("log_level", { Logger.Level(rawValue: $0.lowercased()) }, "a log level")
        logFormat = try parsed("log_format", { LogFormat(rawValue: $0.lowercased()) }, "text or json")
        for (name, text) in [("stream", stream), ("group", group), ("dlq_stream", dlqStream), ("consumer", self.consumer)]
        where text.isEmpty {
            throw HistorianError(.invalidConfiguration, "\(name) must not be empty")
        }
        if redisCluster {
            // LangChain's reader addresses `message_store:<id>` on one node, in another slot than
            // the recent list it mirrors in the same script call.
            if langchainCache {
                throw HistorianError(.invalidConfiguration, "langchain_cache cannot be used with redis_cluster")
            }
            // A brace in the prefix would be taken for the hash tag the key names rely on.
            if keyPrefix.contains("{") || keyPrefix.contains("}") {
                throw HistorianError(.invalidConfiguration, "key_prefix must not contain { or } with redis_cluster")
            }
        }
        if sessionTTL < .seconds(1) {
            throw HistorianError(.invalidConfiguration, "session_ttl must be at least 1s")
        }
        redisPassword = Self.credential("redis-password", environment: environment)
        postgresPassword = Self.credential("postgres-password", environment: environment)
        let token = value("api_token")
        let credentialToken = Self.credential("api-token", environment: environment)
        apiToken = !token.isEmpty ? token : credentialToken?.isEmpty == false ? credentialToken : nil
    }

    /// Whether the Redis side is that of contract §9: a cluster, or a stream in shards.
    public var isSharded: Bool { redisCluster || streamShards > 1 }

    /// Refuses `what` on a Redis Cluster, which it does not handle yet (it scans one node's
    /// keys, or spans slots in one transaction).
    public func requireSingleNode(for what: String) throws {
        guard !redisCluster else {
            throw HistorianError(.invalidConfiguration, "\(what) does not work with redis_cluster yet (see docs/cluster.md)")
        }
    }

    /// A secret from systemd's `LoadCredential=` directory, without its trailing newline.
    static func credential(_ name: String, environment: [String: String]) -> String? {
        guard let directory = environment["CREDENTIALS_DIRECTORY"], !directory.isEmpty,
            let data = FileManager.default.contents(atPath: directory + "/" + name)
        else { return nil }
        let text = String(decoding: data, as: UTF8.self)
        return text.hasSuffix("\n") ? String(text.dropLast()) : text
    }

    /// The kernel's host name, up to its first dot. Not `ProcessInfo.hostName`, which resolves
    /// the name through DNS: a start would wait on a slow resolver, and the lookup opens a
    /// netlink socket that the systemd unit's sandbox does not allow.
    static func hostName() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "historian" }
        let name = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return name.split(separator: ".").first.map(String.init) ?? "historian"
    }

    /// `500ms`, `30s`, `30m`, `36h`, `30d`, `0s`; `nil` for anything else.
    public static func parseDuration(_ text: String) -> Duration? {
        let units: [(String, Int64)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)]
        for (suffix, milliseconds) in units where text.hasSuffix(suffix) {
            let number = text.dropLast(suffix.count)
            // "ms" also ends in "s": only accept a pure number before the suffix.
            guard !number.isEmpty, number.allSatisfy(\.isNumber), let value = Int64(number) else { continue }
            let (total, overflow) = value.multipliedReportingOverflow(by: milliseconds)
            return overflow ? nil : .milliseconds(total)
        }
        return nil
    }

    /// `true`/`false` (also `yes`/`no`, `on`/`off`, `1`/`0`, any case); `nil` otherwise.
    public static func parseBool(_ text: String) -> Bool? {
        switch text.lowercased() {
        case "true", "yes", "on", "1": true
        case "false", "no", "off", "0": false
        default: nil
        }
    }

    /// `1048576`, `512KiB`, `1MiB`, `1GiB` (also `KB`/`MB`/`GB` as powers of 1024); `nil` otherwise.
    public static func parseSize(_ text: String) -> Int? {
        let units: [(String, Int)] = [
            ("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("KB", 1 << 10), ("MB", 1 << 20), ("GB", 1 << 30),
            ("", 1),
        ]
        for (suffix, factor) in units where text.hasSuffix(suffix) {
            let number = text.dropLast(suffix.count)
            guard !number.isEmpty, number.allSatisfy(\.isNumber), let value = Int(number), value > 0 else { continue }
            let (total, overflow) = value.multipliedReportingOverflow(by: factor)
            return overflow ? nil : total
        }
        return nil
    }

    /// The configuration as `key = value` lines, secrets redacted, for `check`.
    public var redactedLines: [String] {
        let shown: [(String, String)] = [
            ("redis_url", Self.redactURL(redisURL)), ("redis_cluster", String(redisCluster)),
            ("postgres_url", postgresURL.isEmpty ? "(libpq defaults)" : Self.redactURL(postgresURL)),
            ("stream", stream), ("stream_shards", String(streamShards)), ("group", group), ("consumer", consumer), ("workers", String(workers)),
            ("dlq_stream", dlqStream), ("max_content_bytes", String(maxContentBytes)),
            ("batch_size", String(batchSize)), ("batch_bytes", String(batchBytes)), ("batch_linger", "\(batchLinger)"),
            ("max_deliveries", String(maxDeliveries)), ("claim_idle", "\(claimIdle)"),
            ("recent_size", String(recentSize)), ("session_ttl", "\(sessionTTL)"), ("key_prefix", keyPrefix),
            ("langchain_cache", String(langchainCache)), ("archive_dir", archiveDir),
            ("archive_after", "\(archiveAfter)"), ("archive_every", "\(archiveEvery)"),
            ("shutdown_grace", "\(shutdownGrace)"), ("metrics_address", metricsAddress?.description ?? "(off)"),
            ("api_address", apiAddress?.description ?? "(off)"),
            ("api_token", apiToken == nil ? "(none)" : "(set)"),
            ("log_level", logLevel.rawValue), ("log_format", logFormat.rawValue),
            ("redis_password", redisPassword == nil ? "(none)" : "(from credentials)"),
            ("postgres_password", postgresPassword == nil ? "(none)" : "(from credentials)"),
        ]
        return shown.map { "\($0.0) = \($0.1)" }
    }
}
