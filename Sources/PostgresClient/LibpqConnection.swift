internal import CLibpq
import Dispatch
import Logging
import Synchronization

#if canImport(Glibc)
internal import Glibc
#elseif canImport(Darwin)
internal import Darwin
#endif

/// State that other threads may read while the connection's queue works: shared by the handle and its owner.
final class ConnectionFlags: Sendable {
    private struct State {
        var broken = false
        var closed = false
    }

    private let state = Mutex(State())

    var isBroken: Bool { state.withLock { $0.broken } }
    var isClosed: Bool { state.withLock { $0.closed } }

    func markBroken() {
        state.withLock { $0.broken = true }
    }

    /// Returns true for the call that actually closed it, so closing is idempotent.
    func markClosed() -> Bool {
        state.withLock { state in
            defer { state.closed = true }
            return !state.closed
        }
    }

    /// The error a new call gets without touching libpq, or nil if the connection can be used.
    func unusableError() -> PostgresError? {
        let (broken, closed) = state.withLock { ($0.broken, $0.closed) }
        if closed {
            return PostgresError(code: .closed, message: "the connection was closed")
        }
        if broken {
            return PostgresError(
                code: .connectionLost,
                message: "the connection is broken by an earlier failure; open a new one"
            )
        }
        return nil
    }
}

/// A point in time that bounds one call; every wait in this file is measured against one.
struct Deadline {
    /// Longer timeouts are treated as this, so that instant arithmetic cannot overflow.
    private static let longest = Duration.seconds(365 * 24 * 3600)

    let timeout: Duration
    private let instant: ContinuousClock.Instant

    init(after timeout: Duration) {
        self.timeout = timeout
        self.instant = ContinuousClock.now.advanced(by: min(timeout, Self.longest))
    }

    /// What is left, in whole milliseconds rounded up, for poll(); 0 once the deadline has passed.
    var remainingMilliseconds: Int32 {
        let remaining = ContinuousClock.now.duration(to: instant)
        guard remaining > .zero else { return 0 }
        let (seconds, attoseconds) = remaining.components
        let milliseconds = seconds * 1000 + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000
        return Int32(clamping: milliseconds)
    }
}

/// Owns one `PGconn`; used only on its connection's serial queue, never shared, freed in `deinit`.
final class LibpqConnection {
    /// COPY data goes out in chunks of this size, so libpq's output buffer stays small.
    static let copyChunkSize = 256 * 1024

    private var conn: OpaquePointer?
    /// Names of the statements prepared on this connection (they live as long as it does).
    private var prepared: Set<String> = []
    let flags: ConnectionFlags
    let logger: Logger
    /// Strings that must never appear in an error message: passwords and the conninfo itself.
    private let secrets: [String]
    /// Told what each call sends (see `PostgresTraffic`).
    private let traffic: PostgresTrafficObserver?

    private init(
        conn: OpaquePointer,
        flags: ConnectionFlags,
        logger: Logger,
        secrets: [String],
        traffic: PostgresTrafficObserver?
    ) {
        self.conn = conn
        self.flags = flags
        self.logger = logger
        self.secrets = secrets
        self.traffic = traffic
    }

    deinit {
        if let conn {
            PQfinish(conn)
        }
    }

    /// Closes the connection now; later calls fail with `.closed`.
    func finish() {
        if let conn {
            PQfinish(conn)
            self.conn = nil
        }
    }

    var serverVersion: Int {
        guard let conn else { return 0 }
        return Int(PQserverVersion(conn))
    }

    /// True when libpq itself considers the connection unusable.
    var isStatusBad: Bool {
        guard let conn else { return true }
        return PQstatus(conn) != CONNECTION_OK
    }

    // MARK: - Connecting

