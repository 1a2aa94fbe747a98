import Foundation
@testable import Historian
import Logging
import RedisClient
import Testing

/// Dead consumers, poison, trimming, gaps and memory under a backlog, against real servers.
@Suite(.serialized)
struct StreamUpkeepTests {
    /// Appends `count` valid messages server-side (a Lua loop), for backlogs too big to send
    /// from the test quickly.
    static func appendInRedis(_ redis: RedisConnection, count: Int, conversations: Int, stream: String = "chat:messages", maxlen: Int? = nil) async throws {
        let script = """
            local conversations = tonumber(ARGV[2])
            local body = string.rep('x', 250)
            for i = 1, tonumber(ARGV[1]) do
              local c = i % conversations
              local args = {KEYS[1]}
              if ARGV[3] ~= '' then
                args[#args + 1] = 'MAXLEN'
                args[#args + 1] = ARGV[3]
              end
              args[#args + 1] = '*'
              for _, v in ipairs({'message_id', string.format('01931100-0000-7000-8000-%012x', i),
                  'conversation_id', string.format('01931200-0000-7000-8000-%012x', c),
                  'user_id', 'u-' .. c, 'role', 'user', 'content', 'message ' .. i .. ' ' .. body}) do
                args[#args + 1] = v
              end
              redis.call('XADD', unpack(args))
            end
            return 0
            """
        var start = 0
        while start < count {
            let chunk = min(50_000, count - start)
            _ = try await redis.send(
                ["EVAL", RedisArgument(script), "1", RedisArgument(stream), RedisArgument(chunk), RedisArgument(conversations),
                 RedisArgument(maxlen.map(String.init) ?? "")],
                timeout: .seconds(120)
            )
            start += chunk
        }
    }

    /// Upkeep of `chat:messages` for group `historian`, called directly.
    static func maintenance() -> StreamMaintenance {
        StreamMaintenance(
            stream: IngestStream(stream: "chat:messages", group: "historian", dlqStream: "chat:messages:dlq"),
            ownConsumers: [],
            forgetConsumersAfter: .seconds(3600),
            logger: Logger(label: "test")
        )
    }

    @Test("entries pending with a dead consumer are claimed and stored; one delivered too often is poison")
    func deadConsumersAndPoison() async throws {
        try await TestEnvironment.with { environment in
            let redis = try await environment.redis()
            defer { redis.close() }
            _ = try await redis.send("XGROUP", "CREATE", "chat:messages", "historian", "0", "MKSTREAM")
            let orphans = Producer.workload(count: 50, conversations: 5, seed: 20)
            let poisoned = Producer.workload(count: 1, conversations: 1, seed: 21)
            let orphanIDs = try await Producer.append(orphans, redis: redis)
            let poisonIDs = try await Producer.append(poisoned, redis: redis)
            // A consumer takes everything and dies; the poisoned entry has been handed out ten
            // times already (say it crashed every consumer that touched it).
            _ = try await redis.send("XREADGROUP", "GROUP", "historian", "ghost", "COUNT", "100", "STREAMS", "chat:messages", ">")
            for _ in 0..<9 {
                _ = try await redis.send("XCLAIM", "chat:messages", "historian", "ghost", "0", RedisArgument(poisonIDs[0]))
            }

            let process = try HistorianProcess(["run", "--claim-idle", "1s"], environment: environment.historianEnvironment)
            defer { process.signal(SIGKILL) }
            try await eventually("the orphans stored and nothing pending", timeout: .seconds(60)) {
                let stored = try await environment.scalar("SELECT count(*) FROM messages")
                let pending = try await environment.pendingCount()
                return stored == orphans.count && pending == 0
            }
            process.signal(SIGTERM)
            #expect(try await process.wait(timeout: .seconds(20)) == 0)

            try await expectStored(orphans, in: environment)
            let letters = try await streamRecords(redis, "chat:messages:dlq")
            #expect(letters.count == 1)
            let fields = letters.first?.strings ?? [:]
            #expect(fields["dlq_reason"] == "poison")
            #expect(fields["dlq_source_id"] == poisonIDs[0])
            #expect(fields["message_id"] == poisoned[0].id)
            #expect(!orphanIDs.contains(fields["dlq_source_id"] ?? ""))
        }
    }

