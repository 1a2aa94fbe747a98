/// A statement with the name it is prepared under; a name stands for one SQL text only.
public struct PreparedStatement: Sendable {
    public let name: String
    public let sql: String

    public init(_ name: String, _ sql: String) {
        self.name = name
        self.sql = sql
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
        try checkValid()
        let bytes = parameters.map { $0.map { Array($0.utf8) } }
        return try connection.query(sql, parameters: bytes, deadline: Deadline(after: timeout))
    }

    /// Runs `statement`, prepared on first use on this connection (or by `prepare(_:)`) and run
    /// by name afterwards, so PostgreSQL parses it once per connection.
    public func query(_ statement: PreparedStatement, _ parameters: [String?] = []) throws -> PostgresRows {
        try query(statement, parameters: parameters.map { .text($0) })
    }

    /// Runs `statement` (see `query(_:_:)`) with parameters in text or binary format.
    public func query(_ statement: PreparedStatement, parameters: [PostgresParameter]) throws -> PostgresRows {
        try checkValid()
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
        return try connection.query(
            statement.sql,
            parameters: bytes,
            binary: binary,
            statementName: statement.name,
            deadline: Deadline(after: timeout)
        )
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
        return try connection.query(sql, parameters: byteParameters, deadline: Deadline(after: timeout))
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
