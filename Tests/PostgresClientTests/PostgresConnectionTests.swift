import BlockingThread
import LocalServers
import Logging
import PostgresClient
import Testing

// Serialized: starting a server blocks a cooperative thread for a while, which on a small machine would
// distort the timing checks of tests running beside it.
@Suite("PostgresConnection against a real PostgreSQL", .serialized)
struct PostgresConnectionTests {
    @Test("text parameters round-trip, with non-ASCII text, and the empty string stays distinct from NULL")
    func parameterRoundTrip() async throws {
        try await withServer { server in
            try await withConnection(to: server) { connection in
                let text = "Grüße, 日本語, emoji 🌍, quote ' and \" and \\ backslash"
                let rows = try await connection.query(
                    "SELECT $1::text AS text, $2::text AS empty, $3::text AS null_value, $2::text IS NULL AS empty_is_null",
                    [text, "", nil]
                )
                #expect(rows.columns == ["text", "empty", "null_value", "empty_is_null"])
                #expect(rows.rows.count == 1)
                #expect(rows[0, "text"] == text)
                #expect(rows[0, "empty"] == "")
                #expect(rows[0, "null_value"] == nil)
                #expect(rows[0, "empty_is_null"] == "f")
                #expect(rows[0, "no_such_column"] == nil)
                #expect(rows.affectedRows == 1)
            }
        }
    }

    @Test("a 100 KiB text value comes back byte for byte")
    func largeValue() async throws {
        try await withServer { server in
            try await withConnection(to: server) { connection in
                let pattern = "abc XYZ 0123 é 日本 🌍\t\n\\ ' \" ,;"
                var value = ""
                while value.utf8.count < 100 * 1024 {
                    value += pattern
                }
                let rows = try await connection.query(
                    "SELECT $1::text AS value, octet_length($1::text) AS bytes",
                    [value]
                )
                #expect(rows[0, "bytes"] == String(value.utf8.count))
                #expect(Array(rows[0, "value"]?.utf8 ?? "".utf8) == Array(value.utf8))
            }
        }
    }

    @Test("byte parameters arrive exactly as given, including decomposed Unicode")
    func byteParameters() async throws {
        try await withServer { server in
            try await withConnection(to: server) { connection in
                // NFD and NFC forms compare equal as Swift Strings, so the check is on bytes.
                let bytes = Array("cafe\u{301} café \u{1F30D} \u{7F} tab\there".utf8)
                let hex = bytes.map { byte in
                    let digits = String(byte, radix: 16)
                    return digits.count == 1 ? "0" + digits : digits
                }
                .joined()
                let rows = try await connection.withSession { session in
                    try session.execute("CREATE TABLE raw (v text)")
                    _ = try session.query("INSERT INTO raw VALUES ($1), ($2)", byteParameters: [bytes, nil])
                    return try session.query(
                        "SELECT encode(convert_to(v, 'UTF8'), 'hex') AS hex, v FROM raw WHERE v IS NOT DISTINCT FROM $1",
                        byteParameters: [bytes]
                    )
                }
                #expect(rows.rows.count == 1)
                #expect(rows[0, "hex"] == hex)
                #expect(Array(rows[0, "v"]?.utf8 ?? "".utf8) == bytes)

                let error = await expectPostgresError {
                    _ = try await connection.withSession { session in
                        try session.query("SELECT $1::text", byteParameters: [Array("a\u{0}b".utf8)])
                    }
                }
                #expect(error?.code == .server)
                #expect(error?.sqlState == "22021")
                #expect(error?.isTransient == false)
                #expect(try await connection.query("SELECT count(*) AS n FROM raw")[0, "n"] == "2")
            }
        }
    }

