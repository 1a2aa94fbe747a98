import Foundation

/// Where the figures came from.
struct MachineDescription: Codable {
    var cpu: String
    var cores: Int
    var memoryGiB: Int
    var kernel: String
    var redis = ""
    var postgres = ""
    var date: String

    static func current() -> MachineDescription {
        let cpuInfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let model = cpuInfo.split(separator: "\n").first { $0.hasPrefix("model name") }
            .map { $0.split(separator: ":", maxSplits: 1).last!.trimmingCharacters(in: .whitespaces) } ?? "unknown"
        var name = utsname()
        uname(&name)
        let release = withUnsafeBytes(of: &name.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        return MachineDescription(
            cpu: model,
            cores: ProcessInfo.processInfo.activeProcessorCount,
            memoryGiB: Int((Double(ProcessInfo.processInfo.physicalMemory) / 1_073_741_824).rounded()),
            kernel: release,
            date: ISO8601DateFormatter().string(from: Date())
        )
    }

    enum CodingKeys: String, CodingKey {
        case cpu, cores, kernel, redis, postgres, date
        case memoryGiB = "memory_gib"
    }
}

/// Everything one run measured.
struct BenchmarkResults: Encodable {
    var machine: MachineDescription
    var messages: Int
    var conversations: Int
    var workers: Int
    var daemonOptions: [String]
    /// `--postgres-setting`s of the run, over the benchmark's own.
    var postgresSettings: [String] = []
    var averageContentBytes = 0
    var ceiling: CeilingResult?
    var redisFloor: RedisFloorResult?
    /// PostgreSQL's and Redis's least work at the latency run's rate.
    var steadyFloor: SteadyFloorResult?
    var drain: DrainResult?
    var latency: LatencyResult?
    /// The extra drains: with the default settings, and with each `--workers` of the sweep.
    var sweep: SweepResult?
    /// The drains without and with `langchain_cache`.
    var langchain: LangchainResult?
    /// The history API under load while the pipeline runs.
    var api: APIResult?
    /// The drains from a Redis Cluster, by shard and process count.
    var cluster: ClusterResult?

    /// CPU per message, in microseconds.
    private func perMessage(_ seconds: Double) -> Double { seconds / Double(max(1, messages)) * 1e6 }

    /// PostgreSQL's CPU per message at the ceiling (the lesser of its two rounds), in µs.
    var ceilingPostgresCPUPerMessage: Double? {
        ceiling.map { perMessage($0.postgresCPUSeconds) }
    }

    /// Redis's CPU per message at the floor, in µs.
    var floorRedisCPUPerMessage: Double? {
        redisFloor.map { perMessage($0.redisCPUSeconds) }
    }

    /// The bound's CPU per message: PostgreSQL's at the ceiling plus Redis's at the floor, in µs.
    var boundCPUPerMessage: Double? {
        guard let postgres = ceilingPostgresCPUPerMessage, let redis = floorRedisCPUPerMessage else { return nil }
        return postgres + redis
    }

    /// The most messages per second any drain could reach on this machine: its cores kept busy
    /// with nothing but the least PostgreSQL CPU of the ceiling and Redis's CPU at the floor,
    /// none left for Historian itself.
    var bound: Double? {
        guard let microseconds = boundCPUPerMessage, microseconds > 0 else { return nil }
        return Double(machine.cores) * 1e6 / microseconds
    }

    /// The targets, held against this run's figures.
    var targets: [Target] { Targets.evaluate(self) }

