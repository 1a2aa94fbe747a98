import Foundation
import RedisClient
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Outages, restarts, signals and crashes against real servers: nothing lost, nothing stored
/// twice, nothing acknowledged before it is committed, nothing dead-lettered for an outage.
@Suite(.serialized)
struct ResilienceTests {
    // MARK: - PostgreSQL outage

    @Test("PostgreSQL stopped mid-load for 10 s: nothing acknowledged meanwhile, all stored once afterwards")
    func postgresOutage() async throws {
        try await TestEnvironment.with { environment in
            try await environment.migrate()
            let messages = Producer.workload(count: 10_000, conversations: 100, seed: 21)
            let chunks = Self.chunks(messages, of: 500)
            let redis = try await environment.redis()
            defer { redis.close() }
            try await Daemons.with { daemons in
                let daemon = try daemons.start(["run", "--workers", "2", "--consumer", "outage"], environment)

                // The first part of the load, while everything is up.
                var next = 0
                while next < 8 {
                    try await Producer.append(chunks[next], redis: redis)
                    next += 1
                    try await Task.sleep(for: .milliseconds(100))
                }
                try await eventually("the first entries acknowledged", timeout: .seconds(60)) {
                    try await GroupState.acknowledged(redis) > 0
                }

                let logAtStop = daemon.errorOutput.count
                try await environment.postgresServer.stop(immediate: true)
                let stopped = ContinuousClock.now
                let producedAtStop = next * 500
                // A batch committed just before the stop may still be acknowledged now: wait until
                // every worker holding entries has met the outage (logged a failed attempt).
                try await eventually("every worker holding entries meets the outage", timeout: .seconds(30)) {
                    let log = Self.logRecords(daemon.errorOutput.dropFirst(logAtStop))
                    let consumers = try await redis.send("XINFO", "CONSUMERS", "chat:messages", "historian").array ?? []
                    return consumers.map(replyPairs).allSatisfy { consumer in
                        guard let name = consumer["name"]?.string, consumer["pending"]?.int ?? 0 > 0 else { return true }
                        return log.contains { $0.contains("consumer=\(name) ") && $0.contains("failed; retrying") }
                    }
                }
                let ackedAtStop = try await GroupState.acknowledged(redis)
                var ackedDuringOutage = ackedAtStop
                var deadLettersDuringOutage = 0
                var daemonDied = false
                var samples = 0
                // Ten seconds down; the producers keep writing meanwhile.
                while ContinuousClock.now - stopped < .seconds(10) {
                    if next < 16 {
                        try await Producer.append(chunks[next], redis: redis)
                        next += 1
                    }
                    try await Task.sleep(for: .milliseconds(250))
                    ackedDuringOutage = max(ackedDuringOutage, try await GroupState.acknowledged(redis))
                    deadLettersDuringOutage = max(deadLettersDuringOutage, try await deadLetterCount(redis))
                    if !daemon.isRunning { daemonDied = true }
                    samples += 1
                }
                print("postgresOutage: \(ackedAtStop) of \(producedAtStop) acknowledged when PostgreSQL stopped; \(samples) samples")
                #expect(ackedDuringOutage == ackedAtStop, "entries acknowledged while PostgreSQL was down")
                #expect(deadLettersDuringOutage == 0, "entries dead-lettered while PostgreSQL was down")
                #expect(!daemonDied, "historian exited during the outage: \(daemon.errorOutput.suffix(2000))")
                print("postgresOutage: at the end of the outage \(try await environment.pendingCount()) pending, \(next * 500) produced")

                try await environment.postgresServer.start()
                while next < chunks.count {
                    try await Producer.append(chunks[next], redis: redis)
                    next += 1
                    try await Task.sleep(for: .milliseconds(50))
                }
                try await eventually("all 10,000 messages stored and acknowledged after the outage", timeout: .seconds(90)) {
                    let stored = try await environment.scalar("SELECT count(*) FROM messages")
                    let pending = try await environment.pendingCount()
                    // A dead letter means a message will never arrive: stop waiting, fail below.
                    let deadLetters = try await deadLetterCount(redis)
                    return stored == messages.count && pending == 0 || deadLetters != 0
                }
                #expect(daemon.isRunning)
                daemon.signal(SIGTERM)
                let status = try await daemon.wait(timeout: .seconds(15))
                #expect(status == 0, "\(daemon.errorOutput.suffix(2000))")

                try await Self.expectAllDone(messages, in: environment, redis: redis, acknowledged: messages.count)
            }
        }
    }

