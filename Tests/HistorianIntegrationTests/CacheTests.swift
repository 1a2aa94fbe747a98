import Foundation
@testable import Historian
import RedisClient
import Testing

/// The recent-history cache and sessions in Redis (contract §3), against real servers.
@Suite(.serialized)
struct CacheTests {
    /// The latest `size` messages of each conversation as PostgreSQL orders them, oldest first,
    /// as parsed JSON objects in the contract's element shape.
    @Test("20,000 messages, 300 conversations, 3 workers, a third late: every recent list equals PostgreSQL's latest")
    func recentListsMatchPostgres() async throws {
        try await TestEnvironment.with { environment in
            var messages = Producer.workload(count: 20_000, conversations: 300, seed: 10)
            // created_at in a shuffled order: about a third of the messages come after ones
            // that are newer than they are.
            let base = Timestamp(rfc3339: "2026-01-01T00:00:00Z")!.microseconds
            var times = (0..<messages.count).map { base + Int64($0) * 1000 }
            for index in stride(from: 0, to: times.count - 3, by: 3) { times.swapAt(index, index + 2) }
            for index in messages.indices {
                messages[index].createdAt = Timestamp(microseconds: times[index]).rfc3339
            }
            let redis = try await environment.redis()
            defer { redis.close() }
            try await Producer.append(messages, redis: redis)
            let run = try await HistorianProcess.run(
                ["run", "--once", "--workers", "3", "--batch-size", "200"],
                environment: environment.historianEnvironment,
                timeout: .seconds(300)
            )
            #expect(run.status == 0, "\(run.errors)")
            #expect(try await environment.scalar("SELECT count(*) FROM messages") == messages.count)

            let expected = try await expectedRecentLists(environment)
            #expect(expected.count == 300)
            var wrong: [String] = []
            for (conversation, list) in expected {
                let cached = try await cachedRecentList(redis, conversation)
                if cached != list { wrong.append(conversation) }
            }
            #expect(wrong.isEmpty, "\(wrong.count) recent lists differ from PostgreSQL, e.g. \(wrong.prefix(3))")
        }
    }

    @Test("version keys hold the list's last created_at; bare versions written by older releases still work")
    func versionKeyFormats() async throws {
        try await TestEnvironment.with { environment in
            let messages = Producer.workload(count: 1_200, conversations: 40, seed: 31)
            let redis = try await environment.redis()
            defer { redis.close() }
            try await Producer.append(Array(messages[..<600]), redis: redis)
            var run = try await HistorianProcess.run(["run", "--once"], environment: environment.historianEnvironment)
            #expect(run.status == 0, "\(run.errors)")
            var expected = try await expectedRecentLists(environment)
            var checked = 0
            for (conversation, list) in expected {
                let key = RedisArgument("history:\(conversation):recent:version")
                let stored = try await redis.send("GET", key).string ?? ""
                let parts = stored.split(separator: " ")
                #expect(parts.count == 2 && Int(parts[0]) != nil, "version key \(stored)")
                #expect(parts.last.map(String.init) == list.last?["created_at"] as? String)
                // Rewrite it as an older release would have left it: the bare version.
                let ttl = try await redis.send("PTTL", key).int ?? -1
                _ = try await redis.send("SET", key, RedisArgument(String(parts[0])), "PX", RedisArgument(Int(ttl)))
                checked += 1
            }
            #expect(checked == 40)
            try await Producer.append(Array(messages[600...]), redis: redis)
            run = try await HistorianProcess.run(["run", "--once"], environment: environment.historianEnvironment)
            #expect(run.status == 0, "\(run.errors)")
            expected = try await expectedRecentLists(environment)
            var wrong: [String] = []
            for (conversation, list) in expected where try await cachedRecentList(redis, conversation) != list {
                wrong.append(conversation)
            }
            #expect(wrong.isEmpty, "\(wrong.count) recent lists differ from PostgreSQL, e.g. \(wrong.prefix(3))")
        }
    }

