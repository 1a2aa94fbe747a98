import Metrics
import MetricsTestKit
import PostgresClient
import RedisClient
import Testing

@testable import Historian

/// What `DaemonMetrics` records, against swift-metrics' test backend.
struct DaemonMetricsTests {
    @Test func everySeriesExistsFromTheStart() throws {
        let backend = TestMetrics()
        _ = DaemonMetrics(factory: backend)
        for reason in DeadLetterReason.allCases {
            #expect(
                try backend.expectCounter("historian_dead_letters_total", [("reason", reason.rawValue)]).totalValue == 0
            )
        }
        #expect(
            try backend.expectCounter("historian_retries_total", [("operation", "store"), ("kind", "transient")])
                .totalValue == 0
        )
        #expect(try backend.expectCounter("historian_messages_stored_total").totalValue == 0)
        #expect(try backend.expectGauge("historian_ready").lastValue == 0)
    }

    @Test func aBatchIsAddedInOneIncrementPerFigure() throws {
        let backend = TestMetrics()
        let metrics = DaemonMetrics(factory: backend)
        let entries =
            (0..<5).map { testEntry($0) } + [
                testEntry(5, valid: false), testEntry(6, valid: false),
            ]
        var machine = BatchStateMachine(entries: entries, validator: EntryValidator())
        guard case .store(let unit) = machine.nextAction() else {
            Issue.record("expected a store")
            return
        }
        machine.unitStored([
            unit[0].id: .stored, unit[1].id: .stored, unit[2].id: .stored, unit[3].id: .alreadyStored,
            unit[4].id: .conflict,
        ])
        guard case .finish(let acknowledgement) = machine.nextAction() else {
            Issue.record("expected finish")
            return
        }
        metrics.recordBatch(
            acknowledgement,
            store: .milliseconds(3),
            cache: .milliseconds(2),
            acknowledge: .milliseconds(1)
        )

        #expect(try backend.expectCounter("historian_batches_total").values == [1])
        #expect(try backend.expectCounter("historian_messages_stored_total").values == [3])
        #expect(try backend.expectCounter("historian_messages_duplicate_total").values == [1])
        #expect(try backend.expectCounter("historian_dead_letters_total", [("reason", "invalid_uuid")]).values == [2])
        #expect(try backend.expectCounter("historian_dead_letters_total", [("reason", "conflict")]).values == [1])
        #expect(try backend.expectCounter("historian_dead_letters_total", [("reason", "poison")]).values == [])
        #expect(try backend.expectTimer("historian_batch_duration_seconds").values == [6_000_000])
        #expect(
            try backend.expectTimer("historian_batch_phase_duration_seconds", [("phase", "store")]).values == [
                3_000_000
            ]
        )
        #expect(
            try backend.expectTimer("historian_batch_phase_duration_seconds", [("phase", "cache")]).values == [
                2_000_000
            ]
        )
        #expect(
            try backend.expectTimer("historian_batch_phase_duration_seconds", [("phase", "ack")]).values == [1_000_000]
        )
    }

    @Test func theWorkersTrafficAddsUpInFourCounters() throws {
        let backend = TestMetrics()
        let metrics = DaemonMetrics(factory: backend)
        metrics.postgresTraffic(PostgresTraffic(statements: 3, roundTrips: 1))
        metrics.postgresTraffic(PostgresTraffic(statements: 0, roundTrips: 1))
        metrics.redisTraffic(RedisTraffic(commands: 5, roundTrips: 1))
        metrics.redisTraffic(RedisTraffic(commands: 1, roundTrips: 1))

        #expect(try backend.expectCounter("historian_postgres_statements_total").totalValue == 3)
        #expect(try backend.expectCounter("historian_postgres_round_trips_total").totalValue == 2)
        #expect(try backend.expectCounter("historian_redis_commands_total").totalValue == 6)
        #expect(try backend.expectCounter("historian_redis_round_trips_total").totalValue == 2)
    }

    @Test func retriesCountByOperationAndKind() async throws {
        let backend = TestMetrics()
        let metrics = DaemonMetrics(factory: backend)
        var failures = 0
        let quick = Backoff(base: .milliseconds(1), cap: .milliseconds(1))
        let value = try await retrying(.cache, logger: .init(label: "test"), metrics: metrics, backoff: quick) {
            failures += 1
            if failures <= 2 { throw RedisError(code: .connectionFailed, message: "test: connection refused") }
            if failures == 3 {
                throw RedisError(
                    code: .server,
                    message: "WRONGTYPE Operation against a key holding the wrong kind of value"
                )
            }
            return 42
        }
        #expect(value == 42)
        #expect(
            try backend.expectCounter("historian_retries_total", [("operation", "cache"), ("kind", "transient")])
                .totalValue == 2
        )
        #expect(
            try backend.expectCounter("historian_retries_total", [("operation", "cache"), ("kind", "needs_operator")])
                .totalValue == 1
        )
        #expect(
            try backend.expectCounter("historian_retries_total", [("operation", "store"), ("kind", "transient")])
                .totalValue == 0
        )
    }
}