    /// Connects with a deadline; runs on the connection's queue.
    static func connect(
        conninfo: String,
        password: String?,
        applicationName: String,
        timeout: Duration,
        logger: Logger,
        traffic: PostgresTrafficObserver?
    ) throws -> LibpqConnection {
        let deadline = Deadline(after: timeout)
        var secrets: [String] = []
        if let password {
            secrets.append(password)
        }
        if let environmentPassword = getenv("PGPASSWORD") {
            secrets.append(String(cString: environmentPassword))
        }
        let conninfoPasswords = try passwords(inConninfo: conninfo, secrets: secrets + [conninfo])
        if !conninfoPasswords.isEmpty {
            // The whole string too, in case libpq ever echoes it with the password still percent-encoded.
            secrets += conninfoPasswords + [conninfo]
        }

        // Order matters with expand_dbname: entries before "dbname" are defaults the conninfo can
        // override, entries after it win. The API returns Swift strings, so the client encoding is UTF-8.
        var parameters: [(String, String)] = [
            ("fallback_application_name", applicationName),
            ("dbname", conninfo),
            ("client_encoding", "UTF8"),
        ]
        if let password {
            parameters.append(("password", password))
        }
        let keywords = parameters.map { strdup($0.0) }
        let values = parameters.map { strdup($0.1) }
        defer {
            for pointer in keywords + values {
                free(pointer)
            }
        }
        let keywordPointers = keywords.map { UnsafePointer($0) } + [nil]
        let valuePointers = values.map { UnsafePointer($0) } + [nil]
        let started = PQconnectStartParams(keywordPointers, valuePointers, 1)
        guard let started else {
            throw PostgresError(code: .connectionFailed, message: "libpq could not allocate a connection")
        }
        let connection = LibpqConnection(
            conn: started,
            flags: ConnectionFlags(),
            logger: logger,
            secrets: secrets,
            traffic: traffic
        )
        try connection.pollConnect(deadline: deadline)
        PQsetnonblocking(started, 1)
        connection.installNoticeReceiver()
        return connection
    }

    /// Drives PQconnectPoll until the connection is up, failed, or the deadline passed.
    private func pollConnect(deadline: Deadline) throws {
        guard let conn, PQstatus(conn) != CONNECTION_BAD else {
            throw connectFailure()
        }
        // libpq's documented loop: start as if PQconnectPoll had asked to wait for writing.
        var status = PGRES_POLLING_WRITING
        while true {
            switch status {
            case PGRES_POLLING_OK:
                return
            case PGRES_POLLING_FAILED:
                throw connectFailure()
            case PGRES_POLLING_READING, PGRES_POLLING_WRITING:
                let events = status == PGRES_POLLING_READING ? Int16(POLLIN) : Int16(POLLOUT)
                // The socket can change while libpq tries several hosts or addresses.
                let readiness: (readable: Bool, writable: Bool)?
                do {
                    readiness = try waitForSocket(events: events, deadline: deadline)
                } catch var error as PostgresError {
                    error.code = .connectionFailed
                    throw error
                }
                guard readiness != nil else {
                    // No answer at all (a frozen server, lost packets), unlike a refusal.
                    throw PostgresError(code: .timeout, message: "could not connect within \(deadline.timeout)")
                }
            default:
                // PGRES_POLLING_ACTIVE is no longer used by libpq; just poll again.
                break
            }
            status = PQconnectPoll(conn)
        }
    }

    private func connectFailure() -> PostgresError {
        let message = connectionErrorMessage(fallback: "could not connect")
        guard let problem = PostgresError.tlsProblem(inConnectMessage: message) else {
            return PostgresError(code: .connectionFailed, message: message)
        }
        // libpq's text names the problem but not the settings behind it, which may have come from PG*
        // variables or defaults (~/.postgresql/root.crt): name them, paths only.
        let names = ["sslmode", "sslrootcert", "sslcert", "sslkey"]
        let settings = connectionOptions(Set(names))
        let used = names.compactMap { name in settings[name].map { "\(name)=\($0)" } }
        // One line for the log: libpq puts each host's failure, and some advice, on lines of their own.
        let lines = message.split(whereSeparator: \.isNewline).map { String($0).trimmedWhitespace() }
        var text = lines.joined(separator: "; ")
        if !used.isEmpty {
            text += " (\(used.joined(separator: ", ")))"
        }
        if let hint = problem.hint {
            text += ": \(hint)"
        }
        return PostgresError(code: .tlsFailed, message: PostgresError.redact(text, secrets: secrets))
    }