    @Test("binary array parameters arrive as their text-literal twins would, NULLs and empty arrays included")
    func binaryArrays() async throws {
        try await withServer { server in
            try await withConnection(to: server) { connection in
                let uuid: UInt128 = 0x0193A1B2_0000_7000_8000_0000000000FF
                let texts: [String?] = ["plain", nil, "", "quote \" backslash \\ {brace}, comma", "caf\u{E9} \u{1F30D}", "NULL", " spaces "]
                // 1970, 1999-12-31 (before PostgreSQL's epoch), and a time with microseconds.
                let times: [Int64?] = [0, nil, 946_684_799_999_999, 1_780_000_000_123_456]
                let json: [String?] = [#"{"b": 1, "a": [1.50, "x"], "a": 2}"#, nil, "{}"]
                let statement = PreparedStatement(
                    "test_binary_arrays",
                    """
                    SELECT $1::uuid[]::text AS uuids, $2::text[] AS texts, $3::timestamptz[] AS times,
                        $4::jsonb[]::text AS json, cardinality($5::uuid[]) AS empty,
                        $2::text[] = $6::text[] AS same_texts
                    """
                )
                let rows = try await connection.withSession { session in
                    try session.execute("SET TIME ZONE 'UTC'")
                    return try session.query(
                        statement,
                        parameters: [
                            .binary(PostgresBinary.uuidArray([uuid, 0])),
                            .binary(PostgresBinary.textArray(texts)),
                            .binary(PostgresBinary.timestamptzArray(times)),
                            .binary(PostgresBinary.jsonbArray(json)),
                            .binary(PostgresBinary.uuidArray([])),
                            .text(#"{plain,NULL,"","quote \" backslash \\ {brace}, comma","caf\#u{E9} \#u{1F30D}","NULL"," spaces "}"#),
                        ]
                    )
                }
                #expect(rows[0, "uuids"] == "{0193a1b2-0000-7000-8000-0000000000ff,00000000-0000-0000-0000-000000000000}")
                #expect(rows[0, "texts"] == #"{plain,NULL,"","quote \" backslash \\ {brace}, comma","caf\#u{E9} \#u{1F30D}","NULL"," spaces "}"#)
                #expect(
                    rows[0, "times"]
                        == #"{"1970-01-01 00:00:00+00",NULL,"1999-12-31 23:59:59.999999+00","2026-05-28 20:26:40.123456+00"}"#
                )
                #expect(rows[0, "json"] == #"{"{\"a\": 2, \"b\": 1}",NULL,"{}"}"#)
                #expect(rows[0, "empty"] == "0")
                #expect(rows[0, "same_texts"] == "t")
            }
        }
    }

    @Test("execute runs several statements and returns the last result")
    func executeSeveralStatements() async throws {
        try await withServer { server in
            try await withConnection(to: server) { connection in
                let rows = try await connection.execute(
                    """
                    CREATE TABLE t (a int);
                    INSERT INTO t VALUES (1), (2), (3);
                    UPDATE t SET a = a * 10 WHERE a > 1;
                    SELECT sum(a) AS total, count(*) AS n FROM t
                    """
                )
                #expect(rows.columns == ["total", "n"])
                #expect(rows[0, "total"] == "51")
                #expect(rows[0, "n"] == "3")
                let updated = try await connection.execute("UPDATE t SET a = 0")
                #expect(updated.affectedRows == 3)
                #expect(updated.rows.isEmpty)
            }
        }
    }

    @Test("a pipeline returns one result per statement, in order, and leaves pipeline mode behind it")
    func pipelineResults() async throws {
        try await withServer { server in
            try await withConnection(to: server) { connection in
                try await connection.execute("CREATE TABLE p (id int PRIMARY KEY, note text)")
                let insert = PreparedStatement("test_pipeline_insert", "INSERT INTO p VALUES ($1, $2)")
                let select = PreparedStatement("test_pipeline_select", "SELECT id, note FROM p WHERE id <> ALL($1::text[]::int[]) ORDER BY id")
                try await connection.withSession { session in
                    let results = try session.pipeline([
                        .plain("BEGIN"),
                        .prepared(insert, [.text("1"), .text("eins")]),
                        .prepared(insert, [.text("2"), .text(nil)]),
                        .prepared(insert, [.text("3"), .text("drei")]),
                        .prepared(select, [.binary(PostgresBinary.textArray(["3"]))]),
                        .plain("COMMIT"),
                    ])
                    #expect(results.count == 6)
                    #expect(results[1].affectedRows == 1)
                    #expect(results[4].columns == ["id", "note"])
                    #expect(results[4].rows == [["1", "eins"], ["2", nil]])
                    // Prepared already: run by name, in a second pipeline.
                    let again = try session.pipeline([.prepared(select, [.binary(PostgresBinary.textArray([]))])])
                    #expect(again.map(\.rows.count) == [3])
                    // COPY is refused in pipeline mode, so this shows the connection left it.
                    #expect(try session.copyIn("COPY p FROM STDIN", data: Array("4\tvier\n".utf8)) == 1)
                }
                #expect(try await connection.query("SELECT count(*) AS n FROM p")[0, "n"] == "4")
            }
        }
    }

    @Test("a failing statement ends its pipeline: the rest is skipped, its error thrown, and the connection stays usable")
    func pipelineFailure() async throws {
        try await withServer { server in
            try await withConnection(to: server) { connection in
                try await connection.execute("CREATE TABLE p (id int PRIMARY KEY)")
                // In a transaction block: the transaction is left failed, for the caller to roll back.
                let duplicate = await expectPostgresError {
                    try await connection.withSession { session in
                        do {
                            _ = try session.pipeline([
                                .plain("BEGIN"), .plain("INSERT INTO p VALUES (1)"), .plain("INSERT INTO p VALUES (1)"),
                                .plain("INSERT INTO p VALUES (3)"), .plain("COMMIT"),
                            ])
                        } catch {
                            #expect(throws: PostgresError.self, "the transaction should be failed") {
                                try session.execute("SELECT 1")
                            }
                            throw error
                        }
                    }
                }
                #expect(duplicate?.sqlState == "23505")
                #expect(duplicate?.code == .server)
                let aborted = try await connection.execute("ROLLBACK")
                #expect(aborted.rows.isEmpty)
                // Outside one: the pipeline is one implicit transaction, undone as a whole.
                let division = await expectPostgresError {
                    try await connection.withSession { session in
                        _ = try session.pipeline([.plain("INSERT INTO p VALUES (10)"), .plain("SELECT 1 / 0"), .plain("INSERT INTO p VALUES (11)")])
                    }
                }
                #expect(division?.sqlState == "22012")
                // A NUL in a text parameter is refused before anything is sent.
                let nul = await expectPostgresError {
                    try await connection.withSession { session in
                        _ = try session.pipeline([
                            .plain("INSERT INTO p VALUES (20)"),
                            .prepared(PreparedStatement("test_pipeline_nul", "SELECT $1::text"), [.text("a\u{0}b")]),
                        ])
                    }
                }
                #expect(nul?.sqlState == "22021")
                #expect(!connection.isBroken)
                #expect(try await connection.query("SELECT count(*) AS n FROM p")[0, "n"] == "0")
            }
        }
    }

