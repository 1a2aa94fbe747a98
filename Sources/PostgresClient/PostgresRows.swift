/// A result in text format.
public struct PostgresRows: Sendable {
    /// Column names in result order.
    public var columns: [String]
    /// Text values by row, then column; `nil` is SQL NULL.
    public var rows: [[String?]]
    /// The row count of the command tag (INSERT, UPDATE, DELETE, COPY, SELECT ...), 0 if it has none.
    public var affectedRows: Int

    /// Creates a result; the client builds these itself, tests and fakes may too.
    public init(columns: [String] = [], rows: [[String?]] = [], affectedRows: Int = 0) {
        self.columns = columns
        self.rows = rows
        self.affectedRows = affectedRows
    }

    /// `rows[0, "id"]`: the value in an in-range row; `nil` for SQL NULL or an unknown column.
    public subscript(row: Int, column: String) -> String? {
        guard let index = columns.firstIndex(of: column) else { return nil }
        return rows[row][index]
    }
}
