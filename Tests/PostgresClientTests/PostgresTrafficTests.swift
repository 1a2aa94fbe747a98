import LocalServers
import PostgresClient
import Synchronization
import Testing

@Suite("PostgresTraffic counted by a connection to a real PostgreSQL", .serialized)
struct PostgresTrafficTests {
    @Test("each kind of call counts its statements and round trips; a pipeline of 3 is 3 statements in 1 round trip")
    func countsEachCall() async throws {
        try await withServer { server in
            let tally = PostgresTrafficTally()
            let connection = try await PostgresConnection.connect(
                conninfo: server.url(),
                logger: testLogger,
                traffic: tally.observe
            )
            defer { connection.close() }
            #expect(tally.take() == PostgresTraffic())

            _ = try await connection.query("SELECT 1")
            #expect(tally.take() == PostgresTraffic(statements: 1, roundTrips: 1))

            let results = try await connection.withSession { session in
                try session.pipeline([.plain("SELECT 1"), .plain("SELECT 2"), .plain("SELECT 3")]).count
            }
            #expect(results == 3)
            #expect(tally.take() == PostgresTraffic(statements: 3, roundTrips: 1))

            try await connection.execute("CREATE TABLE t (n int); INSERT INTO t VALUES (1); INSERT INTO t VALUES (2)")
            #expect(tally.take() == PostgresTraffic(statements: 3, roundTrips: 1))

            // The wait for the server to start the COPY, then the data and the wait for its result.
            let copied = try await connection.withSession { try $0.copyIn("COPY t (n) FROM STDIN", data: Array("3\n4\n".utf8)) }
            #expect(copied == 2)
            #expect(tally.take() == PostgresTraffic(statements: 1, roundTrips: 2))

            // Prepared on first use: one more round trip, once per connection.
            let count = PreparedStatement("traffic_count", "SELECT count(*) AS n FROM t WHERE n > $1::int")
            let counts = try await connection.withSession { session in
                [try session.query(count, ["0"])[0, "n"], try session.query(count, ["2"])[0, "n"]]
            }
            #expect(counts == ["4", "2"])
            #expect(tally.take() == PostgresTraffic(statements: 2, roundTrips: 3))
        }
    }

    @Test("a call that fails still counts what it sent; execute counts the statements the server ran")
    func countsFailedCalls() async throws {
        try await withServer { server in
            let tally = PostgresTrafficTally()
            let connection = try await PostgresConnection.connect(
                conninfo: server.url(),
                logger: testLogger,
                traffic: tally.observe
            )
            defer { connection.close() }

            let pipelineError = await expectPostgresError {
                _ = try await connection.withSession {
                    try $0.pipeline([.plain("SELECT 1"), .plain("SELECT 1/0"), .plain("SELECT 3")])
                }
            }
            #expect(pipelineError?.sqlState == "22012")
            #expect(tally.take() == PostgresTraffic(statements: 3, roundTrips: 1))

            // The simple protocol stops at the failing statement: the third never runs.
            let executeError = await expectPostgresError { try await connection.execute("SELECT 1; SELECT 1/0; SELECT 3") }
            #expect(executeError?.sqlState == "22012")
            #expect(tally.take() == PostgresTraffic(statements: 2, roundTrips: 1))

            #expect(try await connection.query("SELECT 7 AS n")[0, "n"] == "7")
            #expect(tally.take() == PostgresTraffic(statements: 1, roundTrips: 1))
        }
    }
}

/// Adds up what a connection reports, for a test to take in steps.
final class PostgresTrafficTally: Sendable {
    private let total = Mutex(PostgresTraffic())

    var observe: PostgresTrafficObserver {
        { traffic in self.total.withLock { $0 += traffic } }
    }

    /// What was reported since the last call.
    func take() -> PostgresTraffic {
        total.withLock { total in
            defer { total = PostgresTraffic() }
            return total
        }
    }
}