    @Test("a pipeline that overruns the session timeout fails with timeout and breaks the connection")
    func pipelineTimeout() async throws {
        try await withServer { server in
            try await withConnection(to: server) { connection in
                let error = await expectPostgresError {
                    try await connection.withSession { session in
                        session.timeout = .milliseconds(300)
                        _ = try session.pipeline([.plain("SELECT 1"), .plain("SELECT pg_sleep(5)"), .plain("SELECT 2")])
                    }
                }
                #expect(error?.code == .timeout)
                #expect(connection.isBroken)
            }
        }
    }

    @Test("copyIn loads 50,000 rows with escaped tabs, newlines and backslashes")
    func copyIn() async throws {
        func body(_ id: Int) -> String { "row \(id)\twith a tab\nand a newline \\ backslash\r é 日本 \(id)" }
        func note(_ id: Int) -> String? {
            if id % 7 == 0 { return nil }
            if id % 11 == 0 { return "\\N" }  // the two characters, not NULL
            return "note \(id)"
        }
        let count = 50_000
        var text = ""
        for id in 0..<count {
            text += "\(id)\t\(copyTextField(body(id)))\t\(copyTextField(note(id)))\n"
        }
        let data = Array(text.utf8)
        #expect(data.count > 4 * 256 * 1024)  // several chunks

        try await withServer { server in
            try await withConnection(to: server) { connection in
                try await connection.execute("CREATE TABLE copied (id int PRIMARY KEY, body text NOT NULL, note text)")
                let copied = try await connection.withSession { session in
                    try session.copyIn("COPY copied (id, body, note) FROM STDIN", data: data)
                }
                #expect(copied == count)

                let totals = try await connection.query("SELECT count(*) AS n, count(note) AS notes FROM copied")
                #expect(totals[0, "n"] == String(count))
                #expect(totals[0, "notes"] == String((0..<count).filter { note($0) != nil }.count))

                for id in [0, 1, 7, 11, 25_000, 49_999] {
                    let row = try await connection.query("SELECT body, note FROM copied WHERE id = $1", [String(id)])
                    #expect(row.rows.count == 1)
                    #expect(row[0, "body"] == body(id))
                    #expect(row[0, "note"] == note(id))
                }
                #expect(!connection.isBroken)
            }
        }
    }

