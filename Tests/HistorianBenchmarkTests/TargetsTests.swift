import Testing

@testable import HistorianBenchmark

/// The targets' verdicts, from results made up for the purpose: no servers, no run.
struct TargetsTests {
    /// Whether `value` is `expected`, give or take the rounding of the per-message figures.
    private func approximately(_ value: Double?, _ expected: Double) -> Bool {
        guard let value else { return false }
        return abs(value - expected) < 1e-9 * max(1, abs(expected))
    }

    /// One target by name.
    private func target(_ name: String, in targets: [Target]) throws -> Target {
        try #require(targets.first { $0.name == name }, "no target \(name)")
    }

    @Test("every figure measured: each target compares its own figure with its limit")
    func everyFigureMeasured() throws {
        let targets = Targets.evaluate(TargetsTests.results())
        #expect(targets.count == 10)

        let steadyCPU = try target("steady rate: CPU per message", in: targets)
        #expect(approximately(steadyCPU.measured, 99))
        #expect(steadyCPU.outcome == .met)
        let p99 = try target("steady rate: p99 latency", in: targets)
        #expect(approximately(p99.measured, 9.9))
        #expect(p99.outcome == .met)

        // Bound: 2 cores / (30 µs at the ceiling + 10 µs at the floor) = 50,000 messages/s.
        let throughput = try target("drain: throughput", in: targets)
        #expect(approximately(throughput.measured, 0.7))
        #expect(throughput.outcome == .met)
        #expect(throughput.figure == "0.70 × bound")
        #expect(throughput.detail == "35,000 of 50,000 messages/s")
        #expect(throughput.summary == "met           0.70 × bound (≥ 0.6 × bound; 35,000 of 50,000 messages/s)")
        // 5 + 40 + 14 = 59 µs against the bound's 40.
        let drainCPU = try target("drain: CPU per message", in: targets)
        #expect(approximately(drainCPU.measured, 59.0 / 40.0))
        #expect(drainCPU.outcome == .met)
        let historian = try target("drain: historian CPU per message", in: targets)
        #expect(approximately(historian.measured, 5))
        #expect(historian.outcome == .met)
        let postgres = try target("drain: PostgreSQL CPU per message", in: targets)
        #expect(approximately(postgres.measured, 40.0 / 30.0))
        #expect(postgres.outcome == .met)
        // 14 µs against 10 at the floor: over 1.3 times.
        let redis = try target("drain: Redis CPU per message", in: targets)
        #expect(approximately(redis.measured, 1.4))
        #expect(redis.outcome == .missed)

        // The best --workers is the sweep's 2 (36,000), ahead of the main drain's 3 (35,000).
        let fastByDefault = try target("fast by default: drain rate", in: targets)
        #expect(approximately(fastByDefault.measured, 30_000.0 / 36_000.0))
        #expect(fastByDefault.outcome == .met)
        #expect(fastByDefault.detail == "30,000 against 36,000 messages/s with --workers 2")

        let memory = try target("drain: peak RSS", in: targets)
        #expect(approximately(memory.measured, 40))
        #expect(memory.outcome == .met)

        // 5 + 40 + 18 = 63 µs with the LangChain lists against 5 + 40 + 14 = 59 without.
        let langchain = try target("langchain_cache: total CPU per message", in: targets)
        #expect(approximately(langchain.measured, 63.0 / 59.0))
        #expect(langchain.outcome == .met)
        #expect(langchain.figure == "1.068 × without")
        #expect(langchain.detail == "63.0 µs against 59.0 µs; Redis 18.0 µs against 14.0 µs, 1.286 ×")
    }

