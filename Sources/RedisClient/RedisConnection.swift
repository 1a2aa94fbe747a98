internal import BlockingThread
internal import CHiredis
internal import Dispatch
public import Logging
internal import Synchronization

#if canImport(Glibc)
internal import Glibc
#elseif canImport(Musl)
internal import Musl
#elseif canImport(Darwin)
internal import Darwin
#endif

/// A single connection to Redis over hiredis' blocking API.
///
/// `@unchecked Sendable` is sound because the hiredis context and the command encoder are only ever touched from
/// blocks running on the connection's private serial `DispatchQueue` (so one thread at a time, never the cooperative
/// pool), and the only other mutable state, the open/broken/closed flag, sits behind a `Mutex`.
public final class RedisConnection: @unchecked Sendable {
    private enum State {
        case open
        case broken
        case closed
    }

    /// Confined to `queue`.
    private let context = HiredisContext()
    /// Confined to `queue`; reused so that each command does not allocate its buffer anew.
    private var encoder = RESPCommandEncoder()
    /// Commands up to this size leave their buffer for the next ones; a larger one frees it.
    private static let keptEncoderCapacity = 4 << 20
    private let queue: DispatchQueue
    private let state = Mutex(State.open)
    private let commandTimeout: Duration
    private let endpoint: RedisConfiguration.Endpoint
    private let logger: Logger
    /// Told what each call sends (see ``RedisTraffic``).
    private let traffic: RedisTrafficObserver?

    private init(configuration: RedisConfiguration, logger: Logger, traffic: RedisTrafficObserver?) {
        self.queue = DispatchQueue(label: "historian.redis.connection")
        self.commandTimeout = configuration.commandTimeout
        self.endpoint = configuration.endpoint
        self.traffic = traffic
        var logger = logger
        logger[metadataKey: "redis.endpoint"] = "\(configuration.endpoint)"
        self.logger = logger
    }

    /// Connects, then authenticates and selects the database as configured.
    ///
    /// Throws ``RedisError`` with code ``RedisError/Code/connectionFailed`` (transient) when the server cannot be
    /// reached or the handshake fails on the wire, ``RedisError/Code/authenticationFailed`` (permanent) when the
    /// credentials are rejected, and ``RedisError/Code/server`` when `SELECT` is refused. `traffic`, when given, is
    /// told what each call sends (see ``RedisTraffic``).
    public static func connect(
        _ configuration: RedisConfiguration,
        logger: Logger,
        traffic: RedisTrafficObserver? = nil
    ) async throws -> RedisConnection {
        _ = ignoreSIGPIPEUnlessHandled
        let connection = RedisConnection(configuration: configuration, logger: logger, traffic: traffic)
        try await connection.onQueue { () throws(RedisError) in
            try connection.openOnQueue(configuration)
        }
        connection.logger.debug("Connected to Redis", metadata: ["redis.database": "\(configuration.database)"])
        return connection
    }

    /// Sends one command and returns its reply; an error reply throws ``RedisError`` with code ``RedisError/Code/server``.
    ///
    /// `timeout` replaces the command timeout for this call only, e.g. the block time plus a margin for
    /// `XREADGROUP … BLOCK`. A timeout, I/O or protocol failure breaks the connection (see ``isBroken``).
    public func send(_ arguments: [RedisArgument], timeout: Duration? = nil) async throws -> RESPValue {
        try checkUsable()
        let reply = try await onQueue { () throws(RedisError) in
            try self.pipelineOnQueue([arguments], timeout: timeout) { view throws(RedisError) in try view.value }[0]
        }
        if case .error(let text) = reply {
            throw RedisError(serverReply: text)
        }
        return reply
    }

    /// Sends one command and hands its reply, in place, to `decode`: for large replies that the
    /// caller turns into its own types, skipping the ``RESPValue`` copy of every element.
    ///
    /// An error reply throws ``RedisError`` with code ``RedisError/Code/server`` without calling
    /// `decode`; an error that `decode` throws is rethrown and leaves the connection usable.
    public func send<Decoded: Sendable>(
        _ arguments: [RedisArgument],
        timeout: Duration? = nil,
        decode: @escaping @Sendable (RedisReplyView) throws -> Decoded
    ) async throws -> Decoded {
        try await pipeline([arguments], timeout: timeout) { view in
            if view.kind == .error {
                throw RedisError(serverReply: view.withBytes { String(decoding: $0, as: UTF8.self) })
            }
            return try decode(view)
        }[0]
    }