    @Test("bad COPY data is a permanent server error and the connection stays usable")
    func copyInBadData() async throws {
        try await withServer { server in
            try await withConnection(to: server) { connection in
                try await connection.execute("CREATE TABLE numbers (n int)")
                let error = await expectPostgresError {
                    _ = try await connection.withSession { session in
                        try session.copyIn("COPY numbers FROM STDIN", data: Array("1\nnot a number\n3\n".utf8))
                    }
                }
                #expect(error?.code == .server)
                #expect(error?.sqlState == "22P02")
                #expect(error?.isTransient == false)
                #expect(!connection.isBroken)
                #expect(try await connection.query("SELECT count(*) AS n FROM numbers")[0, "n"] == "0")

                let empty = try await connection.withSession { try $0.copyIn("COPY numbers FROM STDIN", data: []) }
                #expect(empty == 0)

                // copyIn with a statement that is not COPY FROM STDIN is a caller bug, not bad data.
                let notCopy = await expectPostgresError {
                    _ = try await connection.withSession { try $0.copyIn("SELECT 1", data: Array("1\n".utf8)) }
                }
                #expect(notCopy?.code == .protocolError)
                #expect(notCopy?.isTransient == false)
            }
        }
    }

    @Test("COPY FROM STDIN through execute is refused as a protocol error instead of hanging")
    func copyThroughExecute() async throws {
        try await withServer { server in
            try await withConnection(to: server) { connection in
                try await connection.execute("CREATE TABLE numbers (n int)")
                let error = await expectPostgresError { _ = try await connection.execute("COPY numbers FROM STDIN") }
                #expect(error?.code == .protocolError)
                #expect(error?.isTransient == false)
                #expect(connection.isBroken)
            }
        }
    }

    @Test("a unique violation is a permanent server error and the connection works after ROLLBACK")
    func uniqueViolation() async throws {
        try await withServer { server in
            try await withConnection(to: server) { connection in
                try await connection.execute("CREATE TABLE u (id int PRIMARY KEY)")
                let error = await expectPostgresError {
                    try await connection.withSession { session in
                        try session.execute("BEGIN")
                        do {
                            _ = try session.query("INSERT INTO u VALUES ($1)", ["1"])
                            _ = try session.query("INSERT INTO u VALUES ($1)", ["1"])
                            try session.execute("COMMIT")
                        } catch {
                            try session.execute("ROLLBACK")
                            throw error
                        }
                    }
                }
                #expect(error?.code == .server)
                #expect(error?.sqlState == "23505")
                #expect(error?.constraint == "u_pkey")
                #expect(error?.detail?.contains("already exists") == true)
                #expect(error?.isTransient == false)
                #expect(error?.description.hasPrefix("server [23505] duplicate key value") == true)
                #expect(!connection.isBroken)
                #expect(try await connection.query("SELECT count(*) AS n FROM u")[0, "n"] == "0")
            }
        }
    }