    @Test("two processes on the same 5 conversations: no recent list ever goes back to an older view")
    func recentListsNeverGoBackwards() async throws {
        try await TestEnvironment.with { environment in
            let conversations = (0..<5).map { Producer.uuid(0x0c, $0) }
            let redis = try await environment.redis()
            defer { redis.close() }
            try await environment.migrate()
            let processes = try ["a", "b"].map {
                try HistorianProcess(
                    ["run", "--workers", "2", "--consumer", $0, "--batch-size", "20", "--batch-linger", "0s"],
                    environment: environment.historianEnvironment
                )
            }
            defer { for process in processes { process.signal(SIGKILL) } }

            // Produce in the background; sample continuously meanwhile.
            let total = 6_000
            let producer = Task {
                let producerRedis = try await environment.redis()
                defer { producerRedis.close() }
                let base = Timestamp(rfc3339: "2026-01-01T00:00:00Z")!.microseconds
                for chunk in stride(from: 0, to: total, by: 200) {
                    let batch = (chunk..<(chunk + 200)).map { index in
                        TestMessage(
                            id: Producer.uuid(0x0d, index),
                            conversationID: conversations[index % 5],
                            userID: "u-1",
                            role: index % 2 == 0 ? "user" : "assistant",
                            content: "message \(index)",
                            createdAt: Timestamp(microseconds: base + Int64(index)).rfc3339
                        )
                    }
                    try await Producer.append(batch, redis: producerRedis)
                    try await Task.sleep(for: .milliseconds(20))
                }
            }
            // The newest created_at seen per conversation, and the elements seen at that time.
            var newest: [String: String] = [:]
            var seen: [String: Set<String>] = [:]
            var samples = 0
            var regressions: [String] = []
            var done = false
            let deadline = ContinuousClock.now + .seconds(120)
            while !done {
                guard ContinuousClock.now < deadline else {
                    producer.cancel()
                    throw TimedOut(what: "all \(total) messages stored while the recent lists were sampled")
                }
                done = try await environment.scalar("SELECT count(*) FROM messages") == total
                for conversation in conversations {
                    let list = try await cachedRecentList(redis, conversation)
                    guard let last = list.last?["created_at"] as? String else { continue }
                    samples += 1
                    let ids = Set(list.compactMap { $0["id"] as? String })
                    if let previous = newest[conversation] {
                        if last < previous {
                            regressions.append("\(conversation): newest \(last) after \(previous)")
                        }
                        // Whatever was in the previous view and is still among the latest ten
                        // must still be there.
                        let oldestNow = list.first?["created_at"] as? String ?? ""
                        let dropped = seen[conversation]!.subtracting(ids)
                        let wrongDrops = dropped.filter { id in
                            // Dropped elements must be older than the list's oldest element now.
                            guard let index = Int(id.suffix(12), radix: 16) else { return true }
                            let at = Timestamp(microseconds: Timestamp(rfc3339: "2026-01-01T00:00:00Z")!.microseconds + Int64(index)).rfc3339
                            return at >= oldestNow
                        }
                        if !wrongDrops.isEmpty { regressions.append("\(conversation): lost \(wrongDrops.count) newer elements") }
                    }
                    newest[conversation] = max(newest[conversation] ?? "", last)
                    seen[conversation] = ids
                }
            }
            try await producer.value
            try await eventually("all acknowledged") { try await environment.pendingCount() == 0 }
            #expect(regressions.isEmpty, "\(regressions.prefix(5))")
            #expect(samples > 50, "sampled only \(samples) times")
            let expected = try await expectedRecentLists(environment)
            for conversation in conversations {
                #expect(try await cachedRecentList(redis, conversation) == expected[conversation] ?? [])
            }
        }
    }

