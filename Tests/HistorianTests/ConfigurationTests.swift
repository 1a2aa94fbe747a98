import Foundation
import Testing

@testable import Historian

struct ConfigurationTests {
    @Test(arguments: [
        ("30m", Duration.seconds(1800)), ("36h", .seconds(129_600)), ("30d", .seconds(2_592_000)), ("0s", .zero),
        ("500ms", .milliseconds(500)), ("10s", .seconds(10)),
    ])
    func parsesDurations(_ text: String, _ duration: Duration) {
        #expect(HistorianConfiguration.parseDuration(text) == duration)
    }

    @Test(arguments: ["", "10", "s", "1.5s", "-1s", "10 s", "10w"])
    func refusesBadDurations(_ text: String) {
        #expect(HistorianConfiguration.parseDuration(text) == nil)
    }

    @Test func parsesSizes() {
        #expect(HistorianConfiguration.parseSize("1MiB") == 1_048_576)
        #expect(HistorianConfiguration.parseSize("512KiB") == 524_288)
        #expect(HistorianConfiguration.parseSize("4096") == 4096)
        #expect(HistorianConfiguration.parseSize("0") == nil)
        #expect(HistorianConfiguration.parseSize("1TiB") == nil)
    }

    @Test func defaultsAreTheContracts() async throws {
        let configuration = try await HistorianConfiguration.load(flags: [:], configFile: nil, environment: [:])
        #expect(configuration.redisURL == "redis://127.0.0.1:6379")
        #expect(configuration.postgresURL == "")
        #expect(configuration.stream == "chat:messages" && configuration.group == "historian")
        #expect(configuration.dlqStream == "chat:messages:dlq")
        #expect(configuration.workers == 2 && configuration.maxDeliveries == 10 && configuration.recentSize == 10)
        #expect(configuration.maxContentBytes == 1 << 20)
        #expect(configuration.claimIdle == .seconds(60) && configuration.sessionTTL == .seconds(1800))
        #expect(configuration.archiveDir == "/var/lib/historian/archive")
        #expect(configuration.archiveAfter == .seconds(30 * 86_400) && configuration.archiveEvery == .seconds(3600))
        #expect(configuration.shutdownGrace == .seconds(10) && configuration.metricsAddress == MetricsAddress(host: "127.0.0.1", port: 9464))
        #expect(configuration.consumer == HistorianConfiguration.hostName())
    }

    @Test func flagsBeatEnvironmentBeatsFileBeatsDefaults() async throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("historian-\(UUID()).yaml").path
        try """
        stream: from-file
        group: from-file
        workers: 3
        archive_dir: /from/file
        """.write(toFile: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let configuration = try await HistorianConfiguration.load(
            flags: ["stream": "from-flag"],
            configFile: file,
            environment: ["HISTORIAN_STREAM": "from-env", "HISTORIAN_GROUP": "from-env", "HISTORIAN_INSTANCE": "7"]
        )
        #expect(configuration.stream == "from-flag")
        #expect(configuration.group == "from-env")
        #expect(configuration.workers == 3)
        #expect(configuration.archiveDir == "/from/file")
        #expect(configuration.batchSize == 500 && configuration.batchBytes == 4 << 20)
        #expect(configuration.consumer == HistorianConfiguration.hostName() + "-7")
    }

    @Test func langchainCacheIsABoolean() async throws {
        #expect(try await HistorianConfiguration.load(flags: [:], configFile: nil, environment: [:]).langchainCache == false)
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("historian-\(UUID()).yaml").path
        try "langchain_cache: true\n".write(toFile: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let fromFile = try await HistorianConfiguration.load(flags: [:], configFile: file, environment: [:])
        #expect(fromFile.langchainCache && fromFile.redactedLines.contains("langchain_cache = true"))
        let fromEnvironment = try await HistorianConfiguration.load(
            flags: [:],
            configFile: nil,
            environment: ["HISTORIAN_LANGCHAIN_CACHE": "yes"]
        )
        #expect(fromEnvironment.langchainCache)
        let fromFlag = try await HistorianConfiguration.load(flags: ["langchain_cache": "false"], configFile: file, environment: [:])
        #expect(!fromFlag.langchainCache)
        await #expect(throws: HistorianError.self) {
            try await HistorianConfiguration.load(flags: ["langchain_cache": "maybe"], configFile: nil, environment: [:])
        }
    }