    /// Sends one command and returns its reply; see the array form.
    public func send(_ arguments: RedisArgument..., timeout: Duration? = nil) async throws -> RESPValue {
        try await send(arguments, timeout: timeout)
    }

    /// Sends all commands in one write and reads all replies in order; error replies come back as `.error` values.
    ///
    /// Only connection-level failures (I/O, timeout, protocol) throw, and they break the connection.
    /// `timeout` bounds each read and write, not the whole batch.
    public func pipeline(_ commands: [[RedisArgument]], timeout: Duration? = nil) async throws -> [RESPValue] {
        guard !commands.isEmpty else { return [] }
        try checkUsable()
        return try await onQueue { () throws(RedisError) in
            try self.pipelineOnQueue(commands, timeout: timeout) { view throws(RedisError) in try view.value }
        }
    }

    /// Sends all commands in one write and hands each reply, in place, to `decode`, error replies included (as
    /// ``RedisReplyView/Kind/error``); see ``send(_:timeout:decode:)``.
    public func pipeline<Decoded: Sendable>(
        _ commands: [[RedisArgument]],
        timeout: Duration? = nil,
        decode: @escaping @Sendable (RedisReplyView) throws -> Decoded
    ) async throws -> [Decoded] {
        guard !commands.isEmpty else { return [] }
        try checkUsable()
        let results = try await onQueue { () throws(RedisError) -> [Result<Decoded, any Error>] in
            try self.pipelineOnQueue(commands, timeout: timeout) { view in Result { try decode(view) } }
        }
        return try results.map { try $0.get() }
    }

    /// Whether the connection can no longer be used: after an I/O error, timeout or protocol error, or `close()`.
    ///
    /// hiredis contexts are unusable once they have seen an error, so callers open a new connection instead.
    public var isBroken: Bool {
        state.withLock { $0 != .open }
    }

    /// Closes the connection once commands already started have finished; idempotent. Later calls throw
    /// ``RedisError/Code/connectionClosed``.
    public func close() {
        let wasClosed = state.withLock { state in
            defer { state = .closed }
            return state == .closed
        }
        guard !wasClosed else { return }
        queue.async {
            self.context.free()
        }
        logger.debug("Closed Redis connection")
    }

    // MARK: - On the queue

