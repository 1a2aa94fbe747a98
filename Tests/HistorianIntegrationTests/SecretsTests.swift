import Foundation
import LocalServers
import RedisClient
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Passwords never come out, whether given as systemd credentials or in the URLs: not in a log
/// line of either format, a metric, a health body or `check`'s output, through failed
/// connections and good ones.
@Suite(.serialized)
struct SecretsTests {
    /// Where the passwords come from.
    enum Source: String, CaseIterable, Sendable {
        /// Files in `$CREDENTIALS_DIRECTORY` (systemd's `LoadCredential=`).
        case credentials
        /// `redis://:password@…` and `postgresql://app:password@…`.
        case urls
    }

    @Test(
        "sentinel passwords appear in no log line, metric, health body or check output",
        arguments: Source.allCases
    )
    func passwordsNeverLeak(from source: Source) async throws {
        try await TestEnvironment.with { environment in
            let redisSecret = "redis-sentinel-\(UUID().uuidString)"
            let postgresSecret = "postgres-sentinel-\(UUID().uuidString)"
            let credentials = try TemporaryDirectory("historian-credentials")
            defer { credentials.remove() }
            try redisSecret.write(toFile: credentials.path + "/redis-password", atomically: true, encoding: .utf8)
            try (postgresSecret + "\n").write(toFile: credentials.path + "/postgres-password", atomically: true, encoding: .utf8)

            // PostgreSQL: a role that must give its password (SCRAM) on TCP; the test's own
            // connections stay the trusted superuser's.
            let server = environment.postgresServer
            try await server.psql("CREATE ROLE app LOGIN PASSWORD '\(postgresSecret)'")
            try await server.psql("ALTER DATABASE \(environment.database) OWNER TO app")
            let hba = server.directory + "/data/pg_hba.conf"
            let rules = try String(contentsOfFile: hba, encoding: .utf8)
            try ("host all app 127.0.0.1/32 scram-sha-256\n" + rules).write(toFile: hba, atomically: false, encoding: .utf8)
            try await server.psql("SELECT pg_reload_conf()")
            let port = try Loopback.freePort()
            var variables = environment.historianEnvironment
            switch source {
            case .credentials:
                variables["HISTORIAN_POSTGRES_URL"] = "postgresql://app@127.0.0.1:\(server.port)/\(environment.database)"
                variables["CREDENTIALS_DIRECTORY"] = credentials.path
            case .urls:
                variables["HISTORIAN_POSTGRES_URL"] =
                    "postgresql://app:\(postgresSecret)@127.0.0.1:\(server.port)/\(environment.database)"
                variables["HISTORIAN_REDIS_URL"] = "redis://:\(redisSecret)@127.0.0.1:\(environment.redisServer.port)"
                variables["CREDENTIALS_DIRECTORY"] = nil
            }
            variables["HISTORIAN_METRICS_ADDRESS"] = "127.0.0.1:\(port)"
            variables["HISTORIAN_LOG_LEVEL"] = "trace"

            var seen: [String] = []
            var current: String?
            for format in ["text", "json"] {
                variables["HISTORIAN_LOG_FORMAT"] = format
                // Failing first: PostgreSQL down, Redis wanting another password.
                let wrong = "another-\(UUID().uuidString)"
                try await Self.requirePassword(wrong, redis: environment.redisServer, current: current)
                current = wrong
                try await server.stop()

                let daemon = try HistorianProcess(["run"], environment: variables)
                defer { daemon.signal(SIGKILL) }
                try await eventually("failed connections logged", timeout: .seconds(60)) {
                    daemon.errorOutput.contains("authentication failed") && daemon.errorOutput.contains("retrying")
                }
                for path in ["/readyz", "/healthz", "/metrics"] {
                    let response = try LoopbackHTTP.get(port: port, path: path)
                    seen.append(response.body)
                    if path == "/readyz" { #expect(response.status == 503) }
                }
                let check = try await HistorianProcess.run(["check"], environment: variables)
                #expect(check.status == 1)
                #expect(check.output.contains("problem: PostgreSQL unreachable") && check.output.contains("problem: Redis unreachable"))
                seen += [check.output, check.errors]

                // Then good: the right password, PostgreSQL up; messages stored with both secrets.
                try await Self.requirePassword(redisSecret, redis: environment.redisServer, current: wrong)
                current = redisSecret
                try await server.start()
                try await eventually("ready", timeout: .seconds(60)) {
                    try LoopbackHTTP.get(port: port, path: "/readyz").status == 200
                }
                var configuration = try RedisConfiguration(url: environment.redisURL)
                configuration.password = redisSecret
                let redis = try await RedisConnection.connect(configuration, logger: environment.logger)
                let before = try await environment.scalar("SELECT count(*) FROM messages")
                let seed = (format == "text" ? 81 : 82) + (source == .urls ? 10 : 0)
                let messages = Producer.workload(count: 50, conversations: 5, seed: seed)
                try await Producer.append(messages, redis: redis)
                redis.close()
                try await eventually("the messages stored", timeout: .seconds(60)) {
                    try await environment.scalar("SELECT count(*) FROM messages") == before + messages.count
                }
                for path in ["/readyz", "/healthz", "/metrics"] {
                    seen.append(try LoopbackHTTP.get(port: port, path: path).body)
                }
                daemon.signal(SIGTERM)
                #expect(try await daemon.wait(timeout: .seconds(60)) == 0)
                seen += [daemon.output, daemon.errorOutput]

                let lines = daemon.errorOutput.split(separator: "\n")
                #expect(lines.count > 20, "\(format): too few log lines to mean anything")
                if format == "json" {
                    let objects = lines.filter { (try? JSONSerialization.jsonObject(with: Data($0.utf8))) is [String: Any] }
                    #expect(objects.count == lines.count, "lines that are not JSON objects: \(lines.count - objects.count)")
                }
            }
            try await Self.requirePassword(nil, redis: environment.redisServer, current: redisSecret)

            for (index, text) in seen.enumerated() {
                #expect(!text.contains(redisSecret), "the Redis password in output \(index)")
                #expect(!text.contains(postgresSecret), "the PostgreSQL password in output \(index)")
            }
            print("passwordsNeverLeak(\(source)): \(seen.count) outputs, \(seen.reduce(0) { $0 + $1.utf8.count }) bytes, no secret")
        }
    }

    /// Makes Redis require `password` (nil: none), authenticating with `current` first.
    static func requirePassword(_ password: String?, redis server: RedisServer, current: String? = nil) async throws {
        var configuration = try RedisConfiguration(url: server.url)
        configuration.password = current
        let redis = try await RedisConnection.connect(configuration, logger: .init(label: "test"))
        defer { redis.close() }
        _ = try await redis.send("CONFIG", "SET", "requirepass", RedisArgument(password ?? ""))
    }
}