    @Test("every key Historian writes has a TTL, activity refreshes it, idle keys vanish")
    func everyKeyHasATTL() async throws {
        try await TestEnvironment.with { environment in
            var variables = environment.historianEnvironment
            // Long enough that no key can expire before it is looked at, however slowly the
            // first run starts and exits on a loaded machine (3 s was not, in CI); short
            // enough to wait for the expiry below.
            variables["HISTORIAN_SESSION_TTL"] = "10s"
            let redis = try await environment.redis()
            defer { redis.close() }
            let messages = Producer.workload(count: 300, conversations: 30, seed: 11)
            try await Producer.append(messages, redis: redis)
            let first = try await HistorianProcess.run(["run", "--once"], environment: variables)
            #expect(first.status == 0, "\(first.errors)")

            let streams: Set<String> = ["chat:messages", "chat:messages:dlq"]
            let keys = try await redis.send("KEYS", "*").array?.compactMap(\.string) ?? []
            let written = keys.filter { !streams.contains($0) }
            #expect(written.contains { $0.hasPrefix("history:") } && written.contains { $0.hasPrefix("session:") })
            #expect(written.contains { $0.hasPrefix("user:") })
            for key in written {
                let ttl = try await redis.send("PTTL", RedisArgument(key)).int ?? -1
                #expect(ttl > 0 && ttl <= 10_000, "\(key) has TTL \(ttl)")
            }

            // Activity in one conversation refreshes its keys; the rest expire. Deadlines are
            // read with PEXPIRETIME, Redis's own clock, so how long a process takes to start
            // or exit on a loaded machine does not matter: a refresh at least 2 s after the
            // first run moves the deadline at least 2 s on.
            let active = messages[0]
            let activeKeys = ["history:\(active.conversationID):recent", "session:\(active.sessionID!)"]
            let idleKey = "history:\(messages[1].conversationID):recent"
            var deadlines: [String: Int64] = [:]
            for key in activeKeys {
                deadlines[key] = try await redis.send("PEXPIRETIME", RedisArgument(key)).int ?? -1
                #expect(deadlines[key]! > 0, "\(key) has no deadline after the first run")
            }
            try await Task.sleep(for: .seconds(2))
            var next = active
            next.id = Producer.uuid(0x0e, 1)
            next.content = "still here"
            try await Producer.append([next], redis: redis)
            let second = try await HistorianProcess.run(["run", "--once"], environment: variables)
            #expect(second.status == 0)
            for key in activeKeys {
                let deadline = try await redis.send("PEXPIRETIME", RedisArgument(key)).int ?? -1
                #expect(deadline - deadlines[key]! >= 2000, "\(key): deadline \(deadlines[key]!) → \(deadline)")
            }
            try await eventually("the idle conversation's list to expire", timeout: .seconds(30)) {
                try await redis.send("EXISTS", RedisArgument(idleKey)).int == 0
            }
            try await eventually("every key to expire", timeout: .seconds(30)) {
                try await redis.send("KEYS", "*").array?.compactMap(\.string).allSatisfy(streams.contains) ?? false
            }

            // A conversation whose list expired is rebuilt from PostgreSQL on its next message.
            var late = messages[1]
            late.id = Producer.uuid(0x0e, 2)
            try await Producer.append([late], redis: redis)
            let third = try await HistorianProcess.run(["run", "--once"], environment: variables)
            #expect(third.status == 0)
            let expected = try await expectedRecentLists(environment)
            #expect(try await cachedRecentList(redis, late.conversationID) == expected[late.conversationID])
            #expect(try await cachedRecentList(redis, late.conversationID).count == 10)
        }
    }

    @Test("session hashes and users' session sets after a multi-session load")
    func sessions() async throws {
        try await TestEnvironment.with { environment in
            let redis = try await environment.redis()
            defer { redis.close() }
            let base = Timestamp(rfc3339: "2026-03-01T12:00:00Z")!.microseconds
            var messages: [TestMessage] = []
            for index in 0..<600 {
                let user = index % 4
                let session = "s-\(user)-\(index % 3)"
                var message = TestMessage(
                    id: Producer.uuid(0x0f, index),
                    conversationID: Producer.uuid(0x10, user * 10 + index % 3),
                    userID: "user-\(user)",
                    role: "user",
                    content: "hello \(index)",
                    createdAt: Timestamp(microseconds: base + Int64(index) * 1_000_000).rfc3339,
                    sessionID: session
                )
                message.metadata = nil
                messages.append(message)
            }
            // Arrival order differs from time order.
            try await Producer.append(messages.shuffled(), redis: redis)
            let run = try await HistorianProcess.run(["run", "--once", "--workers", "2", "--batch-size", "50"], environment: environment.historianEnvironment)
            #expect(run.status == 0, "\(run.errors)")
            for user in 0..<4 {
                let members = try await redis.send("SMEMBERS", RedisArgument("user:user-\(user):sessions")).array?.compactMap(\.string) ?? []
                #expect(Set(members) == Set((0..<3).map { "s-\(user)-\($0)" }))
                for slot in 0..<3 {
                    let session = "s-\(user)-\(slot)"
                    let ofSession = messages.filter { $0.sessionID == session }
                    let fields = replyPairs(try await redis.send("HGETALL", RedisArgument("session:\(session)")))
                        .compactMapValues(\.string)
                    let latest = ofSession.max { $0.createdAt! < $1.createdAt! }!
                    #expect(fields["user_id"] == "user-\(user)")
                    #expect(fields["created_at"] == ofSession.map { $0.createdAt! }.min())
                    #expect(fields["last_active"] == latest.createdAt)
                    #expect(fields["conversation_id"] == latest.conversationID)
                    #expect(fields["dept_id"] == "")
                }
            }
        }
    }

