import Foundation
import LocalServers
import RedisClient
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The metrics endpoint of `historian run`, scraped over HTTP while the daemon works.
@Suite(.serialized)
struct MetricsTests {
    @Test("run serves /metrics: what was stored, repeated, dead-lettered, trimmed, lost, archived and restored")
    func countersMatchWhatHappened() async throws {
        try await TestEnvironment.with { environment in
            let directory = environment.archiveDir
            let redis = try await environment.redis()
            defer { redis.close() }

            // A first run (--once, no endpoint) stores 20 messages and creates the group. Then,
            // while no one reads, a producer appends 100 with MAXLEN 10: 90 never reach the group.
            let first = Producer.workload(count: 20, conversations: 2, seed: 41)
            try await Producer.append(first, redis: redis)
            let once = try await HistorianProcess.run(["run", "--once"], environment: environment.historianEnvironment)
            #expect(once.status == 0, "\(once.errors)")
            let squeezed = Producer.workload(count: 100, conversations: 2, seed: 42)
            try await Producer.send(squeezed.map { xadd($0.fields, maxlen: 10) }, redis: redis)
            let survivors = Array(squeezed.suffix(10))

            // Then good messages, one bad entry for each reason the stream can produce, and five
            // good messages sent again, unchanged.
            let good = Producer.workload(count: 300, conversations: 10, seed: 43)
            try await Producer.append(good, redis: redis)
            let bad = BadEntry.everyReason(good)
            try await Producer.send(bad.map { xadd($0.fields) }, redis: redis)
            let repeated = Array(good[10..<15])
            try await Producer.append(repeated, redis: redis)
            let lengthAtStart = Int(try await redis.send("XLEN", "chat:messages").int ?? -1)

            var historian = environment.historianEnvironment
            historian["HISTORIAN_ARCHIVE_DIR"] = directory
            historian["HISTORIAN_ARCHIVE_EVERY"] = "1s"
            // Each batch logged ("batch done"), to hold the counters against.
            historian["HISTORIAN_LOG_LEVEL"] = "debug"
            let port = try Loopback.freePort()
            let daemon = try HistorianProcess(
                ["run", "--workers", "2", "--metrics-address", "127.0.0.1:\(port)"],
                environment: historian
            )
            defer { daemon.signal(SIGKILL) }

            let stored = survivors.count + good.count
            try await eventually("every good message stored, every entry acknowledged", timeout: .seconds(90)) {
                let messages = try await environment.scalar("SELECT count(*) FROM messages")
                let pending = try await environment.pendingCount()
                let deadLetters = try await deadLetterCount(redis)
                return messages == first.count + stored && pending == 0 && deadLetters == bad.count
            }
            let scrape = try Prometheus.scrape(port: port)
            #expect(scrape.status == 200)
            #expect(scrape.contentType.hasPrefix("text/plain; version=0.0.4"), "\(scrape.contentType)")
            let metrics = try Prometheus.parse(scrape.body)

            #expect(metrics["historian_ready"] == 1)
            // This process's work only: not the first run's 20, not the 90 it never saw.
            #expect(metrics["historian_messages_stored_total"] == Double(stored))
            #expect(metrics["historian_messages_duplicate_total"] == Double(repeated.count))
            for entry in bad {
                #expect(metrics[#"historian_dead_letters_total{reason="\#(entry.reason)"}"#] == 1, "\(entry.reason)")
            }
            #expect(metrics[#"historian_dead_letters_total{reason="poison"}"#] == 0)
            // Every batch counted once: as many as the daemon logged, which between them held
            // every entry that reached the group.
            let batches = try #require(metrics["historian_batches_total"])
            let logged = batchesDone(daemon.errorOutput)
            #expect(batches == Double(logged.count), "\(logged.count) batches logged")
            #expect(logged.map(\.entries).reduce(0, +) == survivors.count + good.count + bad.count + repeated.count)
            #expect(metrics["historian_batch_duration_seconds_count"] == batches)
            #expect((metrics["historian_batch_duration_seconds_sum"] ?? 0) > 0)
            for phase in ["store", "cache", "ack"] {
                #expect(
                    metrics[#"historian_batch_phase_duration_seconds_count{phase="\#(phase)"}"#] == batches,
                    "\(phase)"
                )
            }
            #expect(metrics[#"historian_batch_duration_seconds_bucket{le="+Inf"}"#] == batches)
            // Healthy servers: nothing retried, but every series is there to be graphed.
            #expect(metrics[#"historian_retries_total{kind="transient",operation="store"}"#] == 0)
            #expect(metrics[#"historian_retries_total{kind="needs_operator",operation="connect"}"#] == 0)
            #expect(metrics["historian_stream_gap_entries_total"] == 90)
            #expect(metrics["historian_archive_failures_total"] == 0)
            // No IDs or contents in labels: every test UUID starts with 0193.
            #expect(!scrape.body.contains("0193"))
            #expect(!scrape.body.contains("intruder") && !scrape.body.contains("u-bad"))

            // Upkeep trims what the group acknowledged (every 5 s): all of it is this daemon's.
            // The default timeout, not a few upkeep periods: a loaded machine delays them.
            var trimmed = 0.0
            try await eventually("the trim counted") {
                let length = Int(try await redis.send("XLEN", "chat:messages").int ?? -1)
                trimmed = try Prometheus.samples(port: port)["historian_stream_trimmed_entries_total"] ?? -1
                return trimmed > 0 && trimmed == Double(lengthAtStart - length)
            }

            // Every conversation made to look quiet: the next pass (archive_every 1s) archives them.
            let conversations = try await environment.scalar("SELECT count(*) FROM conversations")
            _ = try await environment.rows("UPDATE conversations SET updated_at = now() - interval '40 days'")
            try await eventually("every conversation archived and counted", timeout: .seconds(60)) {
                let archived = try Prometheus.samples(port: port)["historian_archived_conversations_total"]
                let rows = try await environment.scalar("SELECT count(*) FROM archived_conversations")
                return rows == conversations && archived == Double(conversations)
            }

            // A new message for an archived conversation restores it first.
            var later = good[0]
            later.id = Producer.uuid(0x07, 1)
            later.content = "back after forty days"
            try await Producer.append([later], redis: redis)
            try await eventually("the conversation restored and counted", timeout: .seconds(60)) {
                let metrics = try Prometheus.samples(port: port)
                return metrics["historian_restored_conversations_total"] == 1
                    && metrics["historian_messages_stored_total"] == Double(stored + 1)
            }
            #expect(
                try await environment.scalar("SELECT count(*) FROM conversations WHERE id = '\(later.conversationID)'")
                    == 1
            )
            let final = try Prometheus.samples(port: port)
            #expect(final["historian_archive_failures_total"] == 0)
            #expect(final["historian_messages_duplicate_total"] == Double(repeated.count))

            daemon.signal(SIGTERM)
            #expect(try await daemon.wait(timeout: .seconds(30)) == 0, "\(daemon.errorOutput.suffix(2000))")
        }
    }

    @Test("run --once --metrics-file leaves its final figures in the file, the workers' traffic among them")
    func onceWritesItsFigures() async throws {
        try await TestEnvironment.with { environment in
            let redis = try await environment.redis()
            defer { redis.close() }
            let messages = Producer.workload(count: 60, conversations: 4, seed: 45)
            try await Producer.append(messages, redis: redis)
            let file = FileManager.default.temporaryDirectory.appendingPathComponent("historian-\(UUID().uuidString).prom").path
            defer { try? FileManager.default.removeItem(atPath: file) }

            let once = try await HistorianProcess.run(
                ["run", "--once", "--workers", "2", "--batch-size", "10", "--metrics-file", file],
                environment: environment.historianEnvironment
            )
            #expect(once.status == 0, "\(once.errors)")
            let metrics = try Prometheus.parse(try String(contentsOfFile: file, encoding: .utf8))
            #expect(metrics["historian_messages_stored_total"] == Double(messages.count))
            let batches = try #require(metrics["historian_batches_total"])
            #expect(batches >= 6)
            // Every batch is read from Redis, stored in PostgreSQL, cached and acknowledged in
            // Redis: at least one round trip to PostgreSQL and two to Redis each, one command or
            // statement at least in each round trip but COPY's second.
            let postgresStatements = try #require(metrics["historian_postgres_statements_total"])
            let postgresRoundTrips = try #require(metrics["historian_postgres_round_trips_total"])
            let redisCommands = try #require(metrics["historian_redis_commands_total"])
            let redisRoundTrips = try #require(metrics["historian_redis_round_trips_total"])
            #expect(postgresRoundTrips >= batches)
            #expect(postgresStatements >= batches)
            #expect(redisRoundTrips >= 2 * batches)
            #expect(redisCommands >= redisRoundTrips)

            // A dry run records nothing, so it has nothing to write.
            let dry = try await HistorianProcess.run(
                ["run", "--dry-run", "--once", "--metrics-file", file],
                environment: environment.historianEnvironment
            )
            #expect(dry.status != 0)
            #expect(dry.errors.contains("--metrics-file: a dry run records no metrics"), "\(dry.errors)")
        }
    }

    @Test("a taken metrics port stops run at startup, naming the address, before anything is read; --once serves none")
    func takenPortStopsRun() async throws {
        try await TestEnvironment.with { environment in
            try await environment.migrate()
            let redis = try await environment.redis()
            defer { redis.close() }
            let messages = Producer.workload(count: 30, conversations: 3, seed: 44)
            try await Producer.append(messages, redis: redis)

            // Another program listens on the port.
            let listener = try Loopback.boundSocket()
            defer { close(listener) }
            #expect(listen(listener, 16) == 0)
            let address = "127.0.0.1:\(try Loopback.port(of: listener))"

            let daemon = try HistorianProcess(
                ["run", "--metrics-address", address],
                environment: environment.historianEnvironment
            )
            let status = try await daemon.wait(timeout: .seconds(60))
            #expect(status != 0)
            #expect(
                daemon.errorOutput.contains("metrics_address \(address): cannot listen there"),
                "\(daemon.errorOutput.suffix(2000))"
            )
            // Nothing was read: the group was never even created, nothing stored.
            #expect(try await environment.pendingCount() == -1)
            #expect(try await environment.scalar("SELECT count(*) FROM messages") == 0)

            // run --once has no endpoint, so the same address is no obstacle.
            let once = try await HistorianProcess.run(
                ["run", "--once", "--metrics-address", address],
                environment: environment.historianEnvironment
            )
            #expect(once.status == 0, "\(once.errors)")
            #expect(try await environment.scalar("SELECT count(*) FROM messages") == messages.count)

            // A malformed address stops every command when the configuration loads.
            let malformed = try await HistorianProcess.run(
                ["check", "--metrics-address", "9464"],
                environment: environment.historianEnvironment
            )
            #expect(malformed.status != 0)
            #expect(malformed.errors.contains(#"metrics_address: "9464" is not host:port"#), "\(malformed.errors)")
        }
    }
}
