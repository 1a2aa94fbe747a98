import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A throwaway `redis-server` on a free loopback port, with its data in a temporary directory.
public final class RedisServer: Sendable {
    /// The TCP port it listens on, on 127.0.0.1.
    public let port: Int
    /// The directory holding its data and log.
    public let directory: String
    /// `redis://127.0.0.1:PORT`, or `rediss://127.0.0.1:PORT` with ``tls``.
    public var url: String { "\(tls == nil ? "redis" : "rediss")://127.0.0.1:\(port)" }
    /// The certificates of a server that takes TLS connections only, on ``port``, and only from
    /// clients with a certificate the test CA issued (Redis's default, `tls-auth-clients yes`).
    public let tls: TestCertificates?
    /// The server's process ID while it runs.
    public var pid: pid_t? { process.withLock { $0?.pid } }

    private let executable: String
    private let appendOnly: Bool
    private let usersFile: String?
    private let process: Mutex<ChildProcess?>

    private init(
        executable: String,
        port: Int,
        directory: String,
        appendOnly: Bool,
        tls: TestCertificates?,
        usersFile: String?
    ) {
        self.executable = executable
        self.usersFile = usersFile
        self.port = port
        self.directory = directory
        self.appendOnly = appendOnly
        self.tls = tls
        self.process = Mutex(nil)
    }

    /// Starts a new server; `appendOnly` keeps its data across `restart()`; with `tls`, it speaks TLS
    /// only, with the server certificate of `tls`; `users`, configuration text with `user …`
    /// directives (and comments), gives it those users (`include`).
    public static func start(
        appendOnly: Bool = false,
        tls: TestCertificates? = nil,
        users: String? = nil
    ) async throws -> RedisServer {
        guard let executable = LocalProcess.find("redis-server") else {
            throw LocalServerError(
                "redis-server is not installed: run `apt-get install -y redis-server` (or scripts/test)"
            )
        }
        let directory = try LocalProcess.makeTemporaryDirectory(prefix: "historian-redis")
        var usersFile: String?
        if let users {
            usersFile = directory + "/users.conf"
            try users.write(toFile: directory + "/users.conf", atomically: false, encoding: .utf8)
        }
        var lastError: Error?
        for _ in 0..<5 {
            let server = RedisServer(
                executable: executable,
                port: try Loopback.freePort(),
                directory: directory,
                appendOnly: appendOnly,
                tls: tls,
                usersFile: usersFile
            )
            do {
                try await server.launch()
                return server
            } catch {
                lastError = error
            }
        }
        throw lastError ?? LocalServerError("redis-server did not start")
    }

    /// Starts the server again after `stop()`, on the same port and with the same data.
    public func start() async throws {
        try await launch()
    }

    /// Stops the server (SIGTERM; it writes its append-only file first) and waits for it to exit.
    public func stop() async throws {
        guard let running = process.withLock({ process in defer { process = nil }; return process }) else {
            return
        }
        running.signal(SIGTERM)
        if try await running.wait(timeout: .seconds(20)) == nil {
            running.signal(SIGKILL)
            throw LocalServerError("redis-server on port \(port) did not stop within 20 s; killed")
        }
    }

    /// Stops and starts the server, keeping what it had persisted.
    public func restart() async throws {
        try await stop()
        try await launch()
    }

    /// Stops the server and removes its directory.
    public func destroy() async throws {
        try await stop()
        try? FileManager.default.removeItem(atPath: directory)
    }

    private func launch() async throws {
        var listening = ["--port", "\(port)"]
        if let tls {
            listening = [
                "--port", "0", "--tls-port", "\(port)",
                "--tls-cert-file", tls.serverCertificate, "--tls-key-file", tls.serverKey,
                "--tls-ca-cert-file", tls.authority, "--tls-auth-clients", "yes",
            ]
        }
        let logFile = directory + "/redis.log"
        // A restart appends to the log: only the lines after these say how this start went.
        let earlierReadyLines = Self.readyLines(logFile)
        let child = try ChildProcess(
            executable: executable,
            arguments: listening + [
                "--bind", "127.0.0.1",
                "--dir", directory,
                "--save", "",
                "--appendonly", appendOnly ? "yes" : "no",
                "--appendfsync", "everysec",
                "--daemonize", "no",
                "--logfile", logFile,
            ] + (usersFile.map { ["--include", $0] } ?? [])
        )
        process.withLock { $0 = child }
        do {
            try await LocalProcess.wait(for: .seconds(20), "redis-server on port \(port)") {
                guard child.isRunning else { return true }
                // A plain PING cannot cross TLS; the server says in its log when it listens.
                guard tls == nil else { return Self.readyLines(logFile) > earlierReadyLines }
                return LocalProcess.redisInline(port: port, "PING") == "+PONG"
            }
        } catch {
            child.signal(SIGKILL)
            throw error
        }
        guard child.isRunning else {
            process.withLock { $0 = nil }
            let log = (try? String(contentsOfFile: directory + "/redis.log", encoding: .utf8)) ?? ""
            throw LocalServerError("redis-server exited on start: \(log.suffix(1000))")
        }
    }

    /// How many times the log says the server was ready to accept connections.
    private static func readyLines(_ logFile: String) -> Int {
        let log = (try? String(contentsOfFile: logFile, encoding: .utf8)) ?? ""
        return log.components(separatedBy: "Ready to accept connections").count - 1
    }

    deinit {
        process.withLock { $0?.signal(SIGKILL) }
    }
}