    @Test("trimming never drops what another group still needs, and does trim what all acknowledged")
    func safeTrimming() async throws {
        try await TestEnvironment.with { environment in
            let redis = try await environment.redis()
            defer { redis.close() }
            try await Self.appendInRedis(redis, count: 5_000, conversations: 50)
            // A second, slower group: it has read 2,000 entries and acknowledged 1,000 of them.
            _ = try await redis.send("XGROUP", "CREATE", "chat:messages", "laggard", "0")
            let read = try await redis.send("XREADGROUP", "GROUP", "laggard", "l1", "COUNT", "2000", "STREAMS", "chat:messages", ">")
            let readIDs = (read.array?.first?.array?[1].array ?? []).compactMap { $0.array?.first?.string }
            #expect(readIDs.count == 2_000)
            _ = try await redis.send(["XACK", "chat:messages", "laggard"] + readIDs.prefix(1_000).map { RedisArgument($0) })
            let needed = Array(readIDs.dropFirst(1_000))

            let process = try HistorianProcess(["run"], environment: environment.historianEnvironment)
            defer { process.signal(SIGKILL) }
            // The waits are long for a 5 s upkeep period: a CI run on a loaded machine once took
            // 98 s to store the 5,000 entries and then over 30 s to trim.
            try await eventually("all stored", timeout: .seconds(240)) {
                try await environment.scalar("SELECT count(*) FROM messages") == 5_000
            }
            // Upkeep (every 5 s) trims the 1,000 entries both groups acknowledged; then one more
            // pass, which must not trim further. Every pass makes at least one XTRIM.
            try await eventually("the entries both groups acknowledged trimmed", timeout: .seconds(90)) {
                try await redis.send("XLEN", "chat:messages").int ?? 0 < 5_000 - 500
            }
            let trims = try await commandCalls(redis)["xtrim"] ?? 0
            try await eventually("another upkeep pass", timeout: .seconds(90)) {
                try await commandCalls(redis)["xtrim"] ?? 0 > trims
            }
            let remaining = try await redis.send("XRANGE", "chat:messages", RedisArgument(needed[0]), "+").array?.count ?? 0
            #expect(remaining == 5_000 - 1_000, "entries the laggard still needs were trimmed")

            // Once the laggard has acknowledged everything, the stream shrinks to almost nothing.
            let rest = try await redis.send("XREADGROUP", "GROUP", "laggard", "l1", "COUNT", "10000", "STREAMS", "chat:messages", ">")
            let restIDs = (rest.array?.first?.array?[1].array ?? []).compactMap { $0.array?.first?.string }
            _ = try await redis.send(["XACK", "chat:messages", "laggard"] + (needed + restIDs).map { RedisArgument($0) })
            try await eventually("the stream trimmed", timeout: .seconds(90)) {
                (try await redis.send("XLEN", "chat:messages").int ?? 0) < 200
            }
            process.signal(SIGTERM)
            #expect(try await process.wait(timeout: .seconds(20)) == 0)
        }
    }

    @Test("one upkeep pass trims all that every group acknowledged, however much: an XTRIM ~ stops after 10,000")
    func trimsABigBacklogInOnePass() async throws {
        try await TestEnvironment.with { environment in
            let redis = try await environment.redis()
            defer { redis.close() }
            try await Self.appendInRedis(redis, count: 35_000, conversations: 50)
            // A group created at the end of the stream has read and acknowledged everything in it.
            _ = try await redis.send("XGROUP", "CREATE", "chat:messages", "historian", "$")
            let maintenance = Self.maintenance()
            try await maintenance.trim(redis, groups: try await StreamMaintenance.groups(redis, stream: "chat:messages"))
            let length = try #require(try await redis.send("XLEN", "chat:messages").int)
            // Approximate trimming removes whole nodes of up to 100 entries.
            #expect(length < 200, "\(length) of 35,000 entries left after one pass")
        }
    }

