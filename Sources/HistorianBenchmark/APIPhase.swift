import Foundation
import LocalServers
import RedisClient
import Synchronization

/// The history API under load while the pipeline runs: the workload drained into a database of
/// its own (the seed), then `historian run` with `api_address` on, a producer appending new
/// messages of the same conversations at `pipelineRate`, and `wrk` against
/// `GET /v1/conversations/{id}` and then `GET /v1/conversations/{id}/recent` for `seconds` each,
/// every request for a conversation picked at random. Every response must be a 200, and every
/// message appended meanwhile stored, once, without a dead letter.
struct APIPhase {
    let servers: BenchmarkServers
    let workload: Workload
    let messages: [WorkloadMessage]
    /// New messages of the same conversations, for the producer.
    let later: Workload
    let executable: String
    let arguments: [String]
    let pipelineRate: Int
    let seconds: Int
    let connections: Int

    static let stream = "bench:api"
    static let group = "historian"
    static let database = "api"
    /// Conversations the requests pick from.
    static let sampled = 2_000

    /// The two routes, as `wrk` requests them: a path of the conversation, after its ID.
    static let routes: [(name: String, suffix: String)] = [
        ("GET /v1/conversations/{id}", ""), ("GET /v1/conversations/{id}/recent", "/recent"),
    ]

    func run() async throws -> APIResult {
        let wrk = try Self.wrkExecutable()
        // The seed: every conversation stored, its recent list in Redis.
        let seed = DrainPhase(
            servers: servers,
            workload: workload,
            messages: messages,
            executable: executable,
            arguments: arguments,
            workers: nil,
            database: Self.database,
            label: "api: seed"
        )
        _ = try await seed.run()

        let token = (0..<4).map { _ in String(UInt64.random(in: .min ... .max), radix: 16) }.joined()
        let apiPort = try Loopback.freePort()
        let log = try temporaryFile("historian-api")
        let daemon = try ChildProcess(
            executable: executable,
            arguments: [
                "run", "--redis-url", servers.redis.url, "--postgres-url", servers.postgres.url(database: Self.database),
                "--stream", Self.stream, "--dlq-stream", Self.stream + ":dlq", "--api-address", "127.0.0.1:\(apiPort)",
                "--metrics-address", "127.0.0.1:\(try Loopback.freePort())",
            ] + arguments,
            environment: ProcessInfo.processInfo.environment.merging(["HISTORIAN_API_TOKEN": token]) { $1 },
            standardError: log
        )
        defer { daemon.signal(SIGKILL) }
        let redis = try await servers.redisConnection()
        defer { redis.close() }
        try await waitUntilServing(redis, apiPort: apiPort, daemon: daemon, log: log)

        let ids = Self.sample(messages.map { workload.conversations[$0.conversation].id })
        let producer = Producer(servers: servers, workload: later, rate: pipelineRate)
        let producing = Task { try await producer.run() }
        var result = APIResult(pipelineRate: pipelineRate, seconds: seconds, connections: connections)
        do {
            for route in Self.routes {
                report("api: wrk \(route.name), \(connections) connections, \(seconds) s, \(pipelineRate) messages/s appended")
                let script = try Self.script(ids: ids, suffix: route.suffix, token: token)
                defer { unlink(script) }
                let serversBefore = ServerCPU(servers)
                let historianBefore = ServerCPU.stat(daemon.pid)?.own ?? 0
                let output = try await Self.runWrk(
                    wrk,
                    ["-t2", "-c\(connections)", "-d\(seconds)s", "--latency", "-s", script, "http://127.0.0.1:\(apiPort)"]
                )
                let serversAfter = ServerCPU(servers)
                let historianAfter = ServerCPU.stat(daemon.pid)?.own ?? 0
                var load = try WrkOutput(output, route: route.name)
                guard load.failures == 0 else {
                    throw BenchmarkError("api: \(route.name): \(load.failures) responses were not 200 or failed; wrk said:\n\(output)")
                }
                load.historianCPUSeconds = historianAfter - historianBefore
                load.postgresCPUSeconds = serversAfter.postgres - serversBefore.postgres
                load.redisCPUSeconds = serversAfter.redis - serversBefore.redis
                report(load.summary)
                result.routes.append(load)
            }
        } catch {
            producing.cancel()
            throw error
        }
        producing.cancel()
        let appended = try await producing.value
        result.pipelineMessages = appended
        try await waitUntilStored(redis, appended: appended, daemon: daemon, log: log)
        daemon.signal(SIGTERM)
        guard try await daemon.wait(timeout: .seconds(30)) == 0 else {
            throw BenchmarkError("api: historian did not exit cleanly; its log is \(log)")
        }
        keepLogIfNotEmpty(log)
        try await servers.postgres.psql("DROP DATABASE \(Self.database) WITH (FORCE)")
        return result
    }