    /// Runs `body` on the connection's queue, suspending (not blocking) the calling task meanwhile; on a thread
    /// that may block (a ``BlockingThreadExecutor``'s), runs it there, holding the queue, without a hand-off.
    private func onQueue<T: Sendable>(_ body: @escaping @Sendable () throws(RedisError) -> T) async throws -> T {
        if BlockingThread.isCurrent {
            return try queue.sync { () throws(RedisError) -> T in try body() }
        }
        return try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            queue.async {
                do {
                    continuation.resume(returning: try body())
                } catch {
                    continuation.resume(throwing: error)
                }
            }
        }
    }

    private func openOnQueue(_ configuration: RedisConfiguration) throws(RedisError) {
        let connectTimeout = TimeValue(configuration.connectTimeout)
        let pointer: UnsafeMutablePointer<redisContext>?
        switch configuration.endpoint {
        case .tcp(let host, let port):
            guard (1...65535).contains(port) else {
                state.withLock { $0 = .broken }
                throw RedisError(code: .connectionFailed, message: "port \(port) is out of range")
            }
            pointer = redisConnectWithTimeout(host, Int32(port), connectTimeout.value)
        case .unix(let path):
            pointer = redisConnectUnixWithTimeout(path, connectTimeout.value)
        }
        guard let pointer else {
            state.withLock { $0 = .broken }
            throw RedisError(code: .connectionFailed, message: "could not allocate a hiredis context")
        }
        context.attach(pointer)
        if pointer.pointee.err != 0 {
            let reason = errorText(pointer)
            breakConnection(code: .connectionFailed)
            throw RedisError(code: .connectionFailed, message: "connecting to \(endpoint) failed: \(reason)")
        }
        guard redisSetTimeout(pointer, TimeValue(commandTimeout).value) == REDIS_OK else {
            let reason = errorText(pointer)
            breakConnection(code: .connectionFailed)
            throw RedisError(code: .connectionFailed, message: "setting the socket timeout failed: \(reason)")
        }

        if let password = configuration.password {
            var auth: [RedisArgument] = ["AUTH"]
            if let username = configuration.username {
                auth.append(RedisArgument(username))
            }
            auth.append(RedisArgument(password))
            try handshake(auth, password: password)
        }
        if configuration.database != 0 {
            try handshake(["SELECT", RedisArgument(configuration.database)], password: configuration.password)
        }
    }

    /// Sends one handshake command, mapping failures to what a caller of `connect` needs to know.
    private func handshake(_ command: [RedisArgument], password: String?) throws(RedisError) {
        let reply: RESPValue
        do {
            reply = try pipelineOnQueue([command], timeout: nil) { view throws(RedisError) in try view.value }[0]
        } catch {
            throw RedisError(code: .connectionFailed, message: "connection handshake failed: \(error.message)")
        }
        guard case .error(let text) = reply else { return }
        let serverError = RedisError(serverReply: text)
        let isAuth = command.first == "AUTH"
        guard isAuth || serverError.serverErrorPrefix == "NOAUTH" || serverError.serverErrorPrefix == "WRONGPASS" else {
            breakConnection(code: .server)
            throw serverError
        }
        var message = serverError.message
        if let password, !password.isEmpty {
            // Belt and braces: no known Redis reply quotes the password, but never let one through.
            message = message.replacing(password, with: "***")
        }
        breakConnection(code: .authenticationFailed)
        throw RedisError(code: .authenticationFailed, message: "authentication failed: \(message)")
    }

    /// Appends every command, then reads every reply, on the queue, handing each to `decode` before hiredis frees it.
    /// An error `decode` throws is a reply hiredis could parse but this client cannot represent: it breaks the
    /// connection.
    private func pipelineOnQueue<Decoded>(
        _ commands: [[RedisArgument]],
        timeout: Duration?,
        decode: (RedisReplyView) throws(RedisError) -> Decoded
    ) throws(RedisError) -> [Decoded] {
        for command in commands where command.isEmpty {
            throw RedisError(code: .protocolError, message: "a command needs at least one argument")
        }
        guard let pointer = context.pointer else {
            throw unusableError()
        }
        let effectiveTimeout = timeout ?? commandTimeout
        if timeout != nil, redisSetTimeout(pointer, TimeValue(effectiveTimeout).value) != REDIS_OK {
            throw failure(pointer, errno: errno, timeout: effectiveTimeout)
        }

        encoder.reset(keepingUpTo: Self.keptEncoderCapacity)
        for command in commands { encoder.append(command) }
        let status = encoder.buffer.withUnsafeBytes { bytes in
            redisAppendFormattedCommand(pointer, bytes.baseAddress!.assumingMemoryBound(to: CChar.self), bytes.count)
        }
        guard status == REDIS_OK else {
            throw failure(pointer, errno: errno, timeout: effectiveTimeout)
        }
        traffic?(RedisTraffic(commands: commands.count, roundTrips: 1))

        var replies: [Decoded] = []
        replies.reserveCapacity(commands.count)
        for _ in commands {
            var raw: UnsafeMutableRawPointer?
            let status = redisGetReply(pointer, &raw)
            let savedErrno = errno
            guard status == REDIS_OK, let raw else {
                throw failure(pointer, errno: savedErrno, timeout: effectiveTimeout)
            }
            defer { freeReplyObject(raw) }
            do {
                replies.append(try decode(RedisReplyView(raw.assumingMemoryBound(to: redisReply.self))))
            } catch {
                breakConnection(code: error.code)
                throw error
            }
        }

        if timeout != nil, redisSetTimeout(pointer, TimeValue(commandTimeout).value) != REDIS_OK {
            // The replies are good, but the socket may keep the per-call timeout: do not reuse it.
            breakConnection(code: .io)
        }
        return replies
    }

    /// The error for a call on a connection that is closed or broken.
    private func unusableError() -> RedisError {
        switch state.withLock({ $0 }) {
        case .closed:
            return RedisError(code: .connectionClosed, message: "the connection is closed")
        case .open, .broken:
            return RedisError(
                code: .connectionClosed,
                message: "the connection is broken by an earlier error; open a new connection"
            )
        }
    }

    private func checkUsable() throws(RedisError) {
        if isBroken {
            throw unusableError()
        }
    }

    /// Maps `ctx->err` to a ``RedisError`` and breaks the connection: hiredis contexts are unusable after an error.
    private func failure(
        _ pointer: UnsafeMutablePointer<redisContext>,
        errno savedErrno: Int32,
        timeout: Duration
    ) -> RedisError {
        let reason = errorText(pointer)
        let error: RedisError
        switch pointer.pointee.err {
        case REDIS_ERR_IO where savedErrno == EAGAIN || savedErrno == EWOULDBLOCK || reason == Self.timeoutReason:
            error = RedisError(code: .timeout, message: "no reply within \(timeout)")
        case REDIS_ERR_IO:
            error = RedisError(code: .io, message: "I/O error: \(reason)")
        case REDIS_ERR_EOF:
            error = RedisError(code: .connectionClosed, message: "the server closed the connection")
        case REDIS_ERR_PROTOCOL:
            error = RedisError(code: .protocolError, message: "protocol error: \(reason)")
        default:
            error = RedisError(code: .io, message: "hiredis error \(pointer.pointee.err): \(reason)")
        }
        breakConnection(code: error.code)
        return error
    }

    /// Marks the connection broken and frees the context right away so the socket is released.
    private func breakConnection(code: RedisError.Code) {
        state.withLock { state in
            if state == .open {
                state = .broken
            }
        }
        context.free()
        logger.debug("Redis connection broken", metadata: ["redis.error.code": "\(code)"])
    }

    /// What hiredis puts in `errstr` when a read or write hits `SO_RCVTIMEO`/`SO_SNDTIMEO` (errno `EAGAIN`).
    private static let timeoutReason = String(cString: strerror(EAGAIN))
}

