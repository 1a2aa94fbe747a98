internal import CSQLite

/// A failure of SQLite, with its result code; the message names files, tables and columns,
/// never a value of a row.
public struct SQLiteError: Error, Sendable, Hashable, CustomStringConvertible {
    /// SQLite's primary result code (`SQLITE_CANTOPEN` is 14, `SQLITE_NOTADB` 26, …).
    public var code: Int32
    public var message: String

    public var description: String { "sqlite: \(message) (code \(code))" }
}

/// One SQLite database file, open until the value goes away.
///
/// Not `Sendable`: a connection is used by one thread at a time, and its statements with it.
/// Its calls block (they read the file), so callers run them on a thread that may block.
public final class SQLiteDatabase {
    public enum Mode: Sendable, Hashable {
        /// Reads only: the file must exist, and nothing in it changes (`SQLITE_OPEN_READONLY`).
        case readOnly
        /// Reads and writes, creating the file if it is missing (for tests that build fixtures).
        case readWriteCreate
    }

    let handle: OpaquePointer

    /// Opens the file at `path`; waits up to `busyTimeout` for a writer's lock to go.
    public init(path: String, mode: Mode = .readOnly, busyTimeout: Duration = .seconds(5)) throws(SQLiteError) {
        let flags =
            switch mode {
            case .readOnly: SQLITE_OPEN_READONLY
            case .readWriteCreate: SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE
            }
        var opened: OpaquePointer?
        let status = sqlite3_open_v2(path, &opened, flags, nil)
        guard status == SQLITE_OK, let opened else {
            // Even a failed open can allocate a handle, which holds the message and must be closed.
            let message = opened.map { String(cString: sqlite3_errmsg($0)) } ?? String(cString: sqlite3_errstr(status))
            sqlite3_close_v2(opened)
            throw SQLiteError(code: status & 0xFF, message: "cannot open \(path): \(message)")
        }
        handle = opened
        let milliseconds =
            busyTimeout.components.seconds * 1000 + busyTimeout.components.attoseconds / 1_000_000_000_000_000
        sqlite3_busy_timeout(handle, Int32(clamping: milliseconds))
    }

    deinit {
        // The _v2 close waits for statements still open to be finalized, whatever the order.
        sqlite3_close_v2(handle)
    }

    /// Runs statements that return no rows (`CREATE TABLE …; BEGIN`), separated by `;`.
    public func execute(_ sql: String) throws(SQLiteError) {
        let status = sqlite3_exec(handle, sql, nil, nil, nil)
        guard status == SQLITE_OK else { throw error(status) }
    }

    /// Compiles one statement, to run with `SQLiteStatement.next()` or `run(_:)`.
    public func prepare(_ sql: String) throws(SQLiteError) -> SQLiteStatement {
        var statement: OpaquePointer?
        let status = sqlite3_prepare_v2(handle, sql, -1, &statement, nil)
        guard status == SQLITE_OK, let statement else {
            sqlite3_finalize(statement)
            throw error(status)
        }
        return SQLiteStatement(database: self, handle: statement)
    }

    /// The error of the call that just returned `status` on this connection.
    func error(_ status: Int32) -> SQLiteError {
        SQLiteError(code: status & 0xFF, message: String(cString: sqlite3_errmsg(handle)))
    }
}