    @Test("the script applies a conversation's next version only; an applied or skipped one changes nothing but TTLs")
    func versionRules() async throws {
        try await TestEnvironment.with { environment in
            let redis = try await environment.redis()
            defer { redis.close() }
            let settings = CacheSettings(recentSize: 3, sessionTTL: .seconds(60))
            let conversation = "0b0e5a52-4a8c-4f0e-9a57-2f5d0c0c0001"
            let list = RedisArgument(settings.recentKey(conversation))
            let versionKey = RedisArgument(settings.versionKey(conversation))
            /// An element as PostgreSQL renders it, created at second `second` (tenths allowed).
            func element(_ second: Double) -> String {
                let at = String(format: "2026-01-01T00:00:%02d.%06dZ", Int(second), Int((second - second.rounded(.down)) * 1_000_000))
                return #"{"id" : "m\#(second)", "created_at" : "\#(at)", "content" : "x"}"#
            }
            func at(_ second: Double) -> String { String(element(second).split(separator: "\"")[7]) }
            func apply(_ mode: CacheWrite.Mode, _ version: Int64, _ seconds: [Double]) async throws -> [String] {
                let write = CacheWrite(mode: mode, conversationID: conversation, version: version, elements: seconds.map(element))
                return try await RecentCache.apply([write], sessions: [], settings: settings, redis: redis).stale
            }
            func state() async throws -> (list: [String], version: String?) {
                let elements = try await redis.send("LRANGE", list, "0", "-1").array?.compactMap(\.string) ?? []
                return (elements, try await redis.send("GET", versionKey).string)
            }
            func expectTTLs(_ comment: Comment) async throws {
                for key in [list, versionKey] {
                    let ttl = try await redis.send("PTTL", key).int ?? -3
                    #expect(ttl > 50_000, comment)
                }
            }

            #expect(try await apply(.delta, 1, [1]).isEmpty)
            #expect(try await state() == ([element(1)], "1 \(at(1))"))
            #expect(try await apply(.delta, 2, [2, 3]).isEmpty)
            #expect(try await state() == ([element(1), element(2), element(3)], "2 \(at(3))"))

            // Applied already (a redelivery): nothing changes but the TTLs.
            _ = try await redis.send("PEXPIRE", list, "20000")
            _ = try await redis.send("PEXPIRE", versionKey, "20000")
            #expect(try await apply(.delta, 2, [2, 3]).isEmpty)
            #expect(try await state() == ([element(1), element(2), element(3)], "2 \(at(3))"))
            try await expectTTLs("an applied delta renews the TTLs")

            // A skipped version: stale, and the list and version stay as they were.
            #expect(try await apply(.delta, 4, [5]) == [conversation])
            #expect(try await state() == ([element(1), element(2), element(3)], "2 \(at(3))"))
            try await expectTTLs("a stale delta leaves both keys alive for the snapshot")

            // In order: appended and trimmed to the size.
            #expect(try await apply(.delta, 3, [4]).isEmpty)
            #expect(try await state() == ([element(2), element(3), element(4)], "3 \(at(4))"))

            // Older than the list's last element: merged by created_at; the version key keeps
            // the real last element's time, not the written element's.
            #expect(try await apply(.delta, 4, [3.5]).isEmpty)
            #expect(try await state() == ([element(3), element(3.5), element(4)], "4 \(at(4))"))

            // Snapshots replace anything older and nothing newer.
            #expect(try await apply(.snapshot, 9, [7, 8]).isEmpty)
            #expect(try await state() == ([element(7), element(8)], "9 \(at(8))"))
            #expect(try await apply(.snapshot, 5, [4]).isEmpty)
            #expect(try await state() == ([element(7), element(8)], "9 \(at(8))"))

            // No version key (evicted) and a delta past version 1: stale, and the key stays absent.
            _ = try await redis.send("DEL", versionKey)
            #expect(try await apply(.delta, 10, [9]) == [conversation])
            #expect(try await state() == ([element(7), element(8)], nil))
        }
    }