    /// The values libpq uses for `names` on this connection, from the conninfo, PG* variables or defaults;
    /// options left unset are absent. Never asked for a password.
    private func connectionOptions(_ names: Set<String>) -> [String: String] {
        guard let conn, let options = PQconninfo(conn) else { return [:] }
        defer { PQconninfoFree(options) }
        var found: [String: String] = [:]
        var option = options
        while let keyword = option.pointee.keyword {
            let name = String(cString: keyword)
            if names.contains(name), let value = option.pointee.val, value.pointee != 0 {
                found[name] = String(cString: value)
            }
            option += 1
        }
        return found
    }

    /// Passwords written inside the conninfo, so that they can be redacted from messages as well.
    private static func passwords(inConninfo conninfo: String, secrets: [String]) throws -> [String] {
        // A plain database name is not a conninfo; libpq takes it as dbname.
        let looksLikeConninfo =
            conninfo.contains("=") || conninfo.hasPrefix("postgresql://") || conninfo.hasPrefix("postgres://")
        guard looksLikeConninfo else { return [] }
        switch ConninfoOptions.parse(conninfo) {
        case .success(let options):
            // sslpassword unlocks an encrypted client key (sslkey).
            return ["password", "sslpassword"].compactMap { options[$0] }
        case .failure(let error):
            // libpq quotes pieces of the string it could not parse, which may be a password.
            let message = withoutQuotedText(error.message).trimmedWhitespace()
            throw PostgresError(code: .connectionFailed, message: PostgresError.redact(message, secrets: secrets))
        }
    }

    /// Replaces every `"..."` with `"…"`.
    static func withoutQuotedText(_ text: String) -> String {
        var result = ""
        var inQuotes = false
        for character in text {
            if character == "\"" {
                result.append(inQuotes ? "…\"" : "\"")
                inQuotes.toggle()
            } else if !inQuotes {
                result.append(character)
            }
        }
        return result
    }

    private func installNoticeReceiver() {
        guard let conn else { return }
        // The receiver runs only inside libpq calls made on this object's queue while it is alive
        // (PQfinish in deinit comes first), so an unretained pointer to self is valid.
        let context = Unmanaged.passUnretained(self).toOpaque()
        _ = PQsetNoticeReceiver(
            conn,
            { context, result in
                guard let context, let result else { return }
                let connection = Unmanaged<LibpqConnection>.fromOpaque(context).takeUnretainedValue()
                // Notices can quote data, so only their class is logged.
                connection.logger.debug(
                    "postgres notice",
                    metadata: [
                        "postgres.severity": "\(LibpqConnection.errorField(result, "V") ?? "?")",
                        "postgres.sqlstate": "\(LibpqConnection.errorField(result, "C") ?? "?")",
                    ]
                )
            },
            context
        )
    }

    // MARK: - Commands

    /// Prepares `sql` under `name` unless this connection has already; the parameters' types
    /// are inferred from the statement.
    func prepare(_ name: String, _ sql: String, deadline: Deadline) throws {
        guard !prepared.contains(name) else { return }
        let conn = try usableConnection()
        guard PQsendPrepare(conn, name, sql, 0, nil) == 1 else {
            throw sendFailure()
        }
        traffic?(PostgresTraffic(statements: 0, roundTrips: 1))
        try flush(deadline: deadline)
        _ = try collectResults(deadline: deadline, expectCopyIn: false)
        prepared.insert(name)
    }