    func table() -> String {
        var rows: [(String, String)] = [
            ("machine", "\(machine.cores) cores, \(machine.memoryGiB) GiB, \(machine.cpu)"),
            ("servers", "Redis \(machine.redis), PostgreSQL \(machine.postgres) (fsync on)"
                + postgresSettings.map { ", " + $0 }.joined()),
            ("workload", "\(messages) messages, \(conversations) conversations, content \(averageContentBytes) B on average"),
            ("historian", (["--workers", String(workers)] + daemonOptions).joined(separator: " ")),
        ]
        if let ceiling {
            rows.append(("ceiling: COPY, 1 connection", rate(ceiling.oneConnection)))
            rows.append(("ceiling: COPY, 2 connections", rate(ceiling.twoConnections)))
            rows.append(
                (
                    "ceiling: PostgreSQL CPU",
                    String(
                        format: "%.1f µs per message (1 connection), %.1f µs (2 connections)",
                        perMessage(ceiling.oneConnectionPostgresCPUSeconds),
                        perMessage(ceiling.twoConnectionsPostgresCPUSeconds)
                    )
                )
            )
            if let one = ceiling.oneConnectionMachine, let two = ceiling.twoConnectionsMachine {
                rows.append(("machine during ceiling, 1 / 2 connections", one.summary + " / " + two.summary))
            }
        }
        if let redisFloor {
            rows.append(
                (
                    "Redis floor: Redis CPU",
                    String(format: "%.1f µs per message (plain commands, batches of %d)", perMessage(redisFloor.redisCPUSeconds), redisFloor.batchSize)
                )
            )
        }
        if let steadyFloor {
            rows.append(
                (
                    "steady floor: COPY + plain commands, \(steadyFloor.rate) messages/s in batches of \(steadyFloor.batch)",
                    String(
                        format: "%.1f µs per message: PostgreSQL %.1f, Redis %.1f (the latency run's producer and poller included)",
                        steadyFloor.cpuPerMessage, steadyFloor.postgresCPUPerMessage, steadyFloor.redisCPUPerMessage
                    )
                )
            )
        }
        if let bound, let ceiling {
            rows.append(
                (
                    "bound: \(machine.cores) cores / (ceiling CPU + floor CPU)",
                    rate(bound) + String(format: ", %.0f%% of ceiling, with no CPU left for historian", bound / ceiling.messagesPerSecond * 100)
                )
            )
        }
        if let drain {
            var line = rate(drain.messagesPerSecond) + String(format: " (%.1f s)", drain.seconds)
            if let ceiling {
                line += String(format: ", %.0f%% of ceiling", drain.messagesPerSecond / ceiling.messagesPerSecond * 100)
            }
            rows.append(("drain, cache on", line))
            rows.append(
                (
                    "CPU during drain",
                    drain.cpuPerMessage.summary
                        + String(
                            format: " (%.1f s, %.1f s, %.1f s)",
                            drain.cpuSeconds, drain.postgresCPUSeconds, drain.redisCPUSeconds
                        )
                )
            )
            if let traffic = drain.traffic {
                rows.append(("drain: per batch", traffic.summary(messages: drain.messages)))
            }
            if let pauses = drain.redisPauses {
                rows.append(("Redis busy with one command during drain", pauses.summary))
            }
            if let disk = drain.disk {
                rows.append(("disk during drain: fdatasync p50 / p99 / max", disk.summary))
            }
            if let machine = drain.machine {
                rows.append(("machine during drain", machine.summary))
            }
            rows.append(("peak RSS during drain", String(format: "%.1f MiB", Double(drain.peakRSSBytes) / 1_048_576)))
        }
        if let latency {
            rows.append(("latency: rate", String(format: "%d messages/s target, %.0f achieved, %d messages", latency.rate, latency.achievedRate, latency.count)))
            rows.append(("latency: p50 / p99 / p99.9 / max", "\(format(latency.p50)) / \(format(latency.p99)) / \(format(latency.p999)) / \(format(latency.max)) ms"))
            if let perMessage = latency.cpuPerMessage {
                rows.append(("CPU during latency run", perMessage.summary))
                if let benchmark = latency.benchmarkCPUSeconds {
                    rows.append(
                        (
                            "benchmark's producer and poller",
                            String(format: "%.1f µs per message", benchmark / Double(Swift.max(1, latency.count)) * 1e6)
                        )
                    )
                }
            }
            if let traffic = latency.traffic {
                rows.append(("latency run: per batch", traffic.summary(messages: latency.count)))
            }
            if let disk = latency.disk {
                rows.append(("disk during latency run: fdatasync p50 / p99 / max", disk.summary))
            }
            if let machine = latency.machine {
                rows.append(("machine during latency run", machine.summary))
            }
            if let runs = latency.autovacuum {
                let list = runs.isEmpty ? "none" : runs.map(\.summary).joined(separator: "; ")
                rows.append(("PostgreSQL autovacuum during latency run", list))
            }
            if let writebacks = latency.machine?.writebacks {
                let list = writebacks.isEmpty ? "none" : writebacks.map(\.summary).joined(separator: "; ")
                rows.append(("page cache writebacks during latency run", list))
            }
            if let windows = latency.windows, !windows.isEmpty {
                rows.append(("latency: p99 in 5 s windows", LatencyWindow.summary(windows)))
            }
            if let length = latency.streamLength {
                rows.append(("stream entries left at the end", "\(length) (trimmed every 5 s down to what all groups acknowledged)"))
            }
        }
        if let sweep {
            if let defaults = sweep.defaults {
                rows.append(("drain with the default settings", rate(defaults.messagesPerSecond) + " (no --workers)"))
            }
            // The main drain is one of them: the sweep does not run its count again.
            var drains = sweep.drains.map { (drain: $0, main: false) }
            if let drain, drain.workers != nil { drains.append((drain, true)) }
            drains.sort { ($0.drain.workers ?? 0) < ($1.drain.workers ?? 0) }
            if !drains.isEmpty {
                let list = drains.map { drain, main in
                    "\(drain.workers ?? 0): " + Int(drain.messagesPerSecond.rounded()).formatted() + (main ? " (main drain)" : "")
                }
                rows.append(("drains by --workers", list.joined(separator: ", ") + " messages/s"))
            }
        }
        if let langchain {
            rows.append(contentsOf: langchainRows(langchain))
        }
        if let api {
            for route in api.routes {
                rows.append((
                    "api: " + route.route,
                    String(format: "%.0f requests/s, p50 %.2f ms, p99 %.2f ms", route.requestsPerSecond, route.p50, route.p99)
                        + " (\(api.connections) connections, \(api.pipelineRate) messages/s stored meanwhile)"
                ))
            }
        }
        if let cluster {
            for drain in cluster.drains {
                rows.append((
                    "cluster: \(drain.shards) shards, \(drain.processes) × \(cluster.workers) workers",
                    rate(drain.messagesPerSecond) + ", CPU " + drain.cpuPerMessage.summary
                ))
            }
        }
        for target in targets {
            rows.append(("target: " + target.name, target.summary))
        }
        let width = rows.map(\.0.count).max() ?? 0
        return rows.map { $0.0.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + $0.1 }.joined(separator: "\n")
    }

