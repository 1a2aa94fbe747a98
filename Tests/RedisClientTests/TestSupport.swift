import LocalServers
import Logging
import RedisClient
import Synchronization

/// A logger for tests; debug and trace go to `sink` when given, so tests can inspect what was logged.
func testLogger(_ sink: LogSink? = nil) -> Logger {
    guard let sink else { return Logger(label: "RedisClientTests") }
    var logger = Logger(label: "RedisClientTests") { _ in CapturingLogHandler(sink: sink) }
    logger.logLevel = .trace
    return logger
}

/// Starts a throwaway redis-server, connects to it, runs `body`, then closes the connection and destroys the server
/// whether `body` succeeded or not.
func withRedis<Result>(
    commandTimeout: Duration? = nil,
    logger: Logger = testLogger(),
    _ body: (RedisServer, RedisConnection) async throws -> Result
) async throws -> Result {
    try await withRedisServer { server in
        var configuration = try RedisConfiguration(url: server.url)
        if let commandTimeout {
            configuration.commandTimeout = commandTimeout
        }
        let connection = try await RedisConnection.connect(configuration, logger: logger)
        defer { connection.close() }
        let result: Result
        do {
            result = try await body(server, connection)
        } catch {
            await shutDown(server, via: connection)
            throw error
        }
        // Through the test's own connection: it is authenticated even if the test turned on requirepass.
        await shutDown(server, via: connection)
        return result
    }
}

/// Starts a throwaway redis-server, runs `body`, then destroys the server whether `body` succeeded or not.
func withRedisServer<Result>(_ body: (RedisServer) async throws -> Result) async throws -> Result {
    let server = try await RedisServer.start()
    let result: Result
    do {
        result = try await body(server)
    } catch {
        await shutDown(server)
        try? await server.destroy()
        throw error
    }
    await shutDown(server)
    try await server.destroy()
    return result
}

/// Asks the server to exit (`SHUTDOWN NOSAVE`) so that a following `stop()`/`destroy()` finds it gone.
///
/// Why not rely on `stop()` alone: on Linux, `Foundation.Process` hands the spawning thread's signal mask to the
/// child (swift-corelibs-foundation#4772), and Swift's worker threads block SIGTERM, so a redis-server started from
/// a test ignores the SIGTERM that `stop()` sends. Redis exits on its own command regardless. Harmless when the
/// server is already down.
func shutDown(_ server: RedisServer, via connection: RedisConnection? = nil) async {
    var target = connection
    if target?.isBroken ?? true, let configuration = try? RedisConfiguration(url: server.url) {
        target = try? await RedisConnection.connect(configuration, logger: testLogger())
    }
    guard let target else { return }
    // Redis closes the connection instead of replying, so this throws connectionClosed.
    _ = try? await target.send("SHUTDOWN", "NOSAVE")
    target.close()
}

/// Everything a `CapturingLogHandler` was asked to log, rendered as text.
final class LogSink: Sendable {
    private let lines = Mutex<[String]>([])

    var all: [String] {
        lines.withLock { $0 }
    }

    func append(_ line: String) {
        lines.withLock { $0.append(line) }
    }
}

struct CapturingLogHandler: LogHandler {
    let sink: LogSink
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let merged = metadata.merging(event.metadata ?? [:]) { $1 }
        sink.append("\(event.level) \(event.message) \(merged)")
    }
}