    @Test("a batch's cache work in several calls: the entries are acknowledged by the last one, only if no list was behind")
    func severalCallsAcknowledgeLast() async throws {
        try await TestEnvironment.with { environment in
            let redis = try await environment.redis()
            defer { redis.close() }
            let settings = CacheSettings(recentSize: 5, sessionTTL: .seconds(60))
            let stream = IngestStream(stream: "chat:messages", group: "historian", dlqStream: "chat:messages:dlq")
            try await stream.ensureGroup(redis)
            let ids = try await Producer.append(Producer.workload(count: 6, conversations: 6, seed: 31), redis: redis)
            let delivery = try await stream.read(redis, consumer: "c", from: .new, count: 10, block: nil)
            #expect(delivery.count == 6)
            func pending() async throws -> Int {
                Int(try await redis.send("XPENDING", "chat:messages", "historian").array?.first?.int ?? -1)
            }
            func scriptCalls() async throws -> Int {
                try await commandCalls(redis).filter { $0.key.hasPrefix("eval") }.values.reduce(0, +)
            }
            let acknowledge = RecentCache.Acknowledge(stream: "chat:messages", group: "historian", ids: delivery.ids)
            func write(_ index: Int, version: Int64) -> CacheWrite {
                CacheWrite(
                    mode: .delta,
                    conversationID: "conversation-\(index)",
                    version: version,
                    elements: [#"{"id" : "m\#(index)", "created_at" : "2026-01-01T00:00:0\#(index).000000Z"}"#]
                )
            }

            // The first of three calls finds a list behind (a delta past version 1 with no
            // version key): the later calls still apply, but nothing is acknowledged.
            _ = try await redis.send("SCRIPT", "LOAD", RedisArgument(RecentCache.script))
            _ = try await redis.send("CONFIG", "RESETSTAT")
            let behind = try await RecentCache.apply(
                [write(0, version: 5), write(1, version: 1), write(2, version: 1), write(3, version: 1)],
                sessions: [],
                acknowledge: acknowledge,
                settings: settings,
                redis: redis,
                workPerCall: 2
            )
            #expect(behind.stale == ["conversation-0"])
            #expect(!behind.acknowledged)
            #expect(try await pending() == ids.count)
            #expect(try await scriptCalls() == 2)
            for index in 1...3 {
                #expect(try await redis.send("LLEN", RedisArgument(settings.recentKey("conversation-\(index)"))).int == 1)
            }

            // Nothing behind: the last call acknowledges every entry.
            let fresh = try await RecentCache.apply(
                [write(0, version: 1), write(4, version: 1), write(5, version: 1)],
                sessions: [],
                acknowledge: acknowledge,
                settings: settings,
                redis: redis,
                workPerCall: 1
            )
            #expect(fresh.stale.isEmpty)
            #expect(fresh.acknowledged)
            #expect(try await pending() == 0)
        }
    }

    @Test("the cache script's EVALSHA name is the digest Redis gives it")
    func scriptName() async throws {
        try await TestEnvironment.with { environment in
            let redis = try await environment.redis()
            defer { redis.close() }
            let loaded = try await redis.send("SCRIPT", "LOAD", RedisArgument(RecentCache.script))
            #expect(loaded.string == RecentCache.scriptSHA1)
            #expect(RecentCache.scriptSHA1.count == 40)
        }
    }

    @Test("cache work is a constant number of Redis calls per batch, not per message")
    func roundTripsPerBatch() async throws {
        try await TestEnvironment.with { environment in
            let redis = try await environment.redis()
            defer { redis.close() }
            try await environment.migrate()
            for (messagesCount, conversations) in [(2_000, 2_000), (2_000, 20)] {
                _ = try await redis.send("FLUSHALL")
                _ = try await environment.rows("TRUNCATE conversations CASCADE")
                let messages = Producer.workload(count: messagesCount, conversations: conversations, seed: 12 + conversations)
                try await Producer.append(messages, redis: redis)
                _ = try await redis.send("CONFIG", "RESETSTAT")
                let run = try await HistorianProcess.run(
                    ["run", "--once", "--batch-size", "250"],
                    environment: environment.historianEnvironment
                )
                #expect(run.status == 0, "\(run.errors)")
                let counted = try await commandCalls(redis)
                let batches = counted["xack"] ?? 0
                // Script calls: the cache's EVALSHA per batch, one EVAL when the script is first
                // loaded, and the stream upkeep's gap check (an EVAL before and after a --once run).
                let cacheCalls = (counted["evalsha"] ?? 0) + (counted["eval"] ?? 0) - 2
                print("cache: \(messagesCount) messages in \(conversations) conversations: \(batches) batches, \(cacheCalls) cache calls")
                #expect(batches >= messagesCount / 250)
                // A batch of 250 and its sessions are two script calls at most (RecentCache.workPerCall),
                // plus at most one NOSCRIPT fallback per worker (each has its own connection, and
                // both workers' first calls may find the script not loaded yet).
                let workers = 2
                #expect(cacheCalls <= 2 * batches + workers)
                #expect(cacheCalls * 50 < messagesCount)
            }
        }
    }
}