    private func rate(_ value: Double) -> String {
        "\(Int(value.rounded()).formatted()) messages/s"
    }

    /// Each setting's rate and CPU per message, and the ratios with / without.
    private func langchainRows(_ langchain: LangchainResult) -> [(String, String)] {
        var rows: [(String, String)] = []
        let pairs = Set(langchain.drains.map(\.pair)).count
        for setting in [false, true] {
            guard let speed = langchain.messagesPerSecond(langchain: setting),
                let perMessage = langchain.cpuPerMessage(langchain: setting)
            else { continue }
            // With several pairs, each drain's rate too, in the order they ran.
            let each = langchain.runs(langchain: setting).map { Int($0.messagesPerSecond.rounded()).formatted() }
            let list = each.count > 1 ? " (" + each.joined(separator: ", ") + ")" : ""
            rows.append(("langchain_cache \(setting): drain", rate(speed) + list))
            rows.append(("langchain_cache \(setting): CPU", perMessage.summary))
        }
        if let total = langchain.totalCPURatio, let redis = langchain.redisCPURatio {
            var line = String(format: "total CPU per message %.3f ×, Redis CPU per message %.3f ×", total, redis)
            line += " (\(pairs) pair\(pairs == 1 ? "" : "s"), in the order \(langchain.order)"
            if pairs > 1 {
                let ratios = langchain.pairRatios.map { String(format: "%.3f ×", $0) }
                line += "; each pair's total " + ratios.joined(separator: ", ")
            }
            rows.append(("langchain_cache: with / without", line + ")"))
        }
        return rows
    }

    enum CodingKeys: String, CodingKey {
        case machine, messages, conversations, workers, ceiling, drain, latency, sweep, langchain, api, cluster, targets, bound
        case boundCPUPerMessage = "bound_cpu_us_per_message"
        case redisFloor = "redis_floor"
        case steadyFloor = "steady_floor"
        case daemonOptions = "historian_options"
        case postgresSettings = "postgres_settings"
        case averageContentBytes = "average_content_bytes"
    }