    // MARK: - Redis restart

    @Test("Redis restarted mid-load: the daemon reconnects, every entry Redis holds is stored once")
    func redisRestart() async throws {
        try await TestEnvironment.with(redisAppendOnly: true) { environment in
            try await environment.migrate()
            let messages = Producer.workload(count: 10_000, conversations: 100, seed: 22)
            let chunks = Self.chunks(messages, of: 500)
            try await Daemons.with { daemons in
                // Small batches, so that the daemon is still busy when Redis goes away.
                let daemon = try daemons.start(
                    ["run", "--workers", "2", "--consumer", "restart", "--batch-size", "20"],
                    environment
                )

                let before = try await environment.redis()
                do {
                    for chunk in chunks[0..<5] {
                        try await Producer.append(chunk, redis: before)
                        try await Task.sleep(for: .milliseconds(50))
                    }
                    // appendfsync everysec: let the append-only file catch up. (stop() sends
                    // SIGTERM, on which Redis flushes it anyway.)
                    try await Task.sleep(for: .milliseconds(1500))
                    // Then a burst, and the restart while the daemon is busy with it.
                    try await Producer.append(Array(chunks[5..<10].joined()), redis: before)
                    try await Task.sleep(for: .milliseconds(100))
                    let acked = try await GroupState.acknowledged(before)
                    print("redisRestart: \(acked) of 5000 acknowledged when Redis restarted")
                    before.close()
                } catch {
                    before.close()
                    throw error
                }

                try await environment.redisServer.restart()

                let redis = try await environment.redis()
                defer { redis.close() }
                // What Redis kept of the first half. The daemon trims acknowledged entries, so
                // the stream's length says nothing; entries-added counts every XADD it kept.
                let retained = try await streamInfo(redis).entriesAdded
                if retained != 5_000 {
                    print("redisRestart: Redis kept \(retained) of the 5000 entries added before the restart")
                }
                for chunk in chunks[10...] {
                    try await Producer.append(chunk, redis: redis)
                    try await Task.sleep(for: .milliseconds(50))
                }
                try await eventually("every entry read and acknowledged after the restart", timeout: .seconds(90)) {
                    guard let group = try await GroupState.of(redis) else { return false }
                    let stream = try await streamInfo(redis)
                    return group.pending == 0 && group.lastDelivered == stream.lastGenerated
                }
                let stored = Set(try await environment.rows("SELECT id::text FROM messages").compactMap { $0[0] })
                if retained == 5_000 {
                    try await expectStored(messages, in: environment)
                } else {
                    // Entries Redis lost may or may not have been stored before it went down;
                    // every entry it kept must be.
                    let kept = messages[0..<max(0, min(retained, 5_000))] + messages[5_000...]
                    let missing = kept.filter { !stored.contains($0.id) }
                    #expect(missing.isEmpty, "\(missing.count) messages Redis kept are not stored")
                    #expect(stored.isSubset(of: Set(messages.map(\.id))))
                }
                #expect(try await deadLetterCount(redis) == 0)
                #expect(try await environment.pendingCount() == 0)

                #expect(daemon.isRunning, "historian exited: \(daemon.errorOutput.suffix(2000))")
                daemon.signal(SIGTERM)
                let status = try await daemon.wait(timeout: .seconds(15))
                #expect(status == 0, "\(daemon.errorOutput.suffix(2000))")
            }
        }
    }

