internal import CSQLite

/// A value of a SQLite column, in its storage class. Text is the bytes the file holds,
/// unchecked: SQLite stores whatever it was given, valid UTF-8 or not.
public enum SQLiteValue: Sendable, Hashable {
    case null
    case integer(Int64)
    case real(Double)
    case text([UInt8])
    case blob([UInt8])

    public static func text(_ string: String) -> SQLiteValue { .text(Array(string.utf8)) }
}

/// A compiled statement of one `SQLiteDatabase`, finalized when the value goes away.
public final class SQLiteStatement {
    /// Kept open while the statement lives.
    private let database: SQLiteDatabase
    private let handle: OpaquePointer

    init(database: SQLiteDatabase, handle: OpaquePointer) {
        self.database = database
        self.handle = handle
    }

    deinit {
        sqlite3_finalize(handle)
    }

    /// Starts the statement over with these values for its parameters `?1, ?2, …`.
    public func bind(_ values: [SQLiteValue]) throws(SQLiteError) {
        sqlite3_reset(handle)
        sqlite3_clear_bindings(handle)
        for (offset, value) in values.enumerated() {
            let index = Int32(offset + 1)
            let status: Int32
            switch value {
            case .null:
                status = sqlite3_bind_null(handle, index)
            case .integer(let number):
                status = sqlite3_bind_int64(handle, index, number)
            case .real(let number):
                status = sqlite3_bind_double(handle, index, number)
            case .text(let bytes):
                // An empty array may have no address, which SQLite would take for NULL.
                status = (bytes.isEmpty ? [0] : bytes).withUnsafeBytes { buffer in
                    sqlite3_bind_text(
                        handle,
                        index,
                        buffer.baseAddress?.assumingMemoryBound(to: CChar.self),
                        Int32(bytes.count),
                        historian_sqlite_transient()
                    )
                }
            case .blob(let bytes):
                status =
                    bytes.isEmpty
                    ? sqlite3_bind_zeroblob(handle, index, 0)
                    : bytes.withUnsafeBytes { buffer in
                        sqlite3_bind_blob(
                            handle,
                            index,
                            buffer.baseAddress,
                            Int32(bytes.count),
                            historian_sqlite_transient()
                        )
                    }
            }
            guard status == SQLITE_OK else { throw database.error(status) }
        }
    }

    /// The next row, or `nil` once there are no more.
    public func next() throws(SQLiteError) -> [SQLiteValue]? {
        let status = sqlite3_step(handle)
        switch status {
        case SQLITE_ROW:
            return (0..<sqlite3_column_count(handle)).map(value)
        case SQLITE_DONE:
            return nil
        default:
            throw database.error(status)
        }
    }

    /// Runs the statement once with these parameters, ignoring any rows (an `INSERT`).
    public func run(_ values: [SQLiteValue]) throws(SQLiteError) {
        try bind(values)
        while try next() != nil {}
    }

    private func value(_ column: Int32) -> SQLiteValue {
        switch sqlite3_column_type(handle, column) {
        case SQLITE_INTEGER:
            return .integer(sqlite3_column_int64(handle, column))
        case SQLITE_FLOAT:
            return .real(sqlite3_column_double(handle, column))
        case SQLITE_TEXT:
            // Asked for first, then its length in bytes, as SQLite's documentation requires.
            let text = sqlite3_column_text(handle, column)
            let count = Int(sqlite3_column_bytes(handle, column))
            return .text(text.map { Array(UnsafeBufferPointer(start: $0, count: count)) } ?? [])
        case SQLITE_BLOB:
            let blob = sqlite3_column_blob(handle, column)
            let count = Int(sqlite3_column_bytes(handle, column))
            return .blob(blob.map { Array(UnsafeRawBufferPointer(start: $0, count: count)) } ?? [])
        default:
            return .null
        }
    }
}
