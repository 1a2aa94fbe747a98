import Foundation

/// One target, held against a run's figure: met, missed, or not measured by this run.
struct Target: Encodable, Equatable {
    enum Comparison: String, Encodable {
        case atMost = "≤"
        case atLeast = "≥"
        case below = "<"
    }

    enum Outcome: String, Encodable {
        case met
        case missed
        case notMeasured = "not measured"
    }

    /// What is measured, e.g. "drain: historian CPU per message".
    var name: String
    var comparison: Comparison
    var limit: Double
    /// The limit as the table prints it, e.g. "6 µs" or "0.6 × bound".
    var limitText: String
    /// The figure, in the limit's unit; nil when this run did not measure it.
    var measured: Double?
    /// How the table prints `measured`: a format for one `Double`, e.g. "%.1f µs".
    var format: String
    /// What the figure was made of, or why it was not measured.
    var detail: String?

    var outcome: Outcome {
        guard let measured else { return .notMeasured }
        let met =
            switch comparison {
            case .atMost: measured <= limit
            case .atLeast: measured >= limit
            case .below: measured < limit
            }
        return met ? .met : .missed
    }

    /// The requirement, e.g. "≤ 6 µs".
    var requirement: String { comparison.rawValue + " " + limitText }

    /// The figure as the table prints it, e.g. "5.2 µs"; nil when not measured.
    var figure: String? {
        measured.map { String(format: format, $0) }
    }

    /// One line for the table: the outcome, the figure, the requirement and the detail.
    var summary: String {
        let outcome =
            switch self.outcome {
            case .met: "met"
            case .missed: "MISSED"
            case .notMeasured: "not measured"
            }
        let padded = outcome.padding(toLength: 12, withPad: " ", startingAt: 0)
        let note = ([requirement] + (detail.map { [$0] } ?? [])).joined(separator: "; ")
        return padded + "  " + (figure.map { $0 + " " } ?? "") + "(" + note + ")"
    }

    enum CodingKeys: String, CodingKey {
        case name, requirement, limit, measured, figure, detail, outcome
    }

    func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(name, forKey: .name)
        try container.encode(requirement, forKey: .requirement)
        try container.encode(limit, forKey: .limit)
        try container.encode(measured, forKey: .measured)
        try container.encode(figure, forKey: .figure)
        try container.encode(detail, forKey: .detail)
        try container.encode(outcome, forKey: .outcome)
    }
}

/// The benchmark's targets (the write path's, the memory target and the cost of
/// `langchain_cache`), each held against the figures of one run: a pure function of the
/// results, so that the verdicts can be tested without a run.
enum Targets {
    /// The producer's rate at which the steady-rate targets hold.
    static let steadyRate = 5_000
    /// Steady rate: CPU per message of historian, PostgreSQL and Redis together, in µs.
    static let steadyCPUPerMessage = 100.0
    /// Steady rate: the p99 latency, in ms.
    static let steadyP99 = 10.0
    /// Drain: the least throughput, as a fraction of the run's bound.
    static let drainShareOfBound = 0.6
    /// Drain: the most CPU per message of the three processes, as a multiple of the bound's.
    static let drainCPUOverBound = 1.6
    /// Drain: the most CPU per message of historian itself, in µs.
    static let drainHistorianCPUPerMessage = 6.0
    /// Drain: the most CPU per message of PostgreSQL, as a multiple of its CPU at the ceiling.
    static let drainPostgresOverCeiling = 1.5
    /// Drain: the most CPU per message of Redis, as a multiple of its CPU at the floor.
    static let drainRedisOverFloor = 1.3
    /// Fast by default: the least drain rate with the default settings, as a fraction of the
    /// best `--workers` setting's.
    static let defaultShareOfBest = 0.8
    /// The daemon's peak RSS during the drain, in MiB.
    static let peakRSSMiB = 64.0
    /// `langchain_cache`: the most CPU per message of the three processes with the LangChain
    /// lists, as a multiple of theirs without (issue 33).
    static let langchainCPUOverWithout = 1.15

    static func evaluate(_ results: BenchmarkResults) -> [Target] {
        steady(results.latency, floor: results.steadyFloor) + drain(results)
            + [fastByDefault(results), memory(results.drain), langchain(results.langchain)]
    }

    private static func steady(_ latency: LatencyResult?, floor: SteadyFloorResult?) -> [Target] {
        var cpu = Target(
            name: "steady rate: CPU per message",
            comparison: .atMost, limit: steadyCPUPerMessage, limitText: "100 µs", format: "%.1f µs"
        )
        var p99 = Target(
            name: "steady rate: p99 latency", comparison: .atMost, limit: steadyP99, limitText: "10 ms",
            format: "%.1f ms"
        )
        guard let latency else { return [cpu, p99] }
        guard latency.rate == steadyRate else {
            let reason = "the latency run's rate was \(latency.rate) messages/s, not \(steadyRate)"
            cpu.detail = reason
            p99.detail = reason
            return [cpu, p99]
        }
        if let perMessage = latency.cpuPerMessage {
            cpu.measured = perMessage.total
            cpu.detail = "the sum of " + perMessage.parts
            if let floor, floor.rate == latency.rate {
                // What PostgreSQL and Redis alone spend at this rate: how much of the limit is left.
                cpu.detail! += String(format: "; the steady floor, PostgreSQL and Redis alone: %.1f µs", floor.cpuPerMessage)
            }
        }
        p99.measured = latency.p99
        return [cpu, p99]
    }

