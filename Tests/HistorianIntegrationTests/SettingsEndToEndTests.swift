import Foundation
import Historian
import RedisClient
import Testing

/// Non-default settings, end to end through the real binary, each given once as a flag
/// (`--stream X`), once in the environment (`HISTORIAN_STREAM`) and once in a `--config` file
/// (contract §5): what they name in Redis and PostgreSQL is what the daemon uses.
struct SettingsEndToEndTests {
    /// How a setting reaches `historian`.
    enum Way: String, CaseIterable, Sendable, CustomTestStringConvertible {
        case flag, environment, file
        var testDescription: String {
            switch self {
            case .flag: "by flag"
            case .environment: "by environment"
            case .file: "by --config file"
            }
        }
    }

    typealias Settings = [(String, String)]

    /// Config files a test wrote, removed at its end.
    final class ConfigFiles {
        private(set) var paths: [String] = []
        func add(_ text: String) throws -> String {
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("historian-config-\(UUID().uuidString).yaml").path
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            paths.append(path)
            return path
        }
        deinit { for path in paths { try? FileManager.default.removeItem(atPath: path) } }
    }

    /// `command` with `settings` given `way`, against `environment`'s servers.
    static func invocation(
        _ command: [String],
        _ settings: Settings,
        way: Way,
        in environment: TestEnvironment,
        files: ConfigFiles
    ) throws -> (arguments: [String], variables: [String: String]) {
        var arguments = command
        var variables = environment.historianEnvironment
        switch way {
        case .flag:
            for (key, value) in settings { arguments += ["--" + key.replacingOccurrences(of: "_", with: "-"), value] }
        case .environment:
            for (key, value) in settings { variables["HISTORIAN_" + key.uppercased()] = value }
        case .file:
            arguments += ["--config", try files.add(yaml(settings))]
        }
        return (arguments, variables)
    }

