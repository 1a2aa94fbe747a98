import LocalServers
import RedisClient
import Synchronization
import Testing

@Suite("RedisTraffic counted by a connection to a real redis-server")
struct RedisTrafficTests {
    @Test("send is 1 command in 1 round trip, a pipeline of 3 is 3 commands in 1, an error reply counts too")
    func countsEachCall() async throws {
        try await withRedisServer { server in
            let tally = RedisTrafficTally()
            let connection = try await RedisConnection.connect(
                try RedisConfiguration(url: server.url),
                logger: testLogger(),
                traffic: tally.observe
            )
            defer { connection.close() }
            #expect(tally.take() == RedisTraffic())

            #expect(try await connection.send("SET", "text", "not a number") == .simpleString("OK"))
            #expect(tally.take() == RedisTraffic(commands: 1, roundTrips: 1))

            let replies = try await connection.pipeline([["RPUSH", "list", "a"], ["RPUSH", "list", "b"], ["LLEN", "list"]])
            #expect(replies.last == .integer(2))
            #expect(tally.take() == RedisTraffic(commands: 3, roundTrips: 1))

            let length = try await connection.send(["LLEN", "list"]) { try $0.value.int }
            let elements = try await connection.pipeline([["LINDEX", "list", "0"], ["LINDEX", "list", "1"]]) { try $0.value.string }
            #expect(length == 2)
            #expect(elements == ["a", "b"])
            #expect(tally.take() == RedisTraffic(commands: 3, roundTrips: 2))

            await #expect(throws: RedisError.self) { try await connection.send("INCR", "text") }
            #expect(tally.take() == RedisTraffic(commands: 1, roundTrips: 1))
        }
    }

    @Test("the SELECT that connect sends for a database other than 0 counts")
    func countsTheHandshake() async throws {
        try await withRedisServer { server in
            let tally = RedisTrafficTally()
            let connection = try await RedisConnection.connect(
                try RedisConfiguration(url: server.url + "/2"),
                logger: testLogger(),
                traffic: tally.observe
            )
            defer { connection.close() }
            #expect(tally.take() == RedisTraffic(commands: 1, roundTrips: 1))
            _ = try await connection.send("SET", "in-2", "yes")
            #expect(tally.take() == RedisTraffic(commands: 1, roundTrips: 1))
        }
    }
}

/// Adds up what a connection reports, for a test to take in steps.
final class RedisTrafficTally: Sendable {
    private let total = Mutex(RedisTraffic())

    var observe: RedisTrafficObserver {
        { traffic in self.total.withLock { $0 += traffic } }
    }

    /// What was reported since the last call.
    func take() -> RedisTraffic {
        total.withLock { total in
            defer { total = RedisTraffic() }
            return total
        }
    }
}