/// Owns one `redisContext` and frees it; not Sendable: only its connection's queue touches it.
private final class HiredisContext {
    private(set) var pointer: UnsafeMutablePointer<redisContext>?

    func attach(_ pointer: UnsafeMutablePointer<redisContext>) {
        free()
        self.pointer = pointer
    }

    func free() {
        if let pointer {
            redisFree(pointer)
            self.pointer = nil
        }
    }

    deinit {
        free()
    }
}

/// A `struct timeval` for hiredis, at least 1 ms (0 would mean "no timeout" to the socket layer).
private struct TimeValue {
    let value: timeval

    init(_ duration: Duration) {
        let (seconds, attoseconds) = max(duration, .milliseconds(1)).components
        if seconds >= Int64(Int32.max) {
            value = timeval(tv_sec: .init(Int32.max), tv_usec: 0)
        } else {
            value = timeval(tv_sec: .init(seconds), tv_usec: .init(attoseconds / 1_000_000_000_000))
        }
    }
}

/// The text in `ctx->errstr`.
private func errorText(_ pointer: UnsafeMutablePointer<redisContext>) -> String {
    errorText(inField: pointer.pointee.errstr)
}

/// The C string in a hiredis `errstr` field (a fixed array of chars, imported as a tuple), as a
/// context or a reader holds it.
func errorText<Field>(inField errstr: Field) -> String {
    withUnsafeBytes(of: errstr) { buffer in
        String(decoding: buffer.prefix { $0 != 0 }, as: UTF8.self)
    }
}

/// Writing to a socket the server has closed raises SIGPIPE, which by default kills the process; hiredis uses plain
/// `write`, so it cannot ask for `MSG_NOSIGNAL`. Ignore SIGPIPE (as servers do) unless someone installed a handler,
/// so the write fails with `EPIPE` and surfaces as an I/O error instead.
private let ignoreSIGPIPEUnlessHandled: Void = {
    if let previous = signal(SIGPIPE, SIG_IGN) {
        // Not the default disposition: put back whatever the process chose.
        _ = signal(SIGPIPE, previous)
    }
}()