    @Test("langchain_cache: the total CPU per message with the lists against without, over all pairs")
    func langchainCost() throws {
        var results = TargetsTests.results()
        let name = "langchain_cache: total CPU per message"
        // Two pairs, in the order without, with, with, without: each setting's CPU per message
        // is the average of its two drains'.
        results.langchain = LangchainResult(
            drains: [
                TargetsTests.langchainDrain(false, pair: 1, CPUPerMessage(historian: 5, postgres: 40, redis: 14)),
                TargetsTests.langchainDrain(true, pair: 1, CPUPerMessage(historian: 5, postgres: 40, redis: 24)),
                TargetsTests.langchainDrain(true, pair: 2, CPUPerMessage(historian: 6, postgres: 42, redis: 26)),
                TargetsTests.langchainDrain(false, pair: 2, CPUPerMessage(historian: 6, postgres: 42, redis: 16)),
            ]
        )
        // With: 5.5 + 41 + 25 = 71.5 µs; without: 5.5 + 41 + 15 = 61.5 µs.
        let missed = try target(name, in: Targets.evaluate(results))
        #expect(approximately(missed.measured, 71.5 / 61.5))
        #expect(missed.outcome == .missed)
        #expect(approximately(results.langchain?.redisCPURatio, 25.0 / 15.0))
        #expect(results.langchain?.order == "false, true, true, false")
        #expect(results.langchain?.pairRatios.count == 2)
        #expect(approximately(results.langchain?.pairRatios.first, 69.0 / 59.0))

        // Exactly 1.15 times: met.
        results.langchain = LangchainResult(
            drains: [
                TargetsTests.langchainDrain(false, pair: 1, CPUPerMessage(historian: 20, postgres: 40, redis: 40)),
                TargetsTests.langchainDrain(true, pair: 1, CPUPerMessage(historian: 20, postgres: 40, redis: 55)),
            ]
        )
        let atLimit = try target(name, in: Targets.evaluate(results))
        #expect(approximately(atLimit.measured, 1.15))
        #expect(atLimit.outcome == .met)

        // A drain without its counterpart measures nothing.
        results.langchain = LangchainResult(drains: [results.langchain!.drains[0]])
        #expect(try target(name, in: Targets.evaluate(results)).outcome == .notMeasured)
    }

    @Test("the langchain phase alternates the order of its pairs: without first, then with first")
    func langchainOrder() {
        #expect((0..<8).map(LangchainPhase.langchain(atDrain:)) == [false, true, true, false, false, true, true, false])
    }

    @Test("a figure exactly at its limit meets it, except the strict memory limit")
    func limitsAreInclusive() throws {
        var results = TargetsTests.results()
        results.drain?.cpuPerMessage.historian = 6
        results.drain?.messagesPerSecond = 30_000
        results.drain?.peakRSSBytes = 64 * 1_048_576
        let targets = Targets.evaluate(results)
        #expect(try target("drain: historian CPU per message", in: targets).outcome == .met)
        #expect(try target("drain: throughput", in: targets).outcome == .met)
        #expect(try target("drain: peak RSS", in: targets).outcome == .missed)
    }

    @Test("a run without phases measures no target, and says so")
    func nothingMeasured() {
        var results = TargetsTests.results()
        results.ceiling = nil
        results.redisFloor = nil
        results.drain = nil
        results.latency = nil
        results.sweep = nil
        results.langchain = nil
        let targets = Targets.evaluate(results)
        #expect(targets.count == 10)
        for target in targets {
            #expect(target.outcome == .notMeasured, "\(target.name)")
            #expect(target.figure == nil, "\(target.name)")
            #expect(target.summary.hasPrefix("not measured  ("), "\(target.name)")
        }
    }

    @Test("without the ceiling and the floor, only the drain's own figures are held against limits")
    func drainWithoutBound() throws {
        var results = TargetsTests.results()
        results.ceiling = nil
        results.redisFloor = nil
        results.sweep = nil
        let targets = Targets.evaluate(results)
        #expect(try target("drain: historian CPU per message", in: targets).outcome == .met)
        #expect(try target("drain: peak RSS", in: targets).outcome == .met)
        for name in [
            "drain: throughput", "drain: CPU per message",
            "drain: PostgreSQL CPU per message", "drain: Redis CPU per message",
            "fast by default: drain rate",
        ] {
            #expect(try target(name, in: targets).outcome == .notMeasured, "\(name)")
        }
    }

    @Test("the steady-rate targets hold at 5,000 messages/s only")
    func steadyRateAtAnotherRate() throws {
        var results = TargetsTests.results()
        results.latency?.rate = 1_000
        let targets = Targets.evaluate(results)
        let p99 = try target("steady rate: p99 latency", in: targets)
        #expect(p99.outcome == .notMeasured)
        #expect(p99.detail == "the latency run's rate was 1000 messages/s, not 5000")
        #expect(p99.summary == "not measured  (≤ 10 ms; the latency run's rate was 1000 messages/s, not 5000)")
    }

