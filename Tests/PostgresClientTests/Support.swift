import LocalServers
import Logging
import PostgresClient
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

let testLogger = Logger(label: "PostgresClientTests")

/// Starts a throwaway PostgreSQL, runs `body`, and destroys the server whether or not `body` threw.
func withServer<T>(_ body: (PostgresServer) async throws -> T) async throws -> T {
    let server = try await PostgresServer.start()
    do {
        let result = try await body(server)
        try await server.destroy()
        return result
    } catch {
        try? await server.destroy()
        throw error
    }
}

/// A connection to `server`'s `postgres` database that is closed after `body`.
func withConnection<T>(
    to server: PostgresServer,
    _ body: (PostgresConnection) async throws -> T
) async throws -> T {
    let connection = try await PostgresConnection.connect(conninfo: server.url(), logger: testLogger)
    defer { connection.close() }
    return try await body(connection)
}

/// Runs `body`, expecting it to throw a `PostgresError`, and returns that error.
func expectPostgresError(_ body: () async throws -> Void) async -> PostgresError? {
    do {
        try await body()
        Issue.record("expected a PostgresError, nothing was thrown")
        return nil
    } catch let error as PostgresError {
        return error
    } catch {
        Issue.record("expected a PostgresError, got \(error)")
        return nil
    }
}

/// A loopback TCP listener that accepts connections (in the kernel backlog) but never answers.
final class SilentListener {
    let port: Int
    private let socketDescriptor: Int32

    init() throws {
        socketDescriptor = try Loopback.boundSocket()
        guard listen(socketDescriptor, 16) == 0 else {
            close(socketDescriptor)
            throw SocketError("listen failed")
        }
        port = try Loopback.port(of: socketDescriptor)
    }

    deinit {
        close(socketDescriptor)
    }

    /// A loopback port that nothing listens on (bound once, then released).
    static func closedPort() throws -> Int {
        try Loopback.freePort()
    }
}

struct SocketError: Error, CustomStringConvertible {
    var description: String

    init(_ description: String) {
        self.description = description
    }
}

/// Encodes one field for `COPY ... FROM STDIN` in text format: `\N` for NULL, and the escapes COPY requires.
func copyTextField(_ value: String?) -> String {
    guard let value else { return "\\N" }
    var encoded = ""
    encoded.reserveCapacity(value.utf8.count)
    for character in value.unicodeScalars {
        switch character {
        case "\\": encoded += "\\\\"
        case "\t": encoded += "\\t"
        case "\n": encoded += "\\n"
        case "\r": encoded += "\\r"
        default: encoded.unicodeScalars.append(character)
        }
    }
    return encoded
}

/// Keeps every log line a `Logger` made, so that tests can check what the client logs.
final class LogCapture: Sendable {
    private let lines = Mutex<[(level: Logger.Level, text: String)]>([])

    var entries: [(level: Logger.Level, text: String)] { lines.withLock { $0 } }

    var logger: Logger {
        var logger = Logger(label: "PostgresClientTests.capture") { _ in Handler(capture: self) }
        logger.logLevel = .trace
        return logger
    }

    private struct Handler: LogHandler {
        let capture: LogCapture
        var logLevel: Logger.Level = .trace
        var metadata: Logger.Metadata = [:]
        var metadataProvider: Logger.MetadataProvider?

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            let text =
                "\(event.message) \(metadata.merging(event.metadata ?? [:]) { $1 }) \(event.error.map { "\($0)" } ?? "")"
            capture.lines.withLock { $0.append((event.level, text)) }
        }
    }
}