    // MARK: - SIGTERM under load

    @Test("SIGTERM under load: exit 0 within shutdown_grace; the next run finishes, each message once")
    func sigtermDuringLoad() async throws {
        try await TestEnvironment.with { environment in
            let messages = Producer.workload(count: 20_000, conversations: 200, seed: 23)
            let redis = try await environment.redis()
            defer { redis.close() }
            try await Producer.append(messages, redis: redis)
            try await Daemons.with { daemons in
                // The default consumer name, so that the second run finds its own pending entries.
                let daemon = try daemons.start(["run", "--workers", "2"], environment)
                try await eventually("the first entries acknowledged", timeout: .seconds(60)) {
                    try await GroupState.acknowledged(redis) > 0
                }
                try await Task.sleep(for: .milliseconds(500))
                let signalled = ContinuousClock.now
                daemon.signal(SIGTERM)
                let status = try await daemon.wait(timeout: .seconds(13))
                let took = ContinuousClock.now - signalled
                #expect(status == 0, "\(daemon.errorOutput.suffix(2000))")
                #expect(took < .seconds(12), "shutdown took \(took), shutdown_grace is 10 s")

                // Whatever was acknowledged is committed.
                let acknowledged = try await GroupState.acknowledged(redis)
                let stored = try await environment.scalar("SELECT count(*) FROM messages")
                print("sigtermDuringLoad: stopped in \(took) with \(acknowledged) acknowledged, \(stored) stored")
                #expect(acknowledged <= stored, "entries acknowledged but not stored")

                let rest = try await HistorianProcess.run(
                    ["run", "--once", "--workers", "2"],
                    environment: environment.historianEnvironment,
                    timeout: .seconds(90)
                )
                #expect(rest.status == 0, "\(rest.errors.suffix(2000))")
                try await Self.expectAllDone(messages, in: environment, redis: redis)
            }
        }
    }

    // MARK: - SIGKILL crashes

    @Test("two processes SIGKILLed again and again under load: nothing lost, nothing duplicated")
    func sigkillCrashes() async throws {
        try await TestEnvironment.with { environment in
            try await environment.migrate()
            let messages = Producer.workload(count: 20_000, conversations: 200, seed: 24)
            let redis = try await environment.redis()
            defer { redis.close() }
            try await Daemons.with { daemons in
                let kills = try await withThrowingTaskGroup(of: (String, Int).self) { group in
                    group.addTask {
                        let producer = try await environment.redis()
                        defer { producer.close() }
                        for chunk in Self.chunks(messages, of: 500) {
                            try await Producer.append(chunk, redis: producer)
                            try await Task.sleep(for: .milliseconds(150))
                        }
                        return ("producer", 0)
                    }
                    for name in ["a", "b"] {
                        group.addTask {
                            // Runs that SIGKILL ended, as their exit status says (128 + 9).
                            var kills = 0
                            for _ in 0..<5 {
                                let process = try daemons.start(Self.crashArguments(name), environment)
                                try await Task.sleep(for: .milliseconds(Int.random(in: 200...1500)))
                                if !process.isRunning {
                                    Issue.record("historian \(name) exited on its own: \(process.errorOutput.suffix(2000))")
                                }
                                process.signal(SIGKILL)
                                if try await process.wait(timeout: .seconds(10)) == 128 + SIGKILL { kills += 1 }
                            }
                            return (name, kills)
                        }
                    }
                    var kills: [String: Int] = [:]
                    for try await (name, count) in group { kills[name] = count }
                    return kills
                }
                #expect(kills == ["producer": 0, "a": 5, "b": 5], "runs ended by SIGKILL")
                let storedAfterCrashes = try await environment.scalar("SELECT count(*) FROM messages")
                let acknowledged = try await GroupState.acknowledged(redis)
                print("sigkillCrashes: after the crashes \(acknowledged) acknowledged, \(storedAfterCrashes) stored")
                #expect(acknowledged <= storedAfterCrashes, "entries acknowledged but not stored")

                let survivors = try ["a", "b"].map { try daemons.start(Self.crashArguments($0), environment) }
                try await eventually("all 20,000 messages stored and acknowledged", timeout: .seconds(90)) {
                    let stored = try await environment.scalar("SELECT count(*) FROM messages")
                    let pending = try await environment.pendingCount()
                    // A dead letter (poison, say) means a message will never arrive: fail below.
                    let deadLetters = try await deadLetterCount(redis)
                    return stored == messages.count && pending == 0 || deadLetters != 0
                }
                for survivor in survivors { survivor.signal(SIGTERM) }
                for survivor in survivors {
                    let status = try await survivor.wait(timeout: .seconds(15))
                    #expect(status == 0, "\(survivor.errorOutput.suffix(2000))")
                }
                try await Self.expectAllDone(messages, in: environment, redis: redis, acknowledged: messages.count)
            }
        }
    }