    @Test("a syntax error is a permanent server error")
    func syntaxError() async throws {
        try await withServer { server in
            try await withConnection(to: server) { connection in
                for statement in ["SELEC 1", "SELECT 1; SELEC 2"] {
                    let failure = await expectPostgresError { _ = try await connection.execute(statement) }
                    #expect(failure?.code == .server)
                    #expect(failure?.sqlState == "42601")
                    #expect(failure?.isTransient == false)
                }
                let failure = await expectPostgresError { _ = try await connection.query("SELECT $1 FRM x", ["1"]) }
                #expect(failure?.sqlState == "42601")
                #expect(!connection.isBroken)
                let one = try await connection.query("SELECT 1 AS one")
                #expect(one[0, "one"] == "1")
            }
        }
    }

    @Test("a statement that overruns the session timeout fails fast, is cancelled, and breaks the connection")
    func timeout() async throws {
        try await withServer { server in
            try await withConnection(to: server) { connection in
                let clock = ContinuousClock()
                let start = clock.now
                let error = await expectPostgresError {
                    try await connection.withSession { session in
                        session.timeout = .milliseconds(300)
                        _ = try session.query("SELECT pg_sleep(10)")
                    }
                }
                let elapsed = start.duration(to: clock.now)
                #expect(error?.code == .timeout)
                #expect(error?.isTransient == true)
                #expect(elapsed >= .milliseconds(300))
                // Far below the statement's 10 s; generous for a loaded 2-core machine.
                #expect(elapsed < .seconds(5))
                #expect(connection.isBroken)

                let next = await expectPostgresError { _ = try await connection.query("SELECT 1") }
                #expect(next?.code == .connectionLost)

                // The cancel request reached the server: the statement does not keep running for 10 s.
                try await withConnection(to: server) { observer in
                    var running = "1"
                    for _ in 0..<30 where running != "0" {
                        running =
                            try await observer.query(
                                "SELECT count(*) AS n FROM pg_stat_activity WHERE query = $1 AND state = 'active'",
                                ["SELECT pg_sleep(10)"]
                            )[0, "n"] ?? "?"
                        if running != "0" {
                            try await Task.sleep(for: .milliseconds(100))
                        }
                    }
                    #expect(running == "0")
                }
            }
        }
    }

    @Test("after an immediate server stop a query fails with connectionLost; after a restart a new connection works")
    func serverRestart() async throws {
        try await withServer { server in
            let connection = try await PostgresConnection.connect(conninfo: server.url(), logger: testLogger)
            defer { connection.close() }
            #expect(try await connection.query("SELECT 1 AS one")[0, "one"] == "1")

            try await server.stop(immediate: true)
            let error = await expectPostgresError { _ = try await connection.query("SELECT 1") }
            #expect(error?.code == .connectionLost)
            #expect(error?.isTransient == true)
            #expect(connection.isBroken)

            try await server.start()
            try await withConnection(to: server) { fresh in
                #expect(!fresh.isBroken)
                let two = try await fresh.query("SELECT 2 AS two")
                #expect(two[0, "two"] == "2")
            }
        }
    }