    @Test("with the steady floor measured at the latency run's rate, the CPU target names it beside its figure")
    func steadyFloorBesideTheSteadyCPU() throws {
        var results = TargetsTests.results()
        results.steadyFloor = SteadyFloorResult(
            rate: 5_000, batch: 10, messages: 50_000, seconds: 10, postgresCPUSeconds: 2, redisCPUSeconds: 1.5
        )
        let cpu = try target("steady rate: CPU per message", in: Targets.evaluate(results))
        // 2 s and 1.5 s over 50,000 messages: 40 + 30 µs.
        #expect(try #require(cpu.detail).hasSuffix("; the steady floor, PostgreSQL and Redis alone: 70.0 µs"))
        #expect(approximately(cpu.measured, 99))

        results.steadyFloor?.rate = 1_000
        let elsewhere = try target("steady rate: CPU per message", in: Targets.evaluate(results))
        #expect(elsewhere.detail?.contains("steady floor") == false)
    }

    @Test("the default settings are slow when the best --workers drains over a quarter faster")
    func slowByDefault() throws {
        var results = TargetsTests.results()
        results.sweep?.defaults?.messagesPerSecond = 28_000
        let fastByDefault = try target("fast by default: drain rate", in: Targets.evaluate(results))
        #expect(approximately(fastByDefault.measured, 28_000.0 / 36_000.0))
        #expect(fastByDefault.outcome == .missed)
    }

    /// A run of 1,000,000 messages on 2 cores with every phase, its figures chosen so that the
    /// ratios are easy to check.
    static func results() -> BenchmarkResults {
        var results = BenchmarkResults(
            machine: MachineDescription(cpu: "test", cores: 2, memoryGiB: 24, kernel: "test", date: "today"),
            messages: 1_000_000,
            conversations: 10_000,
            workers: 3,
            daemonOptions: []
        )
        var ceiling = CeilingResult()
        ceiling.oneConnection = 90_000
        ceiling.twoConnections = 100_000
        ceiling.oneConnectionPostgresCPUSeconds = 30
        ceiling.twoConnectionsPostgresCPUSeconds = 32
        results.ceiling = ceiling
        results.redisFloor = RedisFloorResult(redisCPUSeconds: 10, batchSize: 500)
        results.drain = drain(workers: 3, rate: 35_000)
        results.drain?.cpuPerMessage = CPUPerMessage(historian: 5, postgres: 40, redis: 14)
        // 100 latencies of 0.1 to 10 ms: the p99 is 9.9 ms.
        var latency = LatencyResult(rate: 5_000, sorted: (1...100).map { UInt64($0) * 100_000 }, achievedRate: 5_000)
        latency.cpuPerMessage = CPUPerMessage(historian: 30, postgres: 49, redis: 20)
        results.latency = latency
        results.sweep = SweepResult(
            defaults: drain(workers: nil, rate: 30_000),
            drains: [drain(workers: 1, rate: 30_000), drain(workers: 2, rate: 36_000)]
        )
        // One pair: Redis 14 µs per message without the LangChain lists, 18 with.
        results.langchain = LangchainResult(
            drains: [
                langchainDrain(false, pair: 1, CPUPerMessage(historian: 5, postgres: 40, redis: 14)),
                langchainDrain(true, pair: 1, CPUPerMessage(historian: 5, postgres: 40, redis: 18)),
            ]
        )
        return results
    }

    static func langchainDrain(_ langchain: Bool, pair: Int, _ perMessage: CPUPerMessage) -> LangchainDrain {
        var drain = drain(workers: 3, rate: 35_000)
        drain.cpuPerMessage = perMessage
        return LangchainDrain(langchainCache: langchain, pair: pair, lists: langchain ? 10_000 : 0, drain: drain)
    }

    static func drain(workers: Int?, rate: Double) -> DrainResult {
        DrainResult(
            messages: 1_000_000,
            workers: workers,
            messagesPerSecond: rate,
            seconds: 1_000_000 / rate,
            peakRSSBytes: 40 * 1_048_576,
            cpuSeconds: 0,
            postgresCPUSeconds: 0,
            redisCPUSeconds: 0,
            cpuPerMessage: CPUPerMessage(historian: 0, postgres: 0, redis: 0)
        )
    }
}
