import BlockingThread
import Dispatch
import Logging

/// One PostgreSQL connection whose blocking libpq calls run on a serial queue of its own, each with a deadline.
///
/// `@unchecked Sendable` is safe because the only mutable state, the `PGconn` inside `handle`, is touched
/// exclusively by blocks running on `queue` (one at a time), except in `deinit`, when no block can be left;
/// everything else is immutable or behind the `ConnectionFlags` mutex.
public final class PostgresConnection: @unchecked Sendable {
    private let queue: DispatchQueue
    private let handle: LibpqConnection
    private let flags: ConnectionFlags
    private let queryTimeout: Duration
    private let logger: Logger
    private let version: Int

    private init(queue: DispatchQueue, handle: LibpqConnection, queryTimeout: Duration, logger: Logger) {
        self.queue = queue
        self.handle = handle
        self.flags = handle.flags
        self.queryTimeout = queryTimeout
        self.logger = logger
        self.version = handle.serverVersion
    }

    /// Connects with a libpq URI or conninfo; `password`, when given, overrides any in the conninfo.
    ///
    /// PG* environment variables and the password file apply as in libpq. `applicationName` is used unless the
    /// conninfo or `PGAPPNAME` sets one. The client encoding is always UTF-8. `traffic`, when given, is told what
    /// each call sends (see ``PostgresTraffic``).
    public static func connect(
        conninfo: String,
        password: String? = nil,
        applicationName: String = "historian",
        connectTimeout: Duration = .seconds(10),
        queryTimeout: Duration = .seconds(30),
        logger: Logger,
        traffic: PostgresTrafficObserver? = nil
    ) async throws -> PostgresConnection {
        let queue = DispatchQueue(label: "historian.postgres.connection")
        return try await withCheckedThrowingContinuation { continuation in
            queue.async {
                let result = Result {
                    do {
                        let handle = try LibpqConnection.connect(
                            conninfo: conninfo,
                            password: password,
                            applicationName: applicationName,
                            timeout: connectTimeout,
                            logger: logger,
                            traffic: traffic
                        )
                        let connection = PostgresConnection(
                            queue: queue,
                            handle: handle,
                            queryTimeout: queryTimeout,
                            logger: logger
                        )
                        logger.debug(
                            "postgres connected",
                            metadata: ["postgres.server_version": "\(connection.version)"]
                        )
                        return connection
                    } catch {
                        logger.debug("postgres connect failed", metadata: ["error": "\(error)"])
                        throw error
                    }
                }
                continuation.resume(with: result)
            }
        }
    }

    /// Runs `body` on the connection's thread with exclusive access; the whole body is one hop. On a thread that
    /// may block (a `BlockingThreadExecutor`'s), `body` runs right there, holding the connection's queue.
    ///
    /// A server error leaves the connection usable; inside a transaction the caller then issues ROLLBACK.
    /// Task cancellation does not interrupt `body`; `session.timeout` bounds each call in it.
    public func withSession<T: Sendable>(_ body: (PostgresSession) throws -> T) async throws -> T {
        if let error = flags.unusableError() {
            throw error
        }
        if BlockingThread.isCurrent {
            // A thread that may block (a BlockingThreadExecutor's): run here, holding the queue, without a hand-off.
            return try queue.sync { try runSession(body) }
        }
        return try await withoutActuallyEscaping(body) { body in
            // The caller stays suspended until the continuation resumes, i.e. until `body` has returned on the
            // queue, so `body` neither escapes nor runs concurrently with its caller. A caller on an actor cannot
            // pass actor-isolated state in: that is a cross-isolation send the compiler checks.
            let job = SessionJob(body)
            return try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
                queue.async {
                    let result = Result { try self.runSession(job.body!) }
                    // Drop the closure before resuming: once the caller resumes, withoutActuallyEscaping
                    // checks that nothing holds it any more.
                    job.body = nil
                    continuation.resume(with: result)
                }
            }
        }
    }

    /// Runs one extended-protocol query with text parameters in its own session.
    public func query(_ sql: String, _ parameters: [String?] = []) async throws -> PostgresRows {
        try await withSession { try $0.query(sql, parameters) }
    }

    /// Runs one or more `;`-separated statements in their own session; returns the last result.
    @discardableResult
    public func execute(_ sql: String) async throws -> PostgresRows {
        try await withSession { try $0.execute(sql) }
    }

    /// True once the connection failed in a way that needs a new connection (lost, timed out, out of step) or was
    /// closed.
    public var isBroken: Bool {
        flags.isBroken || flags.isClosed
    }

    /// The server version as PQserverVersion reports it, e.g. 150004.
    public var serverVersion: Int {
        version
    }

    /// Closes the connection; idempotent, and calls still queued fail with `.closed`.
    public func close() {
        guard flags.markClosed() else { return }
        queue.async {
            self.handle.finish()
            self.logger.debug("postgres connection closed")
        }
    }

    private func runSession<T>(_ body: (PostgresSession) throws -> T) throws -> T {
        dispatchPrecondition(condition: .onQueue(queue))
        if let error = flags.unusableError() {
            throw error
        }
        let session = PostgresSession(connection: handle, timeout: queryTimeout)
        defer {
            session.invalidate()
            if handle.isStatusBad {
                flags.markBroken()
            }
        }
        return try body(session)
    }
}

/// Carries the non-escaping session body to the connection's queue and lets go of it before the caller resumes.
private final class SessionJob<T>: @unchecked Sendable {
    var body: ((PostgresSession) throws -> T)?

    init(_ body: @escaping (PostgresSession) throws -> T) {
        self.body = body
    }
}
