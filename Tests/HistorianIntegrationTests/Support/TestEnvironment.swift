import Foundation
import LocalServers
import Logging
import PostgresClient
import RedisClient
import Testing

/// A real Redis and a real PostgreSQL for one test, started on free loopback ports and removed
/// at the end, plus helpers to run the `historian` executable against them.
final class TestEnvironment: Sendable {
    let redisServer: RedisServer
    let postgresServer: PostgresServer
    let database: String
    /// Whether `historian` runs as deploy/'s Redis user and PostgreSQL runtime role (and
    /// `migrate` as the owner role), not as the servers' superusers.
    let leastPrivilege: Bool
    let logger = Logger(label: "test")

    /// Where `historian` writes archives in this environment (created on first use).
    let archiveDir = FileManager.default.temporaryDirectory.appendingPathComponent("historian-archive-\(UUID().uuidString)").path

    /// The servers as the tests see them: Redis' default user, PostgreSQL's superuser.
    var redisURL: String { redisServer.url }
    var postgresURL: String { postgresServer.url(database: database) }

    /// The servers as `historian` sees them.
    var historianRedisURL: String {
        leastPrivilege
            ? LeastPrivilege.redisURL(redisServer, user: "historian", password: LeastPrivilege.historianPassword)
            : redisURL
    }
    var historianPostgresURL: String {
        leastPrivilege
            ? LeastPrivilege.postgresURL(postgresServer, role: LeastPrivilege.runtimeRole, database: database)
            : postgresURL
    }

    private init(redis: RedisServer, postgres: PostgresServer, database: String, leastPrivilege: Bool) {
        self.redisServer = redis
        self.postgresServer = postgres
        self.database = database
        self.leastPrivilege = leastPrivilege
    }

    /// With `redisTLS`, Redis speaks TLS only (``redisURL`` is `rediss://`, which Historian cannot use:
    /// tests reach it through a tunnel); with `postgresTLS`, PostgreSQL takes TLS connections only, and
    /// ``postgresURL`` connects with `sslmode=verify-full`.
    static func start(
        redisAppendOnly: Bool = false,
        redisTLS: TestCertificates? = nil,
        postgresTLS: PostgresServer.TLS? = nil,
        leastPrivilege: Bool = false
    ) async throws -> TestEnvironment {
        async let redis = RedisServer.start(
            appendOnly: redisAppendOnly,
            tls: redisTLS,
            users: leastPrivilege ? try LeastPrivilege.redisUsers() : nil
        )
        async let postgres = PostgresServer.start(tls: postgresTLS)
        let environment = TestEnvironment(
            redis: try await redis,
            postgres: try await postgres,
            database: "historian",
            leastPrivilege: leastPrivilege
        )
        try await environment.postgresServer.createDatabase(environment.database)
        if leastPrivilege {
            try await LeastPrivilege.createRoles(environment.postgresServer, database: environment.database)
        }
        return environment
    }

    /// Runs `body` with a fresh environment and tears it down afterwards, whatever happens.
    static func with<T>(
        redisAppendOnly: Bool = false,
        redisTLS: TestCertificates? = nil,
        postgresTLS: PostgresServer.TLS? = nil,
        leastPrivilege: Bool = false,
        _ body: (TestEnvironment) async throws -> T
    ) async throws -> T {
        let environment = try await start(
            redisAppendOnly: redisAppendOnly,
            redisTLS: redisTLS,
            postgresTLS: postgresTLS,
            leastPrivilege: leastPrivilege
        )
        do {
            let result = try await body(environment)
            await environment.destroy()
            return result
        } catch {
            await environment.destroy()
            throw error
        }
    }

    func destroy() async {
        try? await redisServer.destroy()
        try? await postgresServer.destroy()
        try? FileManager.default.removeItem(atPath: archiveDir)
    }