    /// fuzz/regressions/entry/entry-id-after-year-9999: such an entry without `created_at` made
    /// the daemon trap at every delivery; and the trim computed the successor of the last
    /// possible ID, which has none.
    @Test("an entry ID after the year 9999 without created_at is an invalid_timestamp dead letter; the last possible ID is trimmed around")
    func entryIDsAfterTheYear9999() async throws {
        try await TestEnvironment.with { environment in
            let redis = try await environment.redis()
            defer { redis.close() }
            _ = try await redis.send("XGROUP", "CREATE", "chat:messages", "historian", "0", "MKSTREAM")
            let messages = Producer.workload(count: 20, conversations: 2, seed: 40)
            try await Producer.append(messages, redis: redis)
            var late = Producer.workload(count: 1, conversations: 1, seed: 41)[0]
            late.createdAt = nil
            let lastID = "18446744073709551615-18446744073709551615"
            _ = try await Producer.send(
                [["XADD", "chat:messages", RedisArgument(lastID)] + late.fields.flatMap { [RedisArgument($0.0), RedisArgument($0.1)] }],
                redis: redis
            )

            let run = try await HistorianProcess.run(["run", "--once"], environment: environment.historianEnvironment)
            #expect(run.status == 0, "\(run.errors)")
            try await expectStored(messages, in: environment)
            let letters = try await streamRecords(redis, "chat:messages:dlq")
            #expect(letters.count == 1)
            #expect(letters.first?.strings["dlq_reason"] == "invalid_timestamp")
            #expect(letters.first?.strings["dlq_source_id"] == lastID)
            #expect(try await environment.pendingCount() == 0)

            // The group has delivered the last possible ID: the trim keeps it and what follows
            // it (nothing can).
            let maintenance = Self.maintenance()
            try await maintenance.trim(redis, groups: try await StreamMaintenance.groups(redis, stream: "chat:messages"))
            #expect(try await streamRecords(redis, "chat:messages", from: lastID).count == 1)
        }
    }

    @Test("entries trimmed by a producer's MAXLEN before delivery are reported")
    func trimmedBeforeDelivery() async throws {
        try await TestEnvironment.with { environment in
            let redis = try await environment.redis()
            defer { redis.close() }
            try await Self.appendInRedis(redis, count: 100, conversations: 10)
            let first = try await HistorianProcess.run(["run", "--once"], environment: environment.historianEnvironment)
            #expect(first.status == 0)
            #expect(!first.errors.contains("before this group read them"))
            // While no one reads, a producer appends 1,000 more with MAXLEN 100: 900 never reach us.
            try await Self.appendInRedis(redis, count: 1_000, conversations: 10, maxlen: 100)
            let second = try await HistorianProcess.run(["run", "--once"], environment: environment.historianEnvironment)
            #expect(second.status == 0)
            #expect(second.errors.contains("entries were deleted from the stream before this group read them"))
            #expect(second.errors.contains("gap.entries=900"))
            // The hundred that survived are stored.
            #expect(try await environment.pendingCount() == 0)
            #expect(try await environment.scalar("SELECT count(*) FROM messages") == 200)
        }
    }

    @Test("memory stays bounded while 500,000 entries wait and PostgreSQL is down")
    func boundedMemoryDuringOutage() async throws {
        try await TestEnvironment.with { environment in
            try await environment.migrate()
            let redis = try await environment.redis()
            defer { redis.close() }
            let process = try HistorianProcess(["run", "--workers", "2"], environment: environment.historianEnvironment)
            defer { process.signal(SIGKILL) }
            try await eventually("the daemon ready", timeout: .seconds(30)) { try await environment.pendingCount() == 0 }
            try await environment.postgresServer.stop(immediate: true)
            try await Self.appendInRedis(redis, count: 500_000, conversations: 1_000)

            try await eventually("the workers holding entries", timeout: .seconds(30)) {
                try await environment.pendingCount() > 0
            }
            // The outage goes on while the workers retry: memory must not grow with the backlog.
            try await Task.sleep(for: .seconds(15))
            // The kernel's high-water mark over the daemon's whole life, read while it still runs.
            let peak = try #require(
                process.child.peakResidentBytes,
                "the daemon exited during the outage: \(process.errorOutput.suffix(500))"
            )
            let pending = try await environment.pendingCount()
            print("memory: peak RSS \(peak >> 20) MiB with 500,000 entries waiting, PostgreSQL down, \(pending) pending")
            // Two workers hold at most one batch each; the rest stays in Redis.
            #expect(pending <= 2 * 500)
            #expect(peak < Self.memoryBound, "peak RSS \(peak) bytes")
            #expect(try await deadLetterCount(redis) == 0)

            try await environment.postgresServer.start()
            process.signal(SIGTERM)
            #expect(try await process.wait(timeout: .seconds(30)) == 0)
        }
    }

    /// The bound the memory test holds the daemon to: 64 MiB, for a debug build whose code and
    /// runtime alone take about 30 MiB (measured peak: 37 MiB).
    static let memoryBound = 64 << 20
}