    static func crashArguments(_ name: String) -> [String] {
        ["run", "--workers", "2", "--consumer", name, "--claim-idle", "2s"]
    }

    // MARK: - Dead letters

    @Test("one bad entry per dead-letter reason among 1,000 good ones: each dead-lettered verbatim, the rest stored")
    func deadLetterEveryReason() async throws {
        try await TestEnvironment.with { environment in
            var good = Producer.workload(count: 1_000, conversations: 20, seed: 25)
            // Valid edge cases among the good ones: integral scores (a JSON number, not a boolean).
            let integralScores = [100, 200, 300]
            good[100].contexts = #"[{"doc_id":"d-a","content":"exact match","score":1,"metadata":null}]"#
            good[200].contexts = #"[{"doc_id":"d-b","content":"no match","score":0}]"#
            good[300].contexts = #"[{"doc_id":"d-c","content":"exact match","score":1.0}]"#
            let bad = BadEntry.everyReason(good)
            #expect(Set(bad.map(\.reason)).count == bad.count)

            // Bad entries spread among the good ones, each after the good entries it refers to.
            var commands: [[RedisArgument]] = []
            var badAt: [Int: Int] = [:]  // command index → bad entry index
            var badIndex = 0
            for (index, message) in good.enumerated() {
                commands.append(xadd(message.fields.map { ($0.0, Array($0.1.utf8)) }))
                if index >= 40, (index - 40) % 75 == 0, badIndex < bad.count {
                    badAt[commands.count] = badIndex
                    commands.append(xadd(bad[badIndex].fields))
                    badIndex += 1
                }
            }
            #expect(badIndex == bad.count)

            let redis = try await environment.redis()
            defer { redis.close() }
            let ids = try await Producer.send(commands, redis: redis)
            var sourceIDs: [String: Int] = [:]  // source entry ID → bad entry index
            for (command, index) in badAt { sourceIDs[ids[command]] = index }

            let startedAt = Date()
            // One worker: the conflicting copy must be judged after the message it copies is
            // stored. With two, a later batch holding the copy could commit first on a slow
            // machine, and the copy would be the stored one (a CI run saw it).
            let run = try await HistorianProcess.run(
                ["run", "--once", "--workers", "1"],
                environment: environment.historianEnvironment,
                timeout: .seconds(90)
            )
            #expect(run.status == 0, "\(run.errors.suffix(2000))")

            // Every good message stored; nothing from a bad entry (no stray conversation either).
            try await expectStored(good, in: environment)
            for index in integralScores {
                let contexts = try await environment.scalar(
                    "SELECT count(*) FROM message_contexts WHERE message_id = '\(good[index].id)'"
                )
                #expect(contexts == 1, "contexts \(good[index].contexts ?? "-") not stored")
            }
            #expect(try await environment.pendingCount() == 0)

            let letters = try await streamRecords(redis, "chat:messages:dlq")
            #expect(letters.count == bad.count)
            var seen = Set<Int>()
            let dlqNames = ["dlq_reason", "dlq_detail", "dlq_source_stream", "dlq_source_id", "dlq_at"]
            for letter in letters {
                let fields = letter.fields
                let value = letter.value
                guard let sourceID = value("dlq_source_id"), let index = sourceIDs[sourceID] else {
                    Issue.record("a dead letter that matches no bad entry: reason \(value("dlq_reason") ?? "-") (\(value("dlq_detail") ?? "-")), source \(value("dlq_source_id") ?? "-")")
                    continue
                }
                seen.insert(index)
                let entry = bad[index]
                print("deadLetterEveryReason: \(value("dlq_reason") ?? "-"): \(value("dlq_detail") ?? "-")")
                #expect(value("dlq_reason") == entry.reason, "dead letter of the \(entry.reason) entry: \(value("dlq_reason") ?? "-") (\(value("dlq_detail") ?? "-"))")
                let original = entry.fields.filter { !$0.0.hasPrefix("dlq_") }
                let kept = Array(fields.prefix(original.count))
                let verbatim = kept.count == original.count
                    && zip(kept, original).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
                #expect(verbatim, "\(entry.reason): original fields not kept byte for byte, in order")
                #expect(fields.dropFirst(original.count).map(\.0) == dlqNames, "\(entry.reason): dead-letter fields \(fields.map(\.0))")
                #expect(!(value("dlq_detail") ?? "").isEmpty, "\(entry.reason): empty dlq_detail")
                #expect(value("dlq_source_stream") == "chat:messages")
                let at = value("dlq_at").flatMap(TestTime.parseRFC3339)
                #expect(at != nil, "\(entry.reason): dlq_at \(value("dlq_at") ?? "-") is not RFC 3339")
                if let at {
                    #expect(at > startedAt.addingTimeInterval(-5) && at < Date().addingTimeInterval(5), "\(entry.reason): dlq_at \(at)")
                }
            }
            let missing = bad.indices.filter { !seen.contains($0) }.map { bad[$0].reason }
            #expect(missing.isEmpty, "no dead letter for \(missing)")

            // The conflicting redelivery left the first version in place (expectStored checked
            // its content); the intruder's message is nowhere.
            let intruder = bad.first { $0.reason == "user_mismatch" }!.fields.first { $0.0 == "message_id" }!.1
            #expect(try await environment.scalar("SELECT count(*) FROM messages WHERE id = '\(String(decoding: intruder, as: UTF8.self))'") == 0)
        }
    }

