import Foundation
import Historian
import LocalServers
import Logging
import RedisClient

#if canImport(Glibc)
import Glibc
#endif

/// How Historian scales on a Redis Cluster (contract §9): the workload's messages drained by
/// `historian run --once` processes from a local cluster (3 masters with a replica each, as the
/// tests and a production cluster run), once for each number of stream shards and of processes.
/// Each drain starts from a flushed cluster, prefilled with every message on the shard a
/// frontend would choose (`crc32(conversation_id) mod N`), and stores into a new database; it is
/// timed from the processes' start to the last one's exit, and checked afterwards. Redis's CPU
/// is every node's, replicas included.
struct ClusterPhase {
    let servers: BenchmarkServers
    let workload: Workload
    let messages: [WorkloadMessage]
    let executable: String
    /// The daemon's arguments, `--workers` included; the phase adds the cluster's.
    let arguments: [String]
    let workers: Int
    let shardCounts: [Int]
    let processCounts: [Int]

    func run() async throws -> ClusterResult {
        report("cluster: starting a Redis Cluster of 3 masters with a replica each")
        let cluster = try await RedisCluster.start(nodeTimeoutMilliseconds: 5_000)
        let client = try RedisClusterClient(RedisClusterConfiguration(url: cluster.url), logger: Logger(label: "benchmark"))
        do {
            try await cluster.waitUntilReplicasSynced()
            var result = ClusterResult(workers: workers)
            for shards in shardCounts {
                for processes in processCounts {
                    result.drains.append(try await drain(shards: shards, processes: processes, cluster: cluster, client: client))
                }
            }
            client.close()
            try await cluster.destroy()
            return result
        } catch {
            client.close()
            try? await cluster.destroy()
            throw error
        }
    }

    private func drain(shards: Int, processes: Int, cluster: RedisCluster, client: RedisClusterClient) async throws -> ClusterDrain {
        let label = "cluster, \(shards) shard\(shards == 1 ? "" : "s"), \(processes) process\(processes == 1 ? "" : "es")"
        let name = "cluster_\(shards)_\(processes)"
        let database = try await servers.freshDatabase(name)
        defer { database.close() }
        for (node, reply) in try await client.sendToMasters(["FLUSHALL"]) where reply.string != "OK" {
            throw BenchmarkError("\(label): FLUSHALL on \(node.endpoint) answered \(reply)")
        }
        try await prefill(client, shards: shards, label: label)
        _ = try await database.execute("CHECKPOINT")

        report("\(label): \(processes) × historian run --once \(arguments.joined(separator: " "))")
        let before = clusterCPU(cluster)
        let postgresBefore = ServerCPU(servers).postgres
        let start = monotonicNanoseconds()
        var daemons: [(ChildProcess, String)] = []
        for index in 0..<processes {
            let log = try temporaryFile("historian-cluster")
            let daemon = try ChildProcess(
                executable: executable,
                arguments: [
                    "run", "--once", "--redis-url", cluster.url, "--redis-cluster", "true", "--stream-shards", String(shards),
                    "--postgres-url", servers.postgres.url(database: name), "--consumer", "bench-\(index)",
                ] + arguments,
                standardError: log
            )
            daemons.append((daemon, log))
        }
        let deadline = ContinuousClock.now + .seconds(Int64(messages.count / 500 + 600))
        while daemons.contains(where: { $0.0.isRunning }) {
            if ContinuousClock.now > deadline {
                for (daemon, _) in daemons { daemon.signal(SIGKILL) }
                throw BenchmarkError("\(label): historian did not finish; its logs are \(daemons.map(\.1))")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        let seconds = Double(monotonicNanoseconds() - start) / 1e9
        // Lets the historians' backends exit and the postmaster reap them, so their CPU counts.
        try await Task.sleep(for: .milliseconds(300))
        let redisSeconds = clusterCPU(cluster) - before
        let postgresSeconds = ServerCPU(servers).postgres - postgresBefore
        var historianSeconds = 0.0
        for (daemon, log) in daemons {
            guard daemon.exitStatus == 0 else {
                throw BenchmarkError("\(label): historian exited with status \(daemon.exitStatus ?? -1); its log is \(log)")
            }
            keepLogIfNotEmpty(log)
            let usage = daemon.resourceUsage
            historianSeconds += (usage?.userSeconds ?? 0) + (usage?.systemSeconds ?? 0)
        }
        let stored = try await database.query("SELECT count(*) AS count FROM messages")[0, "count"].flatMap { Int($0) } ?? -1
        let deadLetters = try await client.send(["XLEN", "chat:messages:dlq"], key: "chat:messages:dlq").int ?? -1
        guard stored == messages.count, deadLetters == 0 else {
            throw BenchmarkError("\(label): \(stored) of \(messages.count) messages stored, \(deadLetters) dead letters")
        }
        try await servers.postgres.psql("DROP DATABASE \(name) WITH (FORCE)")
        let drain = ClusterDrain(
            shards: shards,
            processes: processes,
            messagesPerSecond: Double(messages.count) / seconds,
            seconds: seconds,
            cpuPerMessage: CPUPerMessage(
                historianSeconds: historianSeconds,
                postgresSeconds: postgresSeconds,
                redisSeconds: redisSeconds,
                messages: messages.count
            )
        )
        report("\(label): \(Int(drain.messagesPerSecond)) messages/s; CPU \(drain.cpuPerMessage.summary)")
        return drain
    }

    /// Every message on its conversation's shard, 1,000 `XADD`s to a pipeline (one per master).
    private func prefill(_ client: RedisClusterClient, shards: Int, label: String) async throws {
        report("\(label): prefilling \(shards) shard\(shards == 1 ? "" : "s") with \(messages.count) entries")
        let keys = (0..<shards).map { RedisArgument(shards == 1 ? "chat:messages" : StreamShard.key("chat:messages", index: $0)) }
        var start = 0
        while start < messages.count {
            var commands: [(key: RedisArgument, command: [RedisArgument])] = []
            for message in messages[start..<min(start + 1000, messages.count)] {
                let fields = workload.fields(of: message)
                let conversation = fields.first { $0.0 == "conversation_id" }?.1 ?? ""
                let key = keys[StreamShard.index(conversationID: conversation, count: shards)]
                var command: [RedisArgument] = ["XADD", key, "*"]
                for (name, value) in fields {
                    command.append(RedisArgument(name))
                    command.append(RedisArgument(value))
                }
                commands.append((key: key, command: command))
            }
            for reply in try await client.pipeline(commands) where reply.string == nil {
                throw BenchmarkError("\(label): XADD failed: \(reply)")
            }
            start += 1000
        }
    }

    /// CPU seconds every node of the cluster has used so far.
    private func clusterCPU(_ cluster: RedisCluster) -> Double {
        cluster.pids.reduce(0) { $0 + (ServerCPU.stat($1)?.own ?? 0) }
    }
}

struct ClusterResult: Encodable {
    /// `--workers` of each process.
    var workers: Int
    var drains: [ClusterDrain] = []
}

struct ClusterDrain: Encodable {
    var shards: Int
    var processes: Int
    var messagesPerSecond: Double
    var seconds: Double
    var cpuPerMessage: CPUPerMessage

    enum CodingKeys: String, CodingKey {
        case shards, processes, seconds
        case messagesPerSecond = "messages_per_second"
        case cpuPerMessage = "cpu_us_per_message"
    }
}