    /// The environment variables that point `historian` at these servers, on top of the few the
    /// test runner passes on (``ChildEnvironment``).
    var historianEnvironment: [String: String] {
        ChildEnvironment.clean([
            "HISTORIAN_REDIS_URL": historianRedisURL,
            "HISTORIAN_POSTGRES_URL": historianPostgresURL,
            "HISTORIAN_ARCHIVE_DIR": archiveDir,
            "HISTORIAN_LOG_LEVEL": "notice",
            // No metrics endpoint unless a test asks for one: daemons of tests that run at the
            // same time would all want the default 127.0.0.1:9464.
            "HISTORIAN_METRICS_ADDRESS": "",
        ])
    }

    /// Runs `historian migrate` against these servers (as the owner role under least
    /// privilege) and expects it to succeed.
    func migrate() async throws {
        var variables = historianEnvironment
        if leastPrivilege {
            variables["HISTORIAN_POSTGRES_URL"] = LeastPrivilege.postgresURL(
                postgresServer,
                role: LeastPrivilege.ownerRole,
                database: database
            )
        }
        let result = try await HistorianProcess.run(["migrate"], environment: variables)
        #expect(result.status == 0, "\(result.errors)")
    }

    func redis() async throws -> RedisConnection {
        try await RedisConnection.connect(RedisConfiguration(url: redisURL), logger: logger)
    }

    func postgres() async throws -> PostgresConnection {
        try await PostgresConnection.connect(conninfo: postgresURL, logger: logger)
    }

    /// The rows of a query, as text.
    func rows(_ sql: String) async throws -> [[String?]] {
        let postgres = try await postgres()
        defer { postgres.close() }
        return try await postgres.query(sql).rows
    }

    /// One integer from a query such as `SELECT count(*) …`.
    func scalar(_ sql: String) async throws -> Int {
        let rows = try await rows(sql)
        guard let value = rows.first?.first ?? nil, let number = Int(value) else { return -1 }
        return number
    }

    /// How many entries the group has delivered but not acknowledged.
    func pendingCount(stream: String = "chat:messages", group: String = "historian") async throws -> Int {
        let redis = try await redis()
        defer { redis.close() }
        // -1 until the group exists.
        let summary = try? await redis.send("XPENDING", RedisArgument(stream), RedisArgument(group))
        return Int(summary?.array?.first?.int ?? -1)
    }
}

/// The environment of a process a test starts: an allow-list of the test runner's variables and
/// what the test sets, nothing else. A runner started by systemd, or from a shell with `PG*` or
/// `HISTORIAN_*` set, would otherwise hand `historian` a notify socket, a watchdog, credentials or
/// settings that change what it does (`PGOPTIONS`, `CREDENTIALS_DIRECTORY`, `NOTIFY_SOCKET`, …).
enum ChildEnvironment {
    /// What is passed on: what finds programs, names the user and sets the locale and the
    /// temporary directory.
    static let passedOn: Set<String> = ["PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TMPDIR"]

    /// The runner's variables in ``passedOn`` (and `LC_*`), with `variables` on top.
    static func clean(_ variables: [String: String]) -> [String: String] {
        var environment = ProcessInfo.processInfo.environment.filter { name, _ in
            passedOn.contains(name) || name.hasPrefix("LC_")
        }
        environment.merge(variables) { _, given in given }
        return environment
    }
}

/// The `historian` executable built next to the test bundle.
enum HistorianBinary {
    static var path: String {
        if let override = ProcessInfo.processInfo.environment["HISTORIAN_BINARY"] { return override }
        let bundle = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        var directory = bundle.deletingLastPathComponent()
        // On Linux the test runner is the .xctest executable itself, beside the products.
        for _ in 0..<4 {
            let candidate = directory.appendingPathComponent("historian").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            directory = directory.deletingLastPathComponent()
        }
        return bundle.deletingLastPathComponent().appendingPathComponent("historian").path
    }
}

/// A running `historian` process, its output collected in temporary files.
final class HistorianProcess: Sendable {
    let child: ChildProcess
    let arguments: [String]
    private let outputPath: String
    private let errorPath: String