    // MARK: - Helpers

    static func chunks(_ messages: [TestMessage], of size: Int) -> [[TestMessage]] {
        stride(from: 0, to: messages.count, by: size).map { Array(messages[$0..<min($0 + size, messages.count)]) }
    }

    /// Every message is stored, nothing is pending, nothing was dead-lettered and, when given,
    /// the group has acknowledged exactly `acknowledged` entries.
    static func expectAllDone(
        _ messages: [TestMessage],
        in environment: TestEnvironment,
        redis: RedisConnection,
        acknowledged expected: Int? = nil,
        sourceLocation: SourceLocation = #_sourceLocation
    ) async throws {
        try await expectStored(messages, in: environment)
        #expect(try await environment.pendingCount() == 0, sourceLocation: sourceLocation)
        #expect(try await deadLetterCount(redis) == 0, sourceLocation: sourceLocation)
        if let expected {
            #expect(try await GroupState.acknowledged(redis) == expected, sourceLocation: sourceLocation)
        }
    }

    /// The records of a text log: a line, with the lines that continue it (an error message
    /// with a newline goes on in lines that start with a tab).
    static func logRecords(_ log: Substring) -> [String] {
        var records: [String] = []
        for line in log.split(separator: "\n") {
            if line.hasPrefix("\t"), !records.isEmpty {
                records[records.count - 1] += "\n" + line
            } else {
                records.append(String(line))
            }
        }
        return records
    }
}