    func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(machine, forKey: .machine)
        try container.encode(messages, forKey: .messages)
        try container.encode(conversations, forKey: .conversations)
        try container.encode(workers, forKey: .workers)
        try container.encode(daemonOptions, forKey: .daemonOptions)
        try container.encode(postgresSettings, forKey: .postgresSettings)
        try container.encode(averageContentBytes, forKey: .averageContentBytes)
        try container.encodeIfPresent(ceiling, forKey: .ceiling)
        try container.encodeIfPresent(redisFloor, forKey: .redisFloor)
        try container.encodeIfPresent(steadyFloor, forKey: .steadyFloor)
        try container.encodeIfPresent(bound, forKey: .bound)
        try container.encodeIfPresent(boundCPUPerMessage, forKey: .boundCPUPerMessage)
        try container.encodeIfPresent(drain, forKey: .drain)
        try container.encodeIfPresent(latency, forKey: .latency)
        try container.encodeIfPresent(sweep, forKey: .sweep)
        try container.encodeIfPresent(langchain, forKey: .langchain)
        try container.encodeIfPresent(api, forKey: .api)
        try container.encodeIfPresent(cluster, forKey: .cluster)
        try container.encode(targets, forKey: .targets)
    }
}

/// CPU time per message of the three processes, in microseconds.
struct CPUPerMessage: Encodable, Equatable {
    var historian: Double
    var postgres: Double
    var redis: Double

    var total: Double { historian + postgres + redis }

    init(historian: Double, postgres: Double, redis: Double) {
        self.historian = historian
        self.postgres = postgres
        self.redis = redis
    }

    /// From CPU seconds over `messages`.
    init(historianSeconds: Double, postgresSeconds: Double, redisSeconds: Double, messages: Int) {
        let perMessage = { (seconds: Double) in seconds / Double(max(1, messages)) * 1e6 }
        self.init(historian: perMessage(historianSeconds), postgres: perMessage(postgresSeconds), redis: perMessage(redisSeconds))
    }

    /// "historian 20.6, PostgreSQL 37.7, Redis 32.4"
    var parts: String {
        String(format: "historian %.1f, PostgreSQL %.1f, Redis %.1f", historian, postgres, redis)
    }

    var summary: String {
        String(format: "%.1f µs per message: ", total) + parts
    }

    enum CodingKeys: String, CodingKey {
        case historian, postgres, redis, total
    }

    func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(historian, forKey: .historian)
        try container.encode(postgres, forKey: .postgres)
        try container.encode(redis, forKey: .redis)
        try container.encode(total, forKey: .total)
    }
}

extension LatencyWindow {
    /// One line for the table: the range of the p99s in the windows that neither the disk nor the
    /// host held up, and in the others.
    static func summary(_ windows: [LatencyWindow]) -> String {
        func range(_ group: [LatencyWindow]) -> String {
            let p99s = group.map(\.p99)
            guard let low = p99s.min(), let high = p99s.max() else { return "" }
            return low == high ? "\(format(low)) ms" : "\(format(low)) to \(format(high)) ms"
        }
        let clean = windows.filter(\.isClean)
        let held = windows.filter { !$0.isClean }
        var parts: [String] = []
        if !clean.isEmpty {
            var part = "\(range(clean)) in the \(clean.count) of \(windows.count) without a slow flush or steal"
            // What production has too, in the clean windows: PostgreSQL's autovacuum, Linux's writebacks.
            let notes = [("autovacuum", \LatencyWindow.autovacuumRuns), ("a writeback", \.writebacks)].compactMap { what, count in
                let touched = clean.filter { $0[keyPath: count] > 0 }.count
                return touched > 0 ? "\(touched) of them with \(what)" : nil
            }
            if !notes.isEmpty { part += " (" + notes.joined(separator: ", ") + ")" }
            parts.append(part)
        }
        if !held.isEmpty {
            parts.append("\(range(held)) in the \(held.count) with one")
        }
        return parts.joined(separator: "; ")
    }
}