    /// Up to `sampled` distinct conversation IDs, spread over the workload.
    static func sample(_ ids: [String]) -> [String] {
        let distinct = Array(Set(ids)).sorted()
        guard distinct.count > sampled else { return distinct }
        let step = Double(distinct.count) / Double(sampled)
        return (0..<sampled).map { distinct[Int(Double($0) * step)] }
    }

    /// A `wrk` script: each request for a conversation picked at random, with the token.
    static func script(ids: [String], suffix: String, token: String) throws -> String {
        let path = try temporaryFile("historian-api-wrk", suffix: ".lua")
        let list = ids.map { "\"\($0)\"" }.joined(separator: ",\n")
        let text = """
            local ids = {
            \(list)
            }
            wrk.headers["Authorization"] = "Bearer \(token)"
            request = function()
              return wrk.format("GET", "/v1/conversations/" .. ids[math.random(#ids)] .. "\(suffix)")
            end

            """
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    static func wrkExecutable() throws -> String {
        for directory in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin").split(separator: ":") {
            let candidate = "\(directory)/wrk"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        throw BenchmarkError("api: wrk not found (Debian: apt-get install wrk; scripts/benchmark installs it)")
    }

    static func runWrk(_ executable: String, _ arguments: [String]) async throws -> String {
        let output = try temporaryFile("historian-api-wrk", suffix: ".out")
        defer { unlink(output) }
        let process = try ChildProcess(executable: executable, arguments: arguments, standardOutput: output, standardError: output)
        guard try await process.wait(timeout: .seconds(600)) == 0 else {
            throw BenchmarkError("api: wrk failed: \((try? String(contentsOfFile: output, encoding: .utf8)) ?? "")")
        }
        return try String(contentsOfFile: output, encoding: .utf8)
    }

    private func waitUntilServing(_ redis: RedisConnection, apiPort: Int, daemon: ChildProcess, log: String) async throws {
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            guard daemon.isRunning else { throw BenchmarkError("api: historian exited early; its log is \(log)") }
            let reply = try? await redis.send("XINFO", "CONSUMERS", RedisArgument(Self.stream), RedisArgument(Self.group))
            if let consumers = reply?.array, !consumers.isEmpty, let socket = try? Loopback.connectedSocket(port: apiPort) {
                close(socket)
                return
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw BenchmarkError("api: historian did not start reading and serving within 30 s; its log is \(log)")
    }

    /// Until the group has acknowledged every appended entry; then every one must be in
    /// PostgreSQL, none in the dead-letter stream.
    private func waitUntilStored(_ redis: RedisConnection, appended: Int, daemon: ChildProcess, log: String) async throws {
        let deadline = ContinuousClock.now + .seconds(60)
        while true {
            let groups = try await redis.send("XINFO", "GROUPS", RedisArgument(Self.stream)).array ?? []
            let group = groups.map(\.fieldPairs).first { $0["name"]?.string == Self.group }
            let last = try await redis.send("XREVRANGE", RedisArgument(Self.stream), "+", "-", "COUNT", "1").array?.first?.array?.first?.string
            if group?["pending"]?.int == 0, let last, group?["last-delivered-id"]?.string == last { break }
            guard ContinuousClock.now < deadline, daemon.isRunning else {
                throw BenchmarkError("api: the pipeline did not store what was appended during the load; its log is \(log)")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        let database = try await servers.postgresConnection(Self.database)
        defer { database.close() }
        let stored = try await database.query("SELECT count(*) AS count FROM messages")[0, "count"].flatMap { Int($0) } ?? -1
        let deadLetters = try await redis.send("XLEN", RedisArgument(Self.stream + ":dlq")).int ?? -1
        guard stored == messages.count + appended, deadLetters == 0 else {
            throw BenchmarkError(
                "api: \(stored) messages stored, expected \(messages.count + appended); \(deadLetters) dead letters"
            )
        }
    }

    /// Appends the workload's next messages at `rate` until cancelled; returns how many.
    struct Producer: Sendable {
        let servers: BenchmarkServers
        let workload: Workload
        let rate: Int

        func run() async throws -> Int {
            var workload = workload
            let redis = try await servers.redisConnection()
            defer { redis.close() }
            let start = monotonicNanoseconds()
            var sent = 0
            while !Task.isCancelled {
                let due = Int(Double(monotonicNanoseconds() - start) * Double(rate) / 1e9)
                if due > sent {
                    var commands: [[RedisArgument]] = []
                    for _ in sent..<due {
                        let message = workload.next()
                        commands.append(
                            ["XADD", RedisArgument(APIPhase.stream), "*"]
                                + workload.fields(of: message).flatMap { [RedisArgument($0.0), RedisArgument($0.1)] }
                        )
                    }
                    for reply in try await redis.pipeline(commands) where reply.string == nil {
                        throw BenchmarkError("api: XADD failed: \(reply)")
                    }
                    sent = due
                }
                try? await Task.sleep(for: .milliseconds(5))
            }
            return sent
        }
    }
}

/// What `wrk` measured of one route.
struct WrkOutput: Encodable {
    var route: String
    var requests: Int
    var requestsPerSecond: Double
    var p50: Double
    var p99: Double
    var max: Double
    /// Responses other than 2xx or 3xx, and socket errors.
    var failures: Int
    /// CPU time during the route's run, the pipeline's included.
    var historianCPUSeconds = 0.0
    var postgresCPUSeconds = 0.0
    var redisCPUSeconds = 0.0

    enum CodingKeys: String, CodingKey {
        case route, requests, failures
        case requestsPerSecond = "requests_per_second"
        case p50 = "p50_ms"
        case p99 = "p99_ms"
        case max = "max_ms"
        case historianCPUSeconds = "historian_cpu_seconds"
        case postgresCPUSeconds = "postgres_cpu_seconds"
        case redisCPUSeconds = "redis_cpu_seconds"
    }

    /// Reads `wrk --latency`'s report.
    init(_ text: String, route: String) throws {
        self.route = route
        var requests: Int?
        var rate: Double?
        var percentiles: [String: Double] = [:]
        var maximum: Double?
        var failures = 0
        for line in text.split(whereSeparator: \.isNewline) {
            let words = line.split(separator: " ", omittingEmptySubsequences: true)
            guard let first = words.first else { continue }
            if first == "Requests/sec:", words.count == 2 {
                rate = Double(words[1])
            } else if words.count >= 3, words[1] == "requests", words[2] == "in" {
                requests = Int(first)
            } else if words.count == 2, first.hasSuffix("%"), let value = Self.milliseconds(words[1]) {
                percentiles[String(first)] = value
            } else if first == "Latency", words.count >= 4, let value = Self.milliseconds(words[3]) {
                maximum = value
            } else if line.contains("Non-2xx or 3xx responses:") {
                failures += Int(words.last ?? "") ?? 0
            } else if first == "Socket", words.count >= 2, words[1] == "errors:" {
                // Socket errors: connect 0, read 0, write 0, timeout 0
                failures += words.compactMap { Int($0.trimmingCharacters(in: CharacterSet(charactersIn: ","))) }.reduce(0, +)
            }
        }
        guard let requests, let rate, let p50 = percentiles["50%"], let p99 = percentiles["99%"], let maximum else {
            throw BenchmarkError("api: cannot read wrk's report:\n\(text)")
        }
        self.requests = requests
        self.requestsPerSecond = rate
        self.p50 = p50
        self.p99 = p99
        self.max = maximum
        self.failures = failures
    }

    /// `wrk`'s durations: `812.00us`, `1.23ms`, `2.01s`, `1.00m`.
    static func milliseconds(_ text: Substring) -> Double? {
        for (unit, factor) in [("us", 0.001), ("ms", 1.0), ("s", 1000.0), ("m", 60_000.0)] where text.hasSuffix(unit) {
            guard let value = Double(text.dropLast(unit.count)) else { return nil }
            return value * factor
        }
        return nil
    }

    var summary: String {
        String(
            format: "%@: %.0f requests/s, p50 %.2f ms, p99 %.2f ms, max %.1f ms; CPU per request: historian %.0f µs, PostgreSQL %.0f µs, Redis %.0f µs",
            route,
            requestsPerSecond,
            p50,
            p99,
            max,
            historianCPUSeconds / Double(Swift.max(1, requests)) * 1e6,
            postgresCPUSeconds / Double(Swift.max(1, requests)) * 1e6,
            redisCPUSeconds / Double(Swift.max(1, requests)) * 1e6
        )
    }
}

struct APIResult: Encodable {
    var pipelineRate: Int
    var seconds: Int
    var connections: Int
    /// Messages appended (and stored) during the load.
    var pipelineMessages = 0
    var routes: [WrkOutput] = []

    enum CodingKeys: String, CodingKey {
        case seconds, connections, routes
        case pipelineRate = "pipeline_rate"
        case pipelineMessages = "pipeline_messages"
    }
}
