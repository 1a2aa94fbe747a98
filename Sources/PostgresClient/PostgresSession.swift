/// A statement with the name it is prepared under; a name stands for one SQL text only.
public struct PreparedStatement: Sendable {
    public let name: String
    public let sql: String

    public init(_ name: String, _ sql: String) {
        self.name = name
        self.sql = sql
    }
}

/// One statement of `PostgresSession.pipeline(_:)`.
public enum PipelineStatement: Sendable {
    /// A statement without parameters (one only: the extended protocol takes no `;` lists).
    case plain(String)
    /// A prepared statement (see `PostgresSession.query(_:parameters:)`).
    case prepared(PreparedStatement, [PostgresParameter])

    var libpq: LibpqConnection.Statement {
        switch self {
        case .plain(let sql):
            return LibpqConnection.Statement(sql: sql)
        case .prepared(let statement, let parameters):
            return Self.libpq(statement.sql, parameters, statementName: statement.name)
        }
    }

    static func libpq(_ sql: String, _ parameters: [PostgresParameter], statementName: String?) -> LibpqConnection.Statement {
        var bytes: [[UInt8]?] = []
        var binary: [Bool] = []
        bytes.reserveCapacity(parameters.count)
        binary.reserveCapacity(parameters.count)
        for parameter in parameters {
            switch parameter {
            case .text(let text):
                bytes.append(text.map { Array($0.utf8) })
                binary.append(false)
            case .binary(let value):
                bytes.append(value)
                binary.append(true)
            }
        }
        return LibpqConnection.Statement(sql: sql, parameters: bytes, binary: binary, statementName: statementName)
    }
}

/// Synchronous access to one connection, valid only inside `PostgresConnection.withSession`; must not escape.
public final class PostgresSession {
    private let connection: LibpqConnection
    /// Cleared when `withSession` returns, so an escaped session fails with `.closed` instead of racing.
    private var isValid = true

    /// Per-call timeout of the calls below; starts at the connection's query timeout.
    public var timeout: Duration

    init(connection: LibpqConnection, timeout: Duration) {
        self.connection = connection
        self.timeout = timeout
    }

    func invalidate() {
        isValid = false
    }

    /// Runs an extended-protocol query with text parameters `$1, $2, ...` (`nil` is NULL).
    public func query(_ sql: String, _ parameters: [String?] = []) throws -> PostgresRows {
        try query(sql, byteParameters: parameters.map { $0.map { Array($0.utf8) } })
    }

    /// Runs `statement`, prepared on first use on this connection (or by `prepare(_:)`) and run
    /// by name afterwards, so PostgreSQL parses it once per connection.
    public func query(_ statement: PreparedStatement, _ parameters: [String?] = []) throws -> PostgresRows {
        try query(statement, parameters: parameters.map { .text($0) })
    }

    /// Runs `statement` (see `query(_:_:)`) with parameters in text or binary format.
    public func query(_ statement: PreparedStatement, parameters: [PostgresParameter]) throws -> PostgresRows {
        try checkValid()
        return try connection.query(PipelineStatement.prepared(statement, parameters).libpq, deadline: Deadline(after: timeout))
    }

    /// Runs an unnamed extended-protocol query with parameters in text or binary format.
    public func query(_ sql: String, parameters: [PostgresParameter]) throws -> PostgresRows {
        try checkValid()
        return try connection.query(PipelineStatement.libpq(sql, parameters, statementName: nil), deadline: Deadline(after: timeout))
    }

    /// Prepares `statement` now rather than on first use: one that does not parse fails here,
    /// and its first run does not wait for parsing.
    public func prepare(_ statement: PreparedStatement) throws {
        try checkValid()
        try connection.prepare(statement.name, statement.sql, deadline: Deadline(after: timeout))
    }

    /// Runs an extended-protocol query with text-format parameters given as exact bytes (`nil` is NULL).
    public func query(_ sql: String, byteParameters: [[UInt8]?]) throws -> PostgresRows {
        try checkValid()
        return try connection.query(.init(sql: sql, parameters: byteParameters), deadline: Deadline(after: timeout))
    }

    /// Sends all of `statements`, then reads their results: one round trip instead of one
    /// each (PostgreSQL's pipeline mode). Returns one result per statement, in order.
    ///
    /// A statement that fails ends the pipeline: the ones after it are skipped, and its error
    /// is thrown. Inside a transaction block, that leaves the transaction failed, as any error
    /// does; outside one, each statement commits by itself. The timeout covers the whole
    /// pipeline. `COPY` cannot run in a pipeline.
    public func pipeline(_ statements: [PipelineStatement]) throws -> [PostgresRows] {
        try checkValid()
        return try connection.pipeline(statements.map(\.libpq), deadline: Deadline(after: timeout))
    }

    /// Runs one or more `;`-separated statements over the simple protocol; returns the last result.
    @discardableResult
    public func execute(_ sql: String) throws -> PostgresRows {
        try checkValid()
        return try connection.execute(sql, deadline: Deadline(after: timeout))
    }

    /// Runs `COPY ... FROM STDIN` with already-encoded text or CSV data; returns the number of rows copied.
    @discardableResult
    public func copyIn(_ sql: String, data: [UInt8]) throws -> Int {
        try checkValid()
        return try connection.copyIn(sql, data: data, deadline: Deadline(after: timeout))
    }

    private func checkValid() throws {
        guard isValid else {
            throw PostgresError(code: .closed, message: "the session was used outside withSession")
        }
    }
}

// Confined to the connection's queue for the duration of one `withSession` body.
@available(*, unavailable)
extension PostgresSession: Sendable {}
