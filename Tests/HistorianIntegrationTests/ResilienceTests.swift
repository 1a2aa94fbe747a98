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
                    try await Self.acknowledged(redis) > 0
                }

                try await environment.postgresServer.stop(immediate: true)
                let stopped = ContinuousClock.now
                let producedAtStop = next * 500
                // A batch committed just before the stop may still be acknowledged now.
                try await Task.sleep(for: .milliseconds(500))
                let ackedAtStop = try await Self.acknowledged(redis)
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
                    ackedDuringOutage = max(ackedDuringOutage, try await Self.acknowledged(redis))
                    deadLettersDuringOutage = max(deadLettersDuringOutage, try await Self.deadLetterCount(redis))
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
                    let deadLetters = try await Self.deadLetterCount(redis)
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
                    let acked = try await Self.acknowledged(before)
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
                let retained = try await Self.streamInfo(redis).entriesAdded
                if retained != 5_000 {
                    print("redisRestart: Redis kept \(retained) of the 5000 entries added before the restart")
                }
                for chunk in chunks[10...] {
                    try await Producer.append(chunk, redis: redis)
                    try await Task.sleep(for: .milliseconds(50))
                }
                try await eventually("every entry read and acknowledged after the restart", timeout: .seconds(90)) {
                    guard let group = try await Self.group(redis) else { return false }
                    let stream = try await Self.streamInfo(redis)
                    return group.pending == 0 && group.lastDelivered == stream.lastGenerated
                }
                let stored = Set(try await environment.rows("SELECT id::text FROM messages").compactMap { $0[0] })
                if retained == 5_000 {
                    try await IngestTests.expectStored(messages, in: environment)
                } else {
                    // Entries Redis lost may or may not have been stored before it went down;
                    // every entry it kept must be.
                    let kept = messages[0..<max(0, min(retained, 5_000))] + messages[5_000...]
                    let missing = kept.filter { !stored.contains($0.id) }
                    #expect(missing.isEmpty, "\(missing.count) messages Redis kept are not stored")
                    #expect(stored.isSubset(of: Set(messages.map(\.id))))
                }
                #expect(try await Self.deadLetterCount(redis) == 0)
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
                    try await Self.acknowledged(redis) > 0
                }
                try await Task.sleep(for: .milliseconds(500))
                let signalled = ContinuousClock.now
                daemon.signal(SIGTERM)
                let status = try await daemon.wait(timeout: .seconds(13))
                let took = ContinuousClock.now - signalled
                #expect(status == 0, "\(daemon.errorOutput.suffix(2000))")
                #expect(took < .seconds(12), "shutdown took \(took), shutdown_grace is 10 s")

                // Whatever was acknowledged is committed.
                let acknowledged = try await Self.acknowledged(redis)
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
                            var kills = 0
                            while kills < 5 {
                                let process = try daemons.start(Self.crashArguments(name), environment)
                                try await Task.sleep(for: .milliseconds(Int.random(in: 200...1500)))
                                if !process.isRunning {
                                    Issue.record("historian \(name) exited on its own: \(process.errorOutput.suffix(2000))")
                                }
                                process.signal(SIGKILL)
                                _ = try await process.wait(timeout: .seconds(10))
                                kills += 1
                            }
                            return (name, kills)
                        }
                    }
                    var kills: [String: Int] = [:]
                    for try await (name, count) in group { kills[name] = count }
                    return kills
                }
                #expect(kills["a"] ?? 0 >= 5 && kills["b"] ?? 0 >= 5)
                let storedAfterCrashes = try await environment.scalar("SELECT count(*) FROM messages")
                let acknowledged = try await Self.acknowledged(redis)
                print("sigkillCrashes: after the crashes \(acknowledged) acknowledged, \(storedAfterCrashes) stored")
                #expect(acknowledged <= storedAfterCrashes, "entries acknowledged but not stored")

                let survivors = try ["a", "b"].map { try daemons.start(Self.crashArguments($0), environment) }
                try await eventually("all 20,000 messages stored and acknowledged", timeout: .seconds(90)) {
                    let stored = try await environment.scalar("SELECT count(*) FROM messages")
                    let pending = try await environment.pendingCount()
                    // A dead letter (poison, say) means a message will never arrive: fail below.
                    let deadLetters = try await Self.deadLetterCount(redis)
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

    /// One entry that must become a dead letter, as raw fields.
    struct BadEntry {
        var reason: String
        var fields: [(String, [UInt8])]
    }

    @Test("one bad entry per dead-letter reason among 1,000 good ones: each dead-lettered verbatim, the rest stored")
    func deadLetterEveryReason() async throws {
        try await TestEnvironment.with { environment in
            var good = Producer.workload(count: 1_000, conversations: 20, seed: 25)
            // Valid edge cases among the good ones: integral scores (a JSON number, not a boolean).
            let integralScores = [100, 200, 300]
            good[100].contexts = #"[{"doc_id":"d-a","content":"exact match","score":1,"metadata":null}]"#
            good[200].contexts = #"[{"doc_id":"d-b","content":"no match","score":0}]"#
            good[300].contexts = #"[{"doc_id":"d-c","content":"exact match","score":1.0}]"#
            let bad = Self.badEntries(good)
            #expect(Set(bad.map(\.reason)).count == bad.count)

            // Bad entries spread among the good ones, each after the good entries it refers to.
            var commands: [[RedisArgument]] = []
            var badAt: [Int: Int] = [:]  // command index → bad entry index
            var badIndex = 0
            for (index, message) in good.enumerated() {
                commands.append(Self.xadd(message.fields.map { ($0.0, Array($0.1.utf8)) }))
                if index >= 40, (index - 40) % 75 == 0, badIndex < bad.count {
                    badAt[commands.count] = badIndex
                    commands.append(Self.xadd(bad[badIndex].fields))
                    badIndex += 1
                }
            }
            #expect(badIndex == bad.count)

            let redis = try await environment.redis()
            defer { redis.close() }
            var ids: [String] = []
            var start = 0
            while start < commands.count {
                for reply in try await redis.pipeline(Array(commands[start..<min(start + 100, commands.count)])) {
                    guard let id = reply.string else { throw Producer.ProducerError(reply: "\(reply)") }
                    ids.append(id)
                }
                start += 100
            }
            var sourceIDs: [String: Int] = [:]  // source entry ID → bad entry index
            for (command, index) in badAt { sourceIDs[ids[command]] = index }

            let startedAt = Date()
            let run = try await HistorianProcess.run(
                ["run", "--once"],
                environment: environment.historianEnvironment,
                timeout: .seconds(90)
            )
            #expect(run.status == 0, "\(run.errors.suffix(2000))")

            // Every good message stored; nothing from a bad entry (no stray conversation either).
            try await IngestTests.expectStored(good, in: environment)
            for index in integralScores {
                let contexts = try await environment.scalar(
                    "SELECT count(*) FROM message_contexts WHERE message_id = '\(good[index].id)'"
                )
                #expect(contexts == 1, "contexts \(good[index].contexts ?? "-") not stored")
            }
            #expect(try await environment.pendingCount() == 0)

            let letters = try await redis.send("XRANGE", "chat:messages:dlq", "-", "+").array ?? []
            #expect(letters.count == bad.count)
            var seen = Set<Int>()
            let dlqNames = ["dlq_reason", "dlq_detail", "dlq_source_stream", "dlq_source_id", "dlq_at"]
            for letter in letters {
                guard let parts = letter.array, parts.count == 2, let flat = parts[1].array else {
                    Issue.record("unexpected dead-letter shape: \(letter)")
                    continue
                }
                var fields: [(String, [UInt8])] = []
                var position = 0
                while position + 1 < flat.count {
                    fields.append((flat[position].string ?? "?", flat[position + 1].bytes ?? []))
                    position += 2
                }
                func value(_ name: String) -> String? {
                    fields.first { $0.0 == name }.flatMap { String(validating: $0.1, as: UTF8.self) }
                }
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
                let at = value("dlq_at").flatMap(Self.parseRFC3339)
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

    /// A crafted entry for every reason the stream can produce (`poison` needs redeliveries).
    static func badEntries(_ good: [TestMessage]) -> [BadEntry] {
        var number = 0
        func base(
            _ overrides: [(String, [UInt8]?)] = [],
            extra: [(String, [UInt8])] = []
        ) -> [(String, [UInt8])] {
            number += 1
            var fields: [(String, [UInt8])] = [
                ("message_id", Array(Producer.uuid(0x0B, number).utf8)),
                ("conversation_id", Array(Producer.uuid(0x0C, number).utf8)),
                ("user_id", Array("u-bad".utf8)),
                ("role", Array("user".utf8)),
                ("content", Array("bad entry \(number)".utf8)),
                ("session_id", Array("s-bad".utf8)),
            ]
            for (name, value) in overrides {
                if let index = fields.firstIndex(where: { $0.0 == name }) {
                    if let value { fields[index].1 = value } else { fields.remove(at: index) }
                } else if let value {
                    fields.append((name, value))
                }
            }
            return fields + extra
        }
        func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

        let original = good[5]
        let owned = good[6]
        return [
            BadEntry(reason: "missing_field", fields: base([("content", nil)])),
            BadEntry(reason: "invalid_uuid", fields: base([("message_id", bytes("not-a-uuid"))])),
            // Unknown fields are kept; a stale dlq_ field is not repeated.
            BadEntry(
                reason: "invalid_role",
                fields: base([("role", bytes("admin"))], extra: [("x_client", bytes("web")), ("dlq_reason", bytes("stale"))])
            ),
            BadEntry(reason: "invalid_utf8", fields: base([("content", [0x61, 0xC3, 0x28, 0x62])])),
            BadEntry(reason: "nul_byte", fields: base([("content", [0x61, 0x00, 0x62])])),
            BadEntry(reason: "too_large", fields: base([("content", [UInt8](repeating: 0x78, count: (1 << 20) + 1))])),
            BadEntry(reason: "invalid_json", fields: base([("metadata", bytes("[1,2,3]"))])),
            BadEntry(reason: "invalid_timestamp", fields: base([("created_at", bytes("2024-13-45 25:00"))])),
            BadEntry(reason: "invalid_number", fields: base([("tokens_used", bytes("-1"))])),
            BadEntry(
                reason: "conflict",
                fields: base([
                    ("message_id", bytes(original.id)), ("conversation_id", bytes(original.conversationID)),
                    ("user_id", bytes(original.userID)), ("role", bytes(original.role)),
                    ("content", bytes("a different content")),
                ])
            ),
            BadEntry(
                reason: "user_mismatch",
                fields: base([("conversation_id", bytes(owned.conversationID)), ("user_id", bytes("intruder"))])
            ),
            // A JSON object to any JSON parser (1e-100000 is just a tiny number), but beyond what
            // PostgreSQL's numeric, and so jsonb, accepts: the row is refused (SQLSTATE class 22).
            BadEntry(
                reason: "rejected_by_database",
                fields: base([("metadata", bytes(#"{"relevance":1e-100000}"#))])
            ),
        ]
    }

    // MARK: - Helpers

    static func chunks(_ messages: [TestMessage], of size: Int) -> [[TestMessage]] {
        stride(from: 0, to: messages.count, by: size).map { Array(messages[$0..<min($0 + size, messages.count)]) }
    }

    static func xadd(_ fields: [(String, [UInt8])], stream: String = "chat:messages") -> [RedisArgument] {
        ["XADD", RedisArgument(stream), "*"] + fields.flatMap { [RedisArgument($0.0), RedisArgument($0.1)] }
    }

    /// The group's state from `XINFO GROUPS`.
    struct GroupState {
        var pending: Int
        var entriesRead: Int?
        var lag: Int?
        var lastDelivered: String?
    }

    static func group(_ redis: RedisConnection, stream: String = "chat:messages", name: String = "historian")
        async throws -> GroupState?
    {
        guard let groups = try? await redis.send("XINFO", "GROUPS", RedisArgument(stream)).array else { return nil }
        for group in groups {
            let info = pairs(group)
            guard info["name"]?.string == name else { continue }
            return GroupState(
                pending: Int(info["pending"]?.int ?? -1),
                entriesRead: info["entries-read"]?.int.map(Int.init),
                lag: info["lag"]?.int.map(Int.init),
                lastDelivered: info["last-delivered-id"]?.string
            )
        }
        return nil
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
        try await IngestTests.expectStored(messages, in: environment)
        #expect(try await environment.pendingCount() == 0, sourceLocation: sourceLocation)
        #expect(try await deadLetterCount(redis) == 0, sourceLocation: sourceLocation)
        if let expected {
            #expect(try await acknowledged(redis) == expected, sourceLocation: sourceLocation)
        }
    }

    /// Entries the group has acknowledged: read minus pending.
    static func acknowledged(_ redis: RedisConnection) async throws -> Int {
        guard let group = try await group(redis), let read = group.entriesRead else { return 0 }
        return read - group.pending
    }

    static func deadLetterCount(_ redis: RedisConnection) async throws -> Int {
        Int(try await redis.send("XLEN", "chat:messages:dlq").int ?? -1)
    }

    /// `XINFO STREAM`: entries ever added, and the last ID generated.
    static func streamInfo(_ redis: RedisConnection, stream: String = "chat:messages") async throws
        -> (entriesAdded: Int, lastGenerated: String?)
    {
        let info = pairs(try await redis.send("XINFO", "STREAM", RedisArgument(stream)))
        return (Int(info["entries-added"]?.int ?? -1), info["last-generated-id"]?.string)
    }

    /// A flat `[key, value, …]` reply as a dictionary.
    static func pairs(_ reply: RESPValue) -> [String: RESPValue] {
        let flat = reply.array ?? []
        var info: [String: RESPValue] = [:]
        var index = 0
        while index + 1 < flat.count {
            if let key = flat[index].string { info[key] = flat[index + 1] }
            index += 2
        }
        return info
    }

    static func parseRFC3339(_ text: String) -> Date? {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let date = formatter.date(from: text) { return date }
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.date(from: text)
    }
}

/// The `historian` processes a test started; `killAll` SIGKILLs and reaps whatever still runs,
/// so that no process outlives its test, whatever failed.
final class Daemons: Sendable {
    private let processes = Mutex<[HistorianProcess]>([])

    func start(_ arguments: [String], _ environment: TestEnvironment) throws -> HistorianProcess {
        try start(arguments, variables: environment.historianEnvironment)
    }

    /// Starts `historian` with exactly these environment variables.
    func start(_ arguments: [String], variables: [String: String]) throws -> HistorianProcess {
        let process = try HistorianProcess(arguments, environment: variables)
        processes.withLock { $0.append(process) }
        return process
    }

    func killAll() {
        for process in processes.withLock({ $0 }) {
            process.signal(SIGKILL)
            var tries = 0
            while process.isRunning, tries < 500 {
                usleep(10_000)
                tries += 1
            }
        }
    }

    /// Runs `body` with a fresh set of processes. If it throws, prints the end of each one's
    /// standard error to explain the failure; either way, kills whatever still runs.
    static func with<T>(_ body: (Daemons) async throws -> T) async throws -> T {
        let daemons = Daemons()
        defer { daemons.killAll() }
        do {
            return try await body(daemons)
        } catch {
            daemons.printErrors()
            throw error
        }
    }

    /// Prints the end of each process's standard error, to explain a failure.
    private func printErrors() {
        for process in processes.withLock({ $0 }) {
            let errors = process.errorOutput
            guard !errors.isEmpty else { continue }
            print("--- historian \(process.arguments.joined(separator: " ")) (stderr, last 3000 bytes):")
            print(String(errors.suffix(3000)))
        }
    }
}