    @Test("a backend terminated by the server is connectionLost with the server's SQLSTATE")
    func terminatedBackend() async throws {
        try await withServer { server in
            try await withConnection(to: server) { victim in
                let pid = try await victim.query("SELECT pg_backend_pid() AS pid")[0, "pid"]
                try await withConnection(to: server) { admin in
                    _ = try await admin.query("SELECT pg_terminate_backend($1::int)", [pid])
                }
                let error = await expectPostgresError { _ = try await victim.query("SELECT 1") }
                #expect(error?.code == .connectionLost)
                #expect(error?.sqlState == "57P01")
                #expect(error?.isTransient == true)
                #expect(victim.isBroken)
            }
        }
    }

    @Test("the client logs at debug only, with notices kept out of stderr and no SQL values in any log line")
    func logging() async throws {
        try await withServer { server in
            let capture = LogCapture()
            let connection = try await PostgresConnection.connect(conninfo: server.url(), logger: capture.logger)
            try await connection.execute("DO $$ BEGIN RAISE NOTICE 'notice-secret'; END $$")
            _ = try await connection.query("SELECT $1::text AS v", ["parameter-secret"])
            _ = await expectPostgresError { _ = try await connection.query("SELECT $1::int", ["value-secret"]) }
            _ = await expectPostgresError {
                try await connection.withSession { session in
                    session.timeout = .milliseconds(100)
                    _ = try session.query("SELECT pg_sleep(2), $1::text", ["sleep-secret"])
                }
            }
            connection.close()

            let entries = capture.entries
            // A notice reached the receiver, so libpq's default processor did not print it to stderr.
            #expect(entries.contains { $0.text.contains("postgres notice") && $0.text.contains("00000") })
            #expect(entries.contains { $0.text.contains("timed out") })
            #expect(entries.allSatisfy { $0.level <= .debug })
            #expect(!entries.contains { $0.text.contains("secret") })
        }
    }

    @Test("connecting to a closed port fails as a transient connectionFailed, without secrets in the error")
    func connectRefused() async throws {
        let port = try SilentListener.closedPort()
        let error = await expectPostgresError {
            _ = try await PostgresConnection.connect(
                conninfo: "postgresql://historian:uri-s3cret@127.0.0.1:\(port)/postgres",
                password: "param-s3cret",
                connectTimeout: .seconds(5),
                logger: testLogger
            )
        }
        #expect(error?.code == .connectionFailed)
        #expect(error?.isTransient == true)
        #expect(error?.message.isEmpty == false)
        let text = "\(String(describing: error)) \(error?.message ?? "") \(error?.detail ?? "")"
        #expect(!text.contains("s3cret"))
        #expect(!text.contains("postgresql://"))
    }

    @Test("the connect timeout holds against a server that never answers")
    func connectTimeout() async throws {
        let listener = try SilentListener()
        let clock = ContinuousClock()
        let start = clock.now
        let error = await expectPostgresError {
            _ = try await PostgresConnection.connect(
                conninfo: "host=127.0.0.1 port=\(listener.port) user=historian dbname=postgres sslmode=disable",
                connectTimeout: .milliseconds(300),
                logger: testLogger
            )
        }
        let elapsed = start.duration(to: clock.now)
        // No answer at all, unlike a refused connection: a timeout (see LoopWatch).
        #expect(error?.code == .timeout)
        #expect(error?.isTransient == true)
        #expect(elapsed < .seconds(2))
        withExtendedLifetime(listener) {}
    }

    @Test(
        "an unparsable conninfo fails without quoting the password",
        arguments: [
            "host=127.0.0.1 password=s3cret s3cret",
            "postgresql://historian:s3cret@127.0.0.1:1/postgres?s3cret=1",
            "postgresql://historian:s3cret%zz@127.0.0.1:1/postgres",
        ]
    )
    func unparsableConninfo(conninfo: String) async throws {
        let error = await expectPostgresError {
            _ = try await PostgresConnection.connect(conninfo: conninfo, logger: testLogger)
        }
        #expect(error?.code == .connectionFailed)
        #expect(error?.message.isEmpty == false)
        let description = error.map { "\($0)" } ?? "s3cret"
        #expect(!description.contains("s3cret"))
    }

