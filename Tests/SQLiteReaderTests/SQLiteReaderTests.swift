import Foundation
import SQLiteReader
import Testing

/// The SQLite reader against real files: values come back in their storage class with the
/// bytes that were stored, and a read-only database cannot be written.
struct SQLiteReaderTests {
    /// A fresh file path in a temporary directory, removed by `body`'s end.
    static func withFile<T>(_ body: (String) throws -> T) throws -> T {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "sqlite-reader-\(UUID().uuidString)"
        )
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        return try body(directory.appendingPathComponent("store.db").path)
    }

    @Test func valuesComeBackAsStored() throws {
        let values: [SQLiteValue] = [
            .null, .integer(-42), .integer(Int64.max), .real(1.5), .text("héllo"), .text([0x61, 0x00, 0x62]),
            .text([0xC3, 0x28]), .text([]), .blob([0xFF, 0x00, 0xFE]), .blob([]),
        ]
        let read = try Self.withFile { path in
            let database = try SQLiteDatabase(path: path, mode: .readWriteCreate)
            try database.execute("CREATE TABLE t (n INTEGER PRIMARY KEY, v)")
            let insert = try database.prepare("INSERT INTO t (n, v) VALUES (?1, ?2)")
            for (index, value) in values.enumerated() {
                try insert.run([.integer(Int64(index)), value])
            }
            let select = try database.prepare("SELECT v FROM t ORDER BY n")
            var read: [SQLiteValue] = []
            while let row = try select.next() { read.append(row[0]) }
            return read
        }
        #expect(read == values)
    }

    @Test func readOnlyRefusesWritesAndMissingFiles() throws {
        try Self.withFile { path in
            #expect(throws: SQLiteError.self) { try SQLiteDatabase(path: path, mode: .readOnly) }
            do {
                let database = try SQLiteDatabase(path: path, mode: .readWriteCreate)
                try database.execute("CREATE TABLE t (v TEXT)")
            }
            let database = try SQLiteDatabase(path: path, mode: .readOnly)
            let error = #expect(throws: SQLiteError.self) { try database.execute("INSERT INTO t VALUES ('x')") }
            #expect(error?.code == 8)  // SQLITE_READONLY
            let count = try database.prepare("SELECT count(*) FROM t")
            #expect(try count.next() == [.integer(0)])
        }
    }

    @Test func errorsNameTheProblem() throws {
        try Self.withFile { path in
            try Data("not a database, just text".utf8).write(to: URL(fileURLWithPath: path))
            let database = try SQLiteDatabase(path: path, mode: .readOnly)
            let error = #expect(throws: SQLiteError.self) { try database.prepare("SELECT * FROM sqlite_master") }
            #expect(error?.code == 26)  // SQLITE_NOTADB
            #expect(error?.description.contains("not a database") == true)
        }
    }
}
