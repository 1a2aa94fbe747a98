import Foundation
import LocalServers
import RedisClient

/// What `langchain_cache` costs: drains like the main one (the same messages, conversations and
/// `--workers`, each freshly prefilled into an empty Redis and drained into a new database),
/// in pairs taken back to back, one drain of each pair with `--langchain-cache false` and one
/// with `--langchain-cache true`. The first pair drains without the LangChain lists first, the
/// second with them first, and so on, so that an even number of pairs (A B B A) cancels a drift
/// of the machine over the phase. After each drain, the benchmark counts the LangChain lists
/// in Redis: one per conversation with the option, none without.
struct LangchainPhase {
    let servers: BenchmarkServers
    let workload: Workload
    let messages: [WorkloadMessage]
    let executable: String
    /// The daemon's arguments, `--workers` included, as in the main drain; without
    /// `--langchain-cache`, which the phase adds.
    let arguments: [String]
    let workers: Int?
    /// Pairs of drains; each costs two drains.
    let pairs: Int

    /// Whether the drain at `index` (from 0) of the phase runs with the LangChain lists: pair 1
    /// without first, pair 2 with first, and so on.
    static func langchain(atDrain index: Int) -> Bool {
        let pair = index / 2
        let first = pair % 2 == 1
        return index % 2 == 0 ? first : !first
    }

    func run() async throws -> LangchainResult {
        let conversations = Set(messages.map(\.conversation)).count
        var result = LangchainResult()
        for index in 0..<(2 * pairs) {
            let langchain = Self.langchain(atDrain: index)
            let pair = index / 2 + 1
            let database = "langchain_\(langchain ? "on" : "off")_\(pair)"
            let phase = DrainPhase(
                servers: servers,
                workload: workload,
                messages: messages,
                executable: executable,
                arguments: arguments + ["--langchain-cache", String(langchain)],
                workers: workers,
                database: database,
                label: "langchain, pair \(pair) of \(pairs), langchain_cache \(langchain)"
            )
            let drain = try await phase.runDroppingDatabase()
            // Counted after the drain's figures are taken: the scan's CPU is not in them.
            let lists = try await langchainLists()
            guard lists == (langchain ? conversations : 0) else {
                throw BenchmarkError(
                    "langchain: \(lists) LangChain lists after a drain with langchain_cache \(langchain), "
                        + "expected \(langchain ? conversations : 0)"
                )
            }
            result.drains.append(LangchainDrain(langchainCache: langchain, pair: pair, lists: lists, drain: drain))
        }
        if let ratio = result.totalCPURatio, let redis = result.redisCPURatio {
            report(
                String(format: "langchain: with / without, total CPU per message %.3f ×, Redis %.3f ×", ratio, redis)
            )
        }
        return result
    }

    /// The `message_store:*` keys in Redis (with any key prefix).
    private func langchainLists() async throws -> Int {
        let redis = try await servers.redisConnection()
        defer { redis.close() }
        var cursor = "0"
        var count = 0
        repeat {
            let reply = try await redis.send(
                "SCAN",
                RedisArgument(cursor),
                "MATCH",
                "*message_store:*",
                "COUNT",
                "10000"
            )
            guard let parts = reply.array, parts.count == 2, let next = parts[0].string, let keys = parts[1].array else {
                throw BenchmarkError("langchain: unexpected SCAN reply \(reply)")
            }
            count += keys.count
            cursor = next
        } while cursor != "0"
        return count
    }
}

/// One drain of the langchain phase.
struct LangchainDrain: Encodable {
    /// Whether the drain ran with `--langchain-cache true`.
    var langchainCache: Bool
    /// Its pair, from 1.
    var pair: Int
    /// LangChain lists (`message_store:*` keys) in Redis after the drain.
    var lists: Int
    var drain: DrainResult

    enum CodingKeys: String, CodingKey {
        case langchainCache = "langchain_cache"
        case pair
        case lists = "langchain_lists"
        case drain
    }
}