    /// One extended-protocol statement: parameters in text format, except those whose entry
    /// in `binary` is true; with `statementName`, prepared under that name on first use and run
    /// by name from there on, so PostgreSQL parses it once per connection.
    struct Statement {
        var sql: String
        var parameters: [[UInt8]?] = []
        var binary: [Bool] = []
        var statementName: String?

        func isBinary(_ index: Int) -> Bool { binary.indices.contains(index) && binary[index] }

        /// libpq passes text parameters as C strings, and PostgreSQL text cannot hold NUL; the
        /// server reports the same SQLSTATE for it.
        func checkParameters() throws {
            for (index, parameter) in parameters.enumerated() where !isBinary(index) && parameter?.contains(0) == true {
                throw PostgresError(
                    code: .server,
                    sqlState: "22021",
                    message: "invalid byte sequence for encoding \"UTF8\": 0x00 (parameter $\(index + 1))"
                )
            }
        }
    }

    /// Sends an extended-protocol statement and reads its result.
    func query(_ statement: Statement, deadline: Deadline) throws -> PostgresRows {
        let conn = try usableConnection()
        try statement.checkParameters()
        if let name = statement.statementName {
            try prepare(name, statement.sql, deadline: deadline)
        }
        try send(statement, on: conn)
        traffic?(PostgresTraffic(statements: 1, roundTrips: 1))
        try flush(deadline: deadline)
        return try collectResults(deadline: deadline, expectCopyIn: false) ?? PostgresRows()
    }

    /// Sends `statements` in pipeline mode and then reads all their results: one round trip
    /// (statements prepared by name for the first time are prepared before, one each).
    ///
    /// A statement that fails ends the pipeline: PostgreSQL skips the ones after it, and its
    /// error is thrown once every result was read, so the connection is idle again. Inside a
    /// transaction block, that leaves the transaction failed, as any error does.
    func pipeline(_ statements: [Statement], deadline: Deadline) throws -> [PostgresRows] {
        let conn = try usableConnection()
        for statement in statements {
            try statement.checkParameters()
            if let name = statement.statementName {
                try prepare(name, statement.sql, deadline: deadline)
            }
        }
        guard PQenterPipelineMode(conn) == 1 else {
            throw protocolFailure(connectionErrorMessage(fallback: "could not enter pipeline mode"))
        }
        do {
            for statement in statements {
                try send(statement, on: conn)
            }
            guard PQpipelineSync(conn) == 1 else { throw sendFailure() }
            traffic?(PostgresTraffic(statements: statements.count, roundTrips: 1))
            try flush(deadline: deadline)
            let results = try collectPipelineResults(expected: statements.count, deadline: deadline)
            guard PQexitPipelineMode(conn) == 1 else {
                throw protocolFailure(connectionErrorMessage(fallback: "could not leave pipeline mode"))
            }
            return results
        } catch {
            // Results left unread put the connection out of step with the server.
            if PQexitPipelineMode(conn) != 1 {
                flags.markBroken()
            }
            throw error
        }
    }