    private static func drain(_ results: BenchmarkResults) -> [Target] {
        var throughput = Target(
            name: "drain: throughput", comparison: .atLeast, limit: drainShareOfBound, limitText: "0.6 × bound",
            format: "%.2f × bound"
        )
        var cpu = Target(
            name: "drain: CPU per message", comparison: .atMost,
            limit: drainCPUOverBound, limitText: "1.6 × the bound's", format: "%.2f × the bound's"
        )
        var historian = Target(
            name: "drain: historian CPU per message", comparison: .atMost, limit: drainHistorianCPUPerMessage,
            limitText: "6 µs", format: "%.1f µs"
        )
        var postgres = Target(
            name: "drain: PostgreSQL CPU per message", comparison: .atMost, limit: drainPostgresOverCeiling,
            limitText: "1.5 × at the ceiling", format: "%.2f × at the ceiling"
        )
        var redis = Target(
            name: "drain: Redis CPU per message", comparison: .atMost, limit: drainRedisOverFloor,
            limitText: "1.3 × at the floor", format: "%.2f × at the floor"
        )
        guard let drain = results.drain else { return [throughput, cpu, historian, postgres, redis] }
        let perMessage = drain.cpuPerMessage
        historian.measured = perMessage.historian
        if let bound = results.bound, let boundCPU = results.boundCPUPerMessage {
            throughput.measured = drain.messagesPerSecond / bound
            throughput.detail = "\(rate(drain.messagesPerSecond)) of \(rate(bound)) messages/s"
            cpu.measured = perMessage.total / boundCPU
            cpu.detail = String(format: "%.1f µs against the bound's %.1f µs; ", perMessage.total, boundCPU) + perMessage.parts
        }
        if let ceiling = results.ceilingPostgresCPUPerMessage, ceiling > 0 {
            postgres.measured = perMessage.postgres / ceiling
            postgres.detail = String(format: "%.1f µs against %.1f µs at the ceiling", perMessage.postgres, ceiling)
        }
        if let floor = results.floorRedisCPUPerMessage, floor > 0 {
            redis.measured = perMessage.redis / floor
            redis.detail = String(format: "%.1f µs against %.1f µs at the floor", perMessage.redis, floor)
        }
        return [throughput, cpu, historian, postgres, redis]
    }

    /// The drain with the default settings against the fastest drain with `--workers` in the
    /// same run: the sweep's and the main drain.
    private static func fastByDefault(_ results: BenchmarkResults) -> Target {
        var target = Target(
            name: "fast by default: drain rate", comparison: .atLeast, limit: defaultShareOfBest,
            limitText: "0.8 × the best --workers", format: "%.2f × the best --workers"
        )
        let candidates = (results.sweep?.drains ?? []) + (results.drain.map { [$0] } ?? [])
        guard let defaults = results.sweep?.defaults,
            let best = candidates.filter({ $0.workers != nil }).max(by: { $0.messagesPerSecond < $1.messagesPerSecond }),
            let workers = best.workers, best.messagesPerSecond > 0
        else { return target }
        target.measured = defaults.messagesPerSecond / best.messagesPerSecond
        target.detail =
            "\(rate(defaults.messagesPerSecond)) against \(rate(best.messagesPerSecond)) messages/s with --workers \(workers)"
        return target
    }

    private static func memory(_ drain: DrainResult?) -> Target {
        var target = Target(
            name: "drain: peak RSS", comparison: .below, limit: peakRSSMiB, limitText: "64 MiB", format: "%.1f MiB"
        )
        target.measured = drain.map { Double($0.peakRSSBytes) / 1_048_576 }
        return target
    }

    /// The langchain phase's total CPU per message with the LangChain lists against without.
    private static func langchain(_ langchain: LangchainResult?) -> Target {
        var target = Target(
            name: "langchain_cache: total CPU per message", comparison: .atMost, limit: langchainCPUOverWithout,
            limitText: "1.15 × without", format: "%.3f × without"
        )
        guard let langchain, let ratio = langchain.totalCPURatio,
            let with = langchain.cpuPerMessage(langchain: true), let without = langchain.cpuPerMessage(langchain: false)
        else { return target }
        target.measured = ratio
        target.detail = String(format: "%.1f µs against %.1f µs", with.total, without.total)
        if let redis = langchain.redisCPURatio {
            target.detail! += String(
                format: "; Redis %.1f µs against %.1f µs, %.3f ×",
                with.redis,
                without.redis,
                redis
            )
        }
        return target
    }

    private static func rate(_ value: Double) -> String {
        Int(value.rounded()).formatted()
    }
}