/// The langchain phase's drains, and the cost of the LangChain lists they show: with each
/// setting's CPU per message the average of its drains' (which all drain the same messages),
/// the ratios are with / without.
struct LangchainResult: Encodable {
    /// In the order they ran.
    var drains: [LangchainDrain] = []

    /// The drains with (`true`) or without (`false`) the LangChain lists.
    func runs(langchain: Bool) -> [DrainResult] {
        drains.filter { $0.langchainCache == langchain }.map(\.drain)
    }

    /// The setting's messages per second over its drains: their messages over their time.
    func messagesPerSecond(langchain: Bool) -> Double? {
        let runs = self.runs(langchain: langchain)
        let seconds = runs.reduce(0) { $0 + $1.seconds }
        guard !runs.isEmpty, seconds > 0 else { return nil }
        return Double(runs.reduce(0) { $0 + $1.messages }) / seconds
    }

    /// The setting's CPU per message of each process, the average of its drains'.
    func cpuPerMessage(langchain: Bool) -> CPUPerMessage? {
        let runs = self.runs(langchain: langchain).map(\.cpuPerMessage)
        guard !runs.isEmpty else { return nil }
        let count = Double(runs.count)
        return CPUPerMessage(
            historian: runs.reduce(0) { $0 + $1.historian } / count,
            postgres: runs.reduce(0) { $0 + $1.postgres } / count,
            redis: runs.reduce(0) { $0 + $1.redis } / count
        )
    }

    /// Total CPU per message (historian, PostgreSQL and Redis), with / without.
    var totalCPURatio: Double? {
        guard let with = cpuPerMessage(langchain: true), let without = cpuPerMessage(langchain: false), without.total > 0
        else { return nil }
        return with.total / without.total
    }

    /// Redis's CPU per message, with / without.
    var redisCPURatio: Double? {
        guard let with = cpuPerMessage(langchain: true), let without = cpuPerMessage(langchain: false), without.redis > 0
        else { return nil }
        return with.redis / without.redis
    }

    /// Each pair's total CPU ratio, with / without, in the order the pairs ran.
    var pairRatios: [Double] {
        Set(drains.map(\.pair)).sorted().compactMap { pair in
            let inPair = drains.filter { $0.pair == pair }
            guard let with = inPair.first(where: \.langchainCache)?.drain.cpuPerMessage,
                let without = inPair.first(where: { !$0.langchainCache })?.drain.cpuPerMessage, without.total > 0
            else { return nil }
            return with.total / without.total
        }
    }

    /// "false, true" for one pair, "false, true, true, false" for two.
    var order: String {
        drains.map { String($0.langchainCache) }.joined(separator: ", ")
    }

    enum CodingKeys: String, CodingKey {
        case drains, order, pairs, without, with
        case totalCPURatio = "total_cpu_ratio"
        case redisCPURatio = "redis_cpu_ratio"
        case pairRatios = "pair_total_cpu_ratios"
    }

    /// One setting's figures over its drains.
    struct Setting: Encodable {
        var messagesPerSecond: Double?
        var cpuPerMessage: CPUPerMessage?

        enum CodingKeys: String, CodingKey {
            case messagesPerSecond = "messages_per_second"
            case cpuPerMessage = "cpu_us_per_message"
        }
    }

    func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(Set(drains.map(\.pair)).count, forKey: .pairs)
        try container.encode(drains.map(\.langchainCache), forKey: .order)
        for (setting, key) in [(false, CodingKeys.without), (true, .with)] {
            let figures = Setting(
                messagesPerSecond: messagesPerSecond(langchain: setting),
                cpuPerMessage: cpuPerMessage(langchain: setting)
            )
            try container.encode(figures, forKey: key)
        }
        try container.encodeIfPresent(totalCPURatio, forKey: .totalCPURatio)
        try container.encodeIfPresent(redisCPURatio, forKey: .redisCPURatio)
        try container.encode(pairRatios, forKey: .pairRatios)
        try container.encode(drains, forKey: .drains)
    }
}