    init(_ arguments: [String], environment: [String: String]) throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("historian-test-\(UUID().uuidString)").path
        outputPath = base + ".out"
        errorPath = base + ".err"
        self.arguments = arguments
        child = try ChildProcess(
            executable: HistorianBinary.path,
            arguments: arguments,
            environment: environment,
            standardOutput: outputPath,
            standardError: errorPath
        )
    }

    deinit {
        child.signal(SIGKILL)
        try? FileManager.default.removeItem(atPath: outputPath)
        try? FileManager.default.removeItem(atPath: errorPath)
    }

    var output: String { (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "" }
    var outputBytes: [UInt8] { (try? [UInt8](Data(contentsOf: URL(fileURLWithPath: outputPath)))) ?? [] }
    var errorOutput: String { (try? String(contentsOfFile: errorPath, encoding: .utf8)) ?? "" }
    var isRunning: Bool { child.isRunning }

    /// Waits for exit and returns the status; kills the process if it outlives `timeout`.
    @discardableResult
    func wait(timeout: Duration = .seconds(120)) async throws -> Int32 {
        if let status = try await child.wait(timeout: timeout) { return status }
        Issue.record("historian \(arguments) did not exit within \(timeout)")
        child.signal(SIGKILL)
        return try await child.wait(timeout: .seconds(10)) ?? -1
    }

    func signal(_ signal: Int32) {
        child.signal(signal)
    }

    /// Runs to completion and returns status and output.
    static func run(_ arguments: [String], environment: [String: String], timeout: Duration = .seconds(120)) async throws
        -> (status: Int32, output: String, errors: String)
    {
        let process = try HistorianProcess(arguments, environment: environment)
        let status = try await process.wait(timeout: timeout)
        return (status, process.output, process.errorOutput)
    }

    /// What ``runMeasured(_:environment:timeout:)`` saw of a run.
    struct Measured {
        var status: Int32
        var output: [UInt8]
        var errors: String
        /// The most memory it had resident (`VmHWM`), as last read before it exited.
        var peakResidentBytes: Int
    }

    /// Runs to completion, keeping standard output as bytes, and reads the kernel's high-water
    /// mark of its memory every 10 ms while it runs: the mark only grows, but is gone with the
    /// process, so the last reading stands for its life.
    static func runMeasured(_ arguments: [String], environment: [String: String], timeout: Duration = .seconds(180))
        async throws -> Measured
    {
        let process = try HistorianProcess(arguments, environment: environment)
        var peak = 0
        let deadline = ContinuousClock.now + timeout
        while process.isRunning, ContinuousClock.now < deadline {
            peak = max(peak, process.child.peakResidentBytes ?? 0)
            try await Task.sleep(for: .milliseconds(10))
        }
        let status = try await process.wait(timeout: .seconds(10))
        return Measured(status: status, output: process.outputBytes, errors: process.errorOutput, peakResidentBytes: peak)
    }
}

/// Polls `condition` until it holds, failing the test after `timeout`.
func eventually(
    _ what: String,
    timeout: Duration = .seconds(120),
    _ condition: () async throws -> Bool
) async throws {
    let deadline = ContinuousClock.now + timeout
    // A condition that throws (a table not created yet, a server restarting) is not yet true.
    while !((try? await condition()) ?? false) {
        guard ContinuousClock.now < deadline else {
            throw TimedOut(what: what)
        }
        try await Task.sleep(for: .milliseconds(100))
    }
}

struct TimedOut: Error, CustomStringConvertible {
    var what: String
    var description: String { "timed out waiting for \(what)" }
}

/// What a program run to completion left: its exit status and standard output.
struct ProgramRun {
    var status: Int32
    var output: Data
    var text: String { String(decoding: output, as: UTF8.self) }
}

/// Runs a program (found on `PATH`) to completion.
func runProgram(_ arguments: [String], in directory: String? = nil) throws -> ProgramRun {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = arguments
    if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
    let pipe = Pipe()
    process.standardOutput = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return ProgramRun(status: process.terminationStatus, output: data)
}