    @Test("application_name defaults to the given name unless the conninfo sets one; encoding is UTF-8")
    func connectionSettings() async throws {
        try await withServer { server in
            let query = "SELECT current_setting('application_name') AS app, current_setting('client_encoding') AS enc"
            let named = try await PostgresConnection.connect(
                conninfo: server.url(),
                applicationName: "historian-test",
                logger: testLogger
            )
            defer { named.close() }
            let rows = try await named.query(query)
            #expect(rows[0, "app"] == "historian-test")
            #expect(rows[0, "enc"] == "UTF8")
            #expect(named.serverVersion >= 15_00_00)

            let explicit = try await PostgresConnection.connect(
                conninfo: server.url() + "?application_name=from-url",
                logger: testLogger
            )
            defer { explicit.close() }
            #expect(try await explicit.query(query)[0, "app"] == "from-url")

            let keywordForm = try await PostgresConnection.connect(
                conninfo: "host=127.0.0.1 port=\(server.port) user=historian dbname=postgres",
                password: "ignored-by-trust",
                logger: testLogger
            )
            defer { keywordForm.close() }
            #expect(try await keywordForm.query(query)[0, "app"] == "historian")
        }
    }

    @Test("concurrent callers share one connection one session at a time; close is idempotent")
    func concurrencyAndClose() async throws {
        try await withServer { server in
            let connection = try await PostgresConnection.connect(conninfo: server.url(), logger: testLogger)
            let results = try await withThrowingTaskGroup(of: (Int, String?).self) { group in
                for value in 0..<50 {
                    group.addTask {
                        (
                            value,
                            try await connection.query("SELECT $1::int * 2 AS doubled", [String(value)])[0, "doubled"]
                        )
                    }
                }
                var results: [Int: String?] = [:]
                for try await (value, doubled) in group {
                    results[value] = doubled
                }
                return results
            }
            #expect(results.count == 50)
            #expect(results.allSatisfy { $0.value == String($0.key * 2) })

            connection.close()
            connection.close()
            #expect(connection.isBroken)
            let error = await expectPostgresError { _ = try await connection.query("SELECT 1") }
            #expect(error?.code == .closed)
            #expect(error?.isTransient == false)
        }
    }

    @Test("from a blocking thread a session runs in place; callers there and on the pool still take turns")
    func sessionsOnABlockingThread() async throws {
        try await withServer { server in
            try await withConnection(to: server) { connection in
                _ = try await connection.execute("CREATE TABLE counter (n int NOT NULL); INSERT INTO counter VALUES (0)")
                let executor = BlockingThreadExecutor(name: "test-worker")
                defer { executor.shutdown() }

                // Each caller reads, then writes, in one session: two sessions at once would lose increments.
                @Sendable func increment() async throws -> Bool {
                    try await connection.withSession { session in
                        let n = Int(try session.query("SELECT n FROM counter")[0, "n"] ?? "") ?? -1
                        _ = try session.query("UPDATE counter SET n = $1::int", [String(n + 1)])
                        return BlockingThread.isCurrent
                    }
                }
                @Sendable func incrementAll() async throws -> [Bool] {
                    var seen: [Bool] = []
                    for _ in 0..<100 { seen.append(try await increment()) }
                    return seen
                }
                async let fromThread = Task(executorPreference: executor) { try await incrementAll() }.value
                async let fromPool = Task.detached { try await incrementAll() }.value
                let (inPlace, onQueue) = try await (fromThread, fromPool)
                #expect(inPlace.count == 100 && inPlace.allSatisfy { $0 }, "the executor's sessions ran on its thread")
                #expect(onQueue.count == 100 && onQueue.allSatisfy { !$0 }, "the pool's sessions ran on the queue")
                #expect(try await connection.query("SELECT n FROM counter")[0, "n"] == "200")
            }
        }
    }
}