    /// The settings as an operator writes them: plain scalars where YAML allows, quoted otherwise.
    static func yaml(_ settings: Settings) -> String {
        settings.map { key, value in
            let plain = value.range(of: #"^[A-Za-z0-9][A-Za-z0-9._:-]*[A-Za-z0-9]$|^[A-Za-z0-9]$"#, options: .regularExpression) != nil
            return "\(key): " + (plain ? value : "\"" + value.replacingOccurrences(of: "\\", with: "\\\\")
                .replacingOccurrences(of: "\"", with: "\\\"") + "\"")
        }.joined(separator: "\n") + "\n"
    }

    static func runOnce(_ settings: Settings, way: Way, in environment: TestEnvironment, files: ConfigFiles, extra: [String] = []) async throws {
        let (arguments, variables) = try invocation(["run", "--once"] + extra, settings, way: way, in: environment, files: files)
        let run = try await HistorianProcess.run(arguments, environment: variables)
        #expect(run.status == 0, "historian \(arguments): \(run.errors)")
    }

    static func message(
        _ number: Int,
        conversation: String,
        user: String = "u-1",
        session: String? = "s-1",
        createdAt: String? = nil,
        role: String = "user"
    ) -> [(String, String)] {
        var fields = [
            ("message_id", String(format: "0193e100-0000-7000-8000-%012x", number)), ("conversation_id", conversation),
            ("user_id", user), ("role", role), ("content", "message \(number) — ü"),
        ]
        if let session { fields.append(("session_id", session)) }
        if let createdAt { fields.append(("created_at", createdAt)) }
        return fields
    }

    static func conversation(_ number: Int) -> String { String(format: "0193e000-0000-7000-8000-%012x", number) }

    static func keys(_ redis: RedisConnection) async throws -> [String] {
        (try await redis.send("KEYS", "*").array ?? []).compactMap(\.string).sorted()
    }

    static func fields(_ element: RESPValue?) -> [String: String] {
        let items = element?.array?.dropFirst().first?.array ?? []
        var fields: [String: String] = [:]
        for index in stride(from: 0, to: items.count - 1, by: 2) {
            if let name = items[index].string { fields[name] = items[index + 1].string ?? "" }
        }
        return fields
    }

    static func groups(_ redis: RedisConnection, _ stream: String) async throws -> [[String: RESPValue]] {
        (try await redis.send("XINFO", "GROUPS", RedisArgument(stream)).array ?? []).map(\.fieldPairs)
    }

    // MARK: - stream, group, dlq_stream, key_prefix

    @Test("stream, group, dlq_stream and key_prefix name what run reads, acknowledges, dead-letters and caches", arguments: Way.allCases)
    func names(way: Way) async throws {
        try await TestEnvironment.with { environment in
            let files = ConfigFiles()
            let redis = try await environment.redis()
            defer { redis.close() }
            let settings: Settings = [
                ("stream", "frontend:in"), ("group", "archivist"), ("dlq_stream", "frontend:dead"), ("key_prefix", "tenant-a:"),
            ]
            let conversation = Self.conversation(1)
            let good = [Self.message(1, conversation: conversation), Self.message(2, conversation: conversation, role: "assistant")]
            let bad = Self.message(3, conversation: conversation, role: "robot")
            let ids = try await Producer.appendRaw(good + [bad], to: "frontend:in", redis: redis)
            // On the default stream, which this daemon must not read.
            try await Producer.appendRaw([Self.message(9, conversation: Self.conversation(9), user: "u-9")], redis: redis)

            try await Self.runOnce(settings, way: way, in: environment, files: files)

            // stream: the good entries stored, the default stream's not.
            let stored = try await environment.rows("SELECT id::text FROM messages ORDER BY id").map { $0[0] }
            #expect(stored == good.map { $0[0].1 })
            // group: the only group, everything read and acknowledged.
            let groups = try await Self.groups(redis, "frontend:in")
            #expect(groups.map { $0["name"]?.string } == ["archivist"])
            #expect(groups.first?["pending"]?.int == 0)
            #expect(groups.first?["last-delivered-id"]?.string == ids.last)
            #expect(try await Self.groups(redis, "chat:messages").isEmpty, "a group on the default stream")
            // dlq_stream: the bad entry there, naming its source; nothing on the default one.
            let letters = try await redis.send("XRANGE", "frontend:dead", "-", "+").array ?? []
            #expect(letters.count == 1)
            let letter = Self.fields(letters.first)
            #expect(letter["dlq_reason"] == "invalid_role")
            #expect(letter["dlq_source_stream"] == "frontend:in")
            #expect(letter["dlq_source_id"] == ids[2])
            #expect(try await redis.send("EXISTS", "chat:messages:dlq").int == 0)

            // key_prefix: the recent list, the session and the user's sessions, all under it.
            let recent = try await redis.send("LRANGE", RedisArgument("tenant-a:history:\(conversation):recent"), "0", "-1")
            #expect(recent.array?.count == 2)
            let session = try await redis.send("HGETALL", "tenant-a:session:s-1").fieldPairs
            #expect(session["user_id"]?.string == "u-1")
            #expect(session["conversation_id"]?.string == conversation)
            #expect(try await redis.send("SISMEMBER", "tenant-a:user:u-1:sessions", "s-1").int == 1)
            let streams: Set = ["frontend:in", "frontend:dead", "chat:messages"]
            let cacheKeys = try await Self.keys(redis).filter { !streams.contains($0) }
            #expect(!cacheKeys.isEmpty)
            #expect(cacheKeys.filter { !$0.hasPrefix("tenant-a:") }.isEmpty, "keys outside key_prefix: \(cacheKeys)")
            for key in cacheKeys {
                #expect(try await redis.send("TTL", RedisArgument(key)).int ?? -1 > 0, "\(key) has no TTL")
            }
        }
    }

    // MARK: - recent_size

    @Test("recent_size 3 keeps exactly PostgreSQL's latest 3 in order; 0 keeps no recent lists but still writes sessions", arguments: Way.allCases, [3, 0])
    func recentSize(way: Way, size: Int) async throws {
        try await TestEnvironment.with { environment in
            let files = ConfigFiles()
            let redis = try await environment.redis()
            defer { redis.close() }
            let settings: Settings = [("recent_size", "\(size)")]
            let (busy, short) = (Self.conversation(1), Self.conversation(2))
            func at(_ second: Double) -> String {
                String(format: "2024-07-01T10:00:%09.6fZ", second)
            }
            // Two batches: the list grows past its size and is cut, and a late message (created
            // before the last one) takes its place by created_at, not by arrival.
            try await Producer.appendRaw((1...2).map { Self.message($0, conversation: busy, createdAt: at(Double($0))) }, redis: redis)
            try await Self.runOnce(settings, way: way, in: environment, files: files)
            try await Producer.appendRaw(
                (3...5).map { Self.message($0, conversation: busy, createdAt: at(Double($0))) }
                    + [Self.message(6, conversation: busy, createdAt: at(4.5))]
                    + (7...8).map { Self.message($0, conversation: short, session: "s-2", createdAt: at(Double($0))) },
                redis: redis
            )
            try await Self.runOnce(settings, way: way, in: environment, files: files)
            #expect(try await environment.scalar("SELECT count(*) FROM messages") == 8)
            #expect(try await environment.pendingCount() == 0)

            if size > 0 {
                let differing = try await recentListsDiffering([busy, short], environment, redis, size: size)
                #expect(differing.isEmpty, "recent lists other than PostgreSQL's latest \(size): \(differing)")
                let busyIDs = try await redis.send("LRANGE", RedisArgument("history:\(busy):recent"), "0", "-1").array?.count
                #expect(busyIDs == 3)
            } else {
                let keys = try await Self.keys(redis)
                #expect(keys.filter { $0.hasPrefix("history:") }.isEmpty, "recent lists with recent_size 0: \(keys)")
            }
            // Sessions either way, with their TTLs.
            for (session, conversation) in [("s-1", busy), ("s-2", short)] {
                let hash = try await redis.send("HGETALL", RedisArgument("session:\(session)")).fieldPairs
                #expect(hash["user_id"]?.string == "u-1" && hash["conversation_id"]?.string == conversation, "session:\(session)")
                #expect(try await redis.send("TTL", RedisArgument("session:\(session)")).int ?? -1 > 0)
            }
            let members = (try await redis.send("SMEMBERS", "user:u-1:sessions").array ?? []).compactMap(\.string).sorted()
            #expect(members == ["s-1", "s-2"])
            #expect(try await redis.send("TTL", "user:u-1:sessions").int ?? -1 > 0)
        }
    }

    // MARK: - max_deliveries

    @Test("max_deliveries 3: claimed or own pending entries delivered 3 times are stored, 4 times are poison", arguments: Way.allCases)
    func maxDeliveries(way: Way) async throws {
        try await TestEnvironment.with { environment in
            let files = ConfigFiles()
            let redis = try await environment.redis()
            defer { redis.close() }
            _ = try await redis.send("XGROUP", "CREATE", "chat:messages", "historian", "0", "MKSTREAM")
            let conversation = Self.conversation(1)
            let entries = (1...4).map { Self.message($0, conversation: conversation) }
            let ids = try await Producer.appendRaw(entries, redis: redis)
            // A dead consumer holds the first two, this daemon's own worker ("keeper-0", from an
            // earlier run) the last two; each delivered once so far.
            _ = try await redis.send("XREADGROUP", "GROUP", "historian", "ghost", "COUNT", "2", "STREAMS", "chat:messages", ">")
            _ = try await redis.send("XREADGROUP", "GROUP", "historian", "keeper-0", "COUNT", "2", "STREAMS", "chat:messages", ">")
            // Then handed out again: two deliveries for entries 1 and 3, three for 2 and 4.
            for (index, owner, times) in [(0, "ghost", 1), (1, "ghost", 2), (2, "keeper-0", 1), (3, "keeper-0", 2)] {
                for _ in 0..<times {
                    _ = try await redis.send("XCLAIM", "chat:messages", "historian", RedisArgument(owner), "0", RedisArgument(ids[index]))
                }
            }
            func deliveries() async throws -> [String: Int] {
                var counts: [String: Int] = [:]
                for item in try await redis.send("XPENDING", "chat:messages", "historian", "-", "+", "10").array ?? [] {
                    guard let fields = item.array, fields.count == 4, let id = fields[0].string else { continue }
                    counts[id] = Int(fields[3].int ?? 0)
                }
                return counts
            }
            #expect(try await deliveries() == [ids[0]: 2, ids[1]: 3, ids[2]: 2, ids[3]: 3])
            func stored() async throws -> [String] {
                try await environment.rows("SELECT id::text FROM messages ORDER BY id").compactMap { $0[0] }
            }
            func poisoned() async throws -> [String] {
                (try await redis.send("XRANGE", "chat:messages:dlq", "-", "+").array ?? []).map(Self.fields).map { letter in
                    letter["dlq_reason"] == "poison" ? letter["dlq_source_id"] ?? "?" : "\(letter["dlq_reason"] ?? "?") \(letter["dlq_source_id"] ?? "?")"
                }
            }

            // A restart of the consumer: its own pending entries are read again, a third and a
            // fourth delivery. No claiming here (claim_idle stays 60s).
            try await Self.runOnce([("max_deliveries", "3")], way: way, in: environment, files: files, extra: ["--consumer", "keeper"])
            #expect(try await stored() == [entries[2][0].1])
            #expect(try await poisoned() == [ids[3]])
            #expect(try await deliveries() == [ids[0]: 2, ids[1]: 3], "the dead consumer's entries were touched")

            // The dead consumer's entries, claimed: a third and a fourth delivery.
            let (arguments, variables) = try Self.invocation(
                ["run", "--consumer", "keeper"],
                [("max_deliveries", "3"), ("claim_idle", "1s")],
                way: way,
                in: environment,
                files: files
            )
            let daemon = try HistorianProcess(arguments, environment: variables)
            defer { daemon.signal(SIGKILL) }
            try await eventually("the claimed entries finished", timeout: .seconds(30)) {
                try await environment.pendingCount() == 0
            }
            daemon.signal(SIGTERM)
            #expect(try await daemon.wait(timeout: .seconds(20)) == 0, "\(daemon.errorOutput)")
            #expect(try await stored() == [entries[0][0].1, entries[2][0].1])
            #expect(try await poisoned() == [ids[3], ids[1]])
            let details = (try await redis.send("XRANGE", "chat:messages:dlq", "-", "+").array ?? []).map { Self.fields($0)["dlq_detail"] ?? "" }
            #expect(details.allSatisfy { $0.contains("4 times") && $0.contains("max_deliveries is 3") }, "\(details)")
        }
    }

    // MARK: - archive_every

    @Test("archive_every 0s: the daemon runs no archive pass; a short archive_every archives the idle conversation", arguments: Way.allCases)
    func archiveEvery(way: Way) async throws {
        try await TestEnvironment.with { environment in
            let files = ConfigFiles()
            let redis = try await environment.redis()
            defer { redis.close() }
            let (idle, active) = (Self.conversation(1), Self.conversation(2))
            try await Producer.appendRaw([Self.message(1, conversation: idle)], redis: redis)
            let first = try await HistorianProcess.run(["run", "--once"], environment: environment.historianEnvironment)
            #expect(first.status == 0, "\(first.errors)")
            // Quiet for two days, with archive_after one day.
            _ = try await environment.rows("UPDATE conversations SET updated_at = now() - interval '2 days' WHERE id = '\(idle)'")
            func archived() async throws -> Int { try await environment.scalar("SELECT count(*) FROM archived_conversations") }
            func archiveFiles() -> [String] { (FileManager.default.enumerator(atPath: environment.archiveDir)?.allObjects as? [String]) ?? [] }

            let off = try Self.invocation(["run"], [("archive_after", "1d"), ("archive_every", "0s")], way: way, in: environment, files: files)
            let started = ContinuousClock.now
            let quiet = try HistorianProcess(off.arguments, environment: off.variables)
            defer { quiet.signal(SIGKILL) }
            // The daemon is up and consuming all the while.
            try await Producer.appendRaw([Self.message(2, conversation: active, session: "s-2")], redis: redis)
            try await eventually("the daemon stored a new message", timeout: .seconds(20)) {
                try await environment.scalar("SELECT count(*) FROM messages") == 2
            }
            // Three times the control's period below.
            try await Task.sleep(until: started + .seconds(3))
            #expect(quiet.isRunning)
            #expect(try await archived() == 0)
            #expect(try await environment.scalar("SELECT count(*) FROM conversations WHERE id = '\(idle)'") == 1)
            #expect(archiveFiles().isEmpty, "\(archiveFiles())")
            quiet.signal(SIGTERM)
            #expect(try await quiet.wait(timeout: .seconds(20)) == 0, "\(quiet.errorOutput)")

            // The control: the same daemon with a short archive_every archives it.
            let on = try Self.invocation(["run"], [("archive_after", "1d"), ("archive_every", "1s")], way: way, in: environment, files: files)
            let archiving = try HistorianProcess(on.arguments, environment: on.variables)
            defer { archiving.signal(SIGKILL) }
            try await eventually("the idle conversation archived", timeout: .seconds(20)) {
                try await archived() == 1
            }
            archiving.signal(SIGTERM)
            #expect(try await archiving.wait(timeout: .seconds(20)) == 0, "\(archiving.errorOutput)")
            #expect(try await environment.rows("SELECT id::text FROM archived_conversations") == [[idle]])
            #expect(try await environment.rows("SELECT id::text FROM conversations") == [[active]])
        }
    }
}