    @Test func batchBytesTakesSizes() async throws {
        let configuration = try await HistorianConfiguration.load(
            flags: [:],
            configFile: nil,
            environment: ["HISTORIAN_BATCH_BYTES": "512KiB"]
        )
        #expect(configuration.batchBytes == 512 << 10)
        #expect(configuration.redactedLines.contains("batch_bytes = 524288"))
        await #expect(throws: HistorianError.self) {
            try await HistorianConfiguration.load(flags: ["batch_bytes": "lots"], configFile: nil, environment: [:])
        }
    }

    @Test func logFormatIsTextOrJSON() async throws {
        #expect(try await HistorianConfiguration.load(flags: [:], configFile: nil, environment: [:]).logFormat == .text)
        let json = try await HistorianConfiguration.load(flags: [:], configFile: nil, environment: ["HISTORIAN_LOG_FORMAT": "json"])
        #expect(json.logFormat == .json)
        #expect(json.redactedLines.contains("log_format = json"))
        do {
            _ = try await HistorianConfiguration.load(flags: ["log_format": "xml"], configFile: nil, environment: [:])
            Issue.record("accepted log_format xml")
        } catch let error as HistorianError {
            #expect(error.message.contains("log_format") && error.message.contains("text or json"))
        }
    }

    @Test func invalidValuesNameTheKey() async {
        await #expect(throws: HistorianError.self) {
            try await HistorianConfiguration.load(flags: ["workers": "many"], configFile: nil, environment: [:])
        }
        do {
            _ = try await HistorianConfiguration.load(flags: [:], configFile: nil, environment: ["HISTORIAN_SESSION_TTL": "soon"])
            Issue.record("accepted a bad duration")
        } catch let error as HistorianError {
            #expect(error.message.contains("session_ttl"))
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test func credentialsComeFromTheCredentialsDirectory() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("creds-\(UUID())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try "pg-secret\n".write(toFile: directory + "/postgres-password", atomically: true, encoding: .utf8)
        let configuration = try await HistorianConfiguration.load(
            flags: [:],
            configFile: nil,
            environment: ["CREDENTIALS_DIRECTORY": directory]
        )
        #expect(configuration.postgresPassword == "pg-secret")
        #expect(configuration.redisPassword == nil)
        #expect(!configuration.redactedLines.joined().contains("pg-secret"))
    }

    @Test(arguments: [
        ("redis://user:pw@host:6379/0", "redis://user:***@host:6379/0"),
        ("postgresql://app:pa55@db/historian", "postgresql://app:***@db/historian"),
        ("host=db password=pa55 user=app", "host=db password=*** user=app"),
        ("postgresql://db/historian?user=app&password=pa55", "postgresql://db/historian?user=app&password=***"),
        ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
        // sslpassword unlocks an encrypted client key; paths and sslmode are no secrets.
        (
            "postgresql://app:pa55@db/h?sslmode=verify-full&sslkey=/k.key&sslpassword=k3y&password=pa55",
            "postgresql://app:***@db/h?sslmode=verify-full&sslkey=/k.key&sslpassword=***&password=***"
        ),
        ("host=db sslpassword=k3y sslrootcert=/ca.crt", "host=db sslpassword=*** sslrootcert=/ca.crt"),
    ])
    func redactsURLs(_ url: String, _ redacted: String) {
        #expect(HistorianConfiguration.redactURL(url) == redacted)
    }

    /// fuzz/regressions/configuration/redis-password-with-at-sign: Redis' parsers end the user
    /// information at the authority's last `@`, so a password may hold one; the redaction ended
    /// at the first, and `historian check` printed the rest of the password.
    @Test(arguments: [
        ("redis://app:pa@ss@127.0.0.1:6379/0", "redis://app:***@127.0.0.1:6379/0"),
        ("redis://app:p@s@10.0.0.1:7000,10.0.0.2:7000", "redis://app:***@10.0.0.1:7000,10.0.0.2:7000"),
        ("unix://:p@ss@/run/redis.sock?db=1", "unix://:***@/run/redis.sock?db=1"),
    ])
    func redactsAPasswordHoldingAnAtSign(_ url: String, _ redacted: String) async throws {
        #expect(HistorianConfiguration.redactURL(url) == redacted)
        let configuration = try await HistorianConfiguration.load(
            flags: ["redis_url": url, "redis_cluster": url.contains(",") ? "true" : "false"],
            configFile: nil,
            environment: [:]
        )
        #expect(configuration.redactedLines.contains("redis_url = \(redacted)"))
    }

    /// fuzz/regressions/configuration/conninfo-with-a-nul-byte: libpq reads a conninfo as a C
    /// string, up to its first NUL; what came after (here the rest of an `sslpassword` line)
    /// was redacted as text libpq never read, so the redacted line and libpq disagreed.
    @Test(arguments: ["postgres_url", "redis_url", "archive_dir", "api_token"])
    func aValueHoldingANULByteIsRefused(_ key: String) async throws {
        let secret = "sslpassword = 1\u{0}'k3y pass'"
        do {
            _ = try await HistorianConfiguration.load(flags: [key: "host=db " + secret], configFile: nil, environment: [:])
            Issue.record("accepted")
        } catch let error as HistorianError {
            #expect(error.code == .invalidConfiguration)
            #expect(error.message == "\(key) holds a NUL byte")
        }
    }

    /// fuzz/regressions/configuration/postgres-password-after-a-blank: libpq allows blanks around
    /// `=` and reads a value in single quotes whole; the redaction took `password=` and the word
    /// after it only, and printed a password written `password= secret` as it was.
    @Test(arguments: [
        ("host=db password= secret user=app", "host=db password= *** user=app"),
        ("host=db password = 'pa ss' user=app", "host=db password = *** user=app"),
        (#"host=db password=pa\ ss dbname=h"#, "host=db password=*** dbname=h"),
        ("host=db password='unterminated", "host=db password=***"),
        ("host=db password secret", "host=db password ***"),
        ("historian", "historian"),
        ("postgresql://app:pa?ss@db/historian", "postgresql://app:***@db/historian"),
        ("postgresql://db/h?password=a&passw%6Frd=b", "postgresql://db/h?password=***&passw%6Frd=***"),
    ])
    func redactsConninfoPasswordsAsLibpqReadsThem(_ url: String, _ redacted: String) {
        #expect(HistorianConfiguration.redactURL(url) == redacted)
    }
}

struct ServiceDescriptionTests {
    /// ServiceLifecycle logs every service's description at debug level.
    @Test func serviceDescriptionHidesSecrets() async throws {
        let configuration = try await HistorianConfiguration.load(
            flags: [
                "redis_url": "redis://app:redis-secret@127.0.0.1:6379",
                "postgres_url": "postgresql://historian:pg-secret@127.0.0.1/chat",
            ],
            configFile: nil,
            environment: [:]
        )
        let service = try IngestService(configuration: configuration, once: false, logger: .init(label: "test"))
        let text = "\(service)" + String(reflecting: service)
        #expect(!text.contains("redis-secret") && !text.contains("pg-secret"))
        #expect(text.contains("chat:messages"))
    }
}