    /// Queues one statement with libpq (prepared already, if it has a name).
    private func send(_ statement: Statement, on conn: OpaquePointer) throws {
        let parameters = statement.parameters
        let buffers: [UnsafeMutablePointer<CChar>?] = parameters.map { parameter in
            guard let parameter else { return nil }
            let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: parameter.count + 1)
            parameter.withUnsafeBytes { bytes in
                UnsafeMutableRawBufferPointer(start: buffer, count: parameter.count).copyMemory(from: bytes)
            }
            buffer[parameter.count] = 0
            return buffer
        }
        defer {
            for buffer in buffers {
                buffer?.deallocate()
            }
        }
        let values = buffers.map { $0.map { UnsafePointer($0) } }
        let lengths = parameters.map { Int32($0?.count ?? 0) }
        let formats: [Int32]? =
            statement.binary.contains(true) ? parameters.indices.map { statement.isBinary($0) ? 1 : 0 } : nil
        let sent =
            if let name = statement.statementName {
                PQsendQueryPrepared(conn, name, Int32(parameters.count), values, lengths, formats, 0)
            } else {
                PQsendQueryParams(conn, statement.sql, Int32(parameters.count), nil, values, lengths, formats, 0)
            }
        guard sent == 1 else { throw sendFailure() }
    }

    /// Sends one or more statements over the simple protocol; returns the last result.
    func execute(_ sql: String, deadline: Deadline) throws -> PostgresRows {
        let conn = try usableConnection()
        guard PQsendQuery(conn, sql) == 1 else { throw sendFailure() }
        // Counted once the results are in: the server answers each statement it ran with one.
        var statements = 0
        defer { traffic?(PostgresTraffic(statements: max(1, statements), roundTrips: 1)) }
        try flush(deadline: deadline)
        return try collectResults(deadline: deadline, expectCopyIn: false, statements: &statements) ?? PostgresRows()
    }

    /// Runs `COPY ... FROM STDIN` with already-encoded data; returns the number of rows copied.
    func copyIn(_ sql: String, data: [UInt8], deadline: Deadline) throws -> Int {
        let conn = try usableConnection()
        guard PQsendQuery(conn, sql) == 1 else { throw sendFailure() }
        traffic?(PostgresTraffic(statements: 1, roundTrips: 1))
        try flush(deadline: deadline)
        if try collectResults(deadline: deadline, expectCopyIn: true) != nil {
            throw protocolFailure("the statement did not start COPY FROM STDIN")
        }
        try data.withUnsafeBytes { bytes in
            var offset = 0
            while offset < bytes.count {
                let count = min(Self.copyChunkSize, bytes.count - offset)
                let chunk = bytes.baseAddress!.advanced(by: offset).assumingMemoryBound(to: CChar.self)
                try retryWhileFull(deadline: deadline) { PQputCopyData(conn, chunk, Int32(count)) }
                // Without this libpq would keep growing its buffer to hold all the data.
                try flush(deadline: deadline)
                offset += count
            }
        }
        try retryWhileFull(deadline: deadline) { PQputCopyEnd(conn, nil) }
        traffic?(PostgresTraffic(statements: 0, roundTrips: 1))
        try flush(deadline: deadline)
        return try collectResults(deadline: deadline, expectCopyIn: false)?.affectedRows ?? 0
    }

    // MARK: - The I/O loop

    private func usableConnection() throws -> OpaquePointer {
        guard let conn else {
            throw PostgresError(code: .closed, message: "the connection was closed")
        }
        if let error = flags.unusableError() {
            throw error
        }
        return conn
    }

    /// Calls a PQputCopy* function until it queued its data: in nonblocking mode 0 means "buffer full, retry".
    private func retryWhileFull(deadline: Deadline, _ put: () -> Int32) throws {
        while true {
            let result = put()
            if result == 1 {
                return
            }
            if result < 0 {
                throw connectionFailure(fallback: "could not send COPY data")
            }
            try waitWritable(deadline: deadline)
        }
    }

    /// Sends everything libpq has queued.
    private func flush(deadline: Deadline) throws {
        guard let conn else { throw PostgresError(code: .closed, message: "the connection was closed") }
        while true {
            let result = PQflush(conn)
            if result == 0 {
                return
            }
            if result < 0 {
                throw connectionFailure(fallback: "could not send data to the server")
            }
            try waitWritable(deadline: deadline)
        }
    }

    /// Waits until the socket takes data, reading meanwhile so that neither side can stall on a full buffer.
    private func waitWritable(deadline: Deadline) throws {
        guard let conn else { throw PostgresError(code: .closed, message: "the connection was closed") }
        guard let readiness = try waitForSocket(events: Int16(POLLOUT | POLLIN), deadline: deadline) else {
            throw timedOut(deadline: deadline)
        }
        if readiness.readable, PQconsumeInput(conn) == 0 {
            throw connectionFailure(fallback: "could not receive data from the server")
        }
    }

    /// Reads results until libpq has none left.
    ///
    /// Returns nil when the server entered COPY IN and `expectCopyIn` is set; otherwise the last result's rows.
    /// The first error result is thrown once all results were read, so the connection is idle again.
    private func collectResults(deadline: Deadline, expectCopyIn: Bool) throws -> PostgresRows? {
        var statements = 0
        return try collectResults(deadline: deadline, expectCopyIn: expectCopyIn, statements: &statements)
    }

    /// `collectResults`, adding to `statements` each statement the server answered for.
    private func collectResults(deadline: Deadline, expectCopyIn: Bool, statements: inout Int) throws -> PostgresRows? {
        guard let conn else { throw PostgresError(code: .closed, message: "the connection was closed") }
        var firstError: PostgresError?
        var unexpected: PostgresError?
        var last: OpaquePointer?
        defer {
            if let last {
                PQclear(last)
            }
        }
        while true {
            guard let result = try nextResult(of: conn, after: firstError, deadline: deadline) else { break }
            let status = PQresultStatus(result)
            switch status {
            case PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_EMPTY_QUERY:
                statements += 1
                if let last {
                    PQclear(last)
                }
                last = result
            case PGRES_FATAL_ERROR:
                statements += 1
                if firstError == nil {
                    firstError = serverFailure(result)
                }
                PQclear(result)
            case PGRES_NONFATAL_ERROR:
                // Notices go to the notice receiver; libpq does not return these from PQgetResult.
                PQclear(result)
            case PGRES_COPY_IN:
                PQclear(result)
                if expectCopyIn, firstError == nil, unexpected == nil {
                    return nil
                }
                // Abort the COPY; the server answers with an error result, which we read and replace.
                if unexpected == nil {
                    unexpected = protocolFailure("the statement started COPY FROM STDIN; use copyIn")
                }
                try retryWhileFull(deadline: deadline) { PQputCopyEnd(conn, "COPY FROM STDIN is not expected here") }
                try flush(deadline: deadline)
            case PGRES_COPY_OUT, PGRES_COPY_BOTH:
                PQclear(result)
                throw protocolFailure("COPY TO STDOUT is not supported by this client")
            default:
                // PGRES_BAD_RESPONSE, and modes this client never enables (single row, pipeline).
                PQclear(result)
                throw protocolFailure("unexpected result status \(String(cString: PQresStatus(status)))")
            }
        }
        if let unexpected {
            throw unexpected
        }
        if let firstError {
            throw settled(firstError)
        }
        guard let last else { return PostgresRows() }
        return Self.rows(from: last)
    }

    /// Reads a pipeline's results up to its sync: one result per statement, empty for those
    /// skipped after a failure. The first error is thrown once all were read.
    private func collectPipelineResults(expected: Int, deadline: Deadline) throws -> [PostgresRows] {
        guard let conn else { throw PostgresError(code: .closed, message: "the connection was closed") }
        var results: [PostgresRows] = []
        results.reserveCapacity(expected)
        var firstError: PostgresError?
        // libpq ends each statement's results with a NULL; two in a row mean it has nothing
        // more queued, which cannot happen before the sync.
        var endedStatement = false
        while true {
            guard let result = try nextResult(of: conn, after: firstError, deadline: deadline) else {
                if endedStatement {
                    throw protocolFailure("the pipeline ended without its sync")
                }
                endedStatement = true
                continue
            }
            endedStatement = false
            let status = PQresultStatus(result)
            defer { PQclear(result) }
            switch status {
            case PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_EMPTY_QUERY:
                results.append(Self.rows(from: result))
            case PGRES_FATAL_ERROR:
                if firstError == nil {
                    firstError = serverFailure(result)
                }
                results.append(PostgresRows())
            case PGRES_PIPELINE_ABORTED:
                results.append(PostgresRows())
            case PGRES_NONFATAL_ERROR:
                break
            case PGRES_PIPELINE_SYNC:
                if let firstError {
                    throw settled(firstError)
                }
                guard results.count == expected else {
                    throw protocolFailure("the pipeline returned \(results.count) results for \(expected) statements")
                }
                return results
            default:
                // COPY cannot run in a pipeline; nor can anything else this client did not send.
                throw protocolFailure("unexpected result status in a pipeline: \(String(cString: PQresStatus(status)))")
            }
        }
    }

    /// A call's first error result as it is thrown: `.connectionLost` if the connection died
    /// with it, `.protocolError` if libpq made it up while the connection still looks fine
    /// (the stream is out of step); either way the connection is not used again.
    private func settled(_ error: PostgresError) -> PostgresError {
        var error = error
        if isStatusBad {
            error.code = .connectionLost
            flags.markBroken()
            logger.debug("postgres connection lost", metadata: ["postgres.sqlstate": "\(error.sqlState ?? "none")"])
        } else if error.sqlState == nil {
            error.code = .protocolError
            flags.markBroken()
        }
        return error
    }

    /// The next result, read once it is in; nil between statements and at the end. When the
    /// connection is lost meanwhile, an error result already read is thrown with that code:
    /// the server usually says why before it hangs up (57P01 and the like).
    private func nextResult(of conn: OpaquePointer, after firstError: PostgresError?, deadline: Deadline) throws -> OpaquePointer? {
        do {
            try waitUntilNotBusy(deadline: deadline)
        } catch let error as PostgresError where error.code == .connectionLost {
            guard var reason = firstError else { throw error }
            reason.code = .connectionLost
            throw reason
        }
        return PQgetResult(conn)
    }

    /// Reads from the socket until PQgetResult would not block.
    private func waitUntilNotBusy(deadline: Deadline) throws {
        guard let conn else { throw PostgresError(code: .closed, message: "the connection was closed") }
        while PQisBusy(conn) != 0 {
            guard try waitForSocket(events: Int16(POLLIN), deadline: deadline) != nil else {
                throw timedOut(deadline: deadline)
            }
            if PQconsumeInput(conn) == 0 {
                throw connectionFailure(fallback: "could not receive data from the server")
            }
        }
    }

    /// poll() on the connection's socket; nil when the deadline passed first.
    private func waitForSocket(events: Int16, deadline: Deadline) throws -> (readable: Bool, writable: Bool)? {
        guard let conn else { throw PostgresError(code: .closed, message: "the connection was closed") }
        let socket = PQsocket(conn)
        guard socket >= 0 else {
            throw connectionFailure(fallback: "the connection has no socket")
        }
        var descriptor = pollfd(fd: socket, events: events, revents: 0)
        while true {
            let milliseconds = deadline.remainingMilliseconds
            let ready = poll(&descriptor, 1, milliseconds)
            if ready > 0 {
                // Errors and hang-ups count as readable: the next libpq read reports them properly.
                let readable = descriptor.revents & Int16(POLLIN | POLLERR | POLLHUP | POLLNVAL) != 0
                let writable = descriptor.revents & Int16(POLLOUT | POLLERR | POLLHUP) != 0
                return (readable, writable)
            }
            if ready < 0 && errno != EINTR {
                throw connectionFailure(fallback: "poll() failed with errno \(errno)")
            }
            if ready == 0 && milliseconds == 0 {
                return nil
            }
        }
    }

    // MARK: - Errors

    /// The deadline passed: cancel the statement on the server (best effort) and give up on the connection.
    private func timedOut(deadline: Deadline) -> PostgresError {
        flags.markBroken()
        if let conn, let cancel = PQgetCancel(conn) {
            // PQcancel opens a connection of its own and may block, so it runs off this queue; the
            // PGcancel copy is independent of the PGconn, which may be finished meanwhile.
            let request = CancelRequest(cancel)
            DispatchQueue.global().async { request.send() }
        }
        logger.debug("postgres call timed out", metadata: ["postgres.timeout": "\(deadline.timeout)"])
        return PostgresError(code: .timeout, message: "the call did not finish within \(deadline.timeout)")
    }

    /// A server error result; `collectResults` turns it into `.connectionLost` if the connection died with it.
    private func serverFailure(_ result: OpaquePointer) -> PostgresError {
        let sqlState = Self.errorField(result, "C")
        let message =
            Self.errorField(result, "M")
            ?? String(cString: PQresultErrorMessage(result)).trimmedWhitespace()
        return PostgresError(
            code: .server,
            sqlState: sqlState,
            message: PostgresError.redact(message.isEmpty ? "unknown error" : message, secrets: secrets),
            detail: Self.errorField(result, "D").map { PostgresError.redact($0, secrets: secrets) },
            constraint: Self.errorField(result, "n")
        )
    }

    /// A PQsend* call refused: the connection is gone, or libpq's state is not what this client expects.
    private func sendFailure() -> PostgresError {
        if isStatusBad {
            return connectionFailure(fallback: "could not send the query")
        }
        return protocolFailure(connectionErrorMessage(fallback: "could not send the query"))
    }

    /// libpq reported an I/O failure.
    private func connectionFailure(fallback: String) -> PostgresError {
        flags.markBroken()
        logger.debug("postgres connection lost")
        return PostgresError(code: .connectionLost, message: connectionErrorMessage(fallback: fallback))
    }

    private func protocolFailure(_ message: String) -> PostgresError {
        flags.markBroken()
        logger.debug("postgres protocol error")
        return PostgresError(code: .protocolError, message: message)
    }

    /// PQerrorMessage, trimmed and with secrets redacted.
    private func connectionErrorMessage(fallback: String) -> String {
        guard let conn, let raw = PQerrorMessage(conn) else { return fallback }
        let message = String(cString: raw).trimmedWhitespace()
        return PostgresError.redact(message.isEmpty ? fallback : message, secrets: secrets)
    }

    // MARK: - Results

    /// A diagnostic field by its protocol letter (C SQLSTATE, M message, D detail, n constraint, V severity).
    static func errorField(_ result: OpaquePointer, _ field: Unicode.Scalar) -> String? {
        guard let value = PQresultErrorField(result, Int32(field.value)) else { return nil }
        return String(cString: value)
    }

    static func rows(from result: OpaquePointer) -> PostgresRows {
        let columnCount = PQnfields(result)
        let rowCount = PQntuples(result)
        let columns = (0..<columnCount).map { String(cString: PQfname(result, $0)) }
        var rows: [[String?]] = []
        rows.reserveCapacity(Int(rowCount))
        for row in 0..<rowCount {
            var values: [String?] = []
            values.reserveCapacity(Int(columnCount))
            for column in 0..<columnCount {
                if PQgetisnull(result, row, column) != 0 {
                    values.append(nil)
                } else {
                    let bytes = UnsafeRawBufferPointer(
                        start: PQgetvalue(result, row, column),
                        count: Int(PQgetlength(result, row, column))
                    )
                    values.append(String(decoding: bytes, as: UTF8.self))
                }
            }
            rows.append(values)
        }
        let affectedRows = Int(String(cString: PQcmdTuples(result))) ?? 0
        return PostgresRows(columns: columns, rows: rows, affectedRows: affectedRows)
    }
}

/// A PGcancel, which libpq documents as usable from any thread, independent of its PGconn.
private final class CancelRequest: @unchecked Sendable {
    private let cancel: OpaquePointer

    init(_ cancel: OpaquePointer) {
        self.cancel = cancel
    }

    deinit {
        PQfreeCancel(cancel)
    }

    func send() {
        var buffer = [CChar](repeating: 0, count: 256)
        _ = PQcancel(cancel, &buffer, Int32(buffer.count))
    }
}

extension String {
    func trimmedWhitespace() -> String {
        var scalars = Substring(self)
        while let first = scalars.first, first.isWhitespace {
            scalars.removeFirst()
        }
        while let last = scalars.last, last.isWhitespace {
            scalars.removeLast()
        }
        return String(scalars)
    }
}
