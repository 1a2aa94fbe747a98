import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A throwaway Redis Cluster on loopback: `masters` masters with `replicasPerMaster` replicas
/// each, every node a `redis-server --cluster-enabled yes` on a free port with its data in a
/// temporary directory, joined by `redis-cli --cluster create`. A short `cluster-node-timeout`
/// lets a replica take over within seconds of its master's death.
public final class RedisCluster: Sendable {
    /// One node: its port and process.
    public struct Node: Sendable {
        public let port: Int
        public let directory: String
        public var address: String { "127.0.0.1:\(port)" }
    }

    public let nodes: [Node]
    /// The cluster's directory, holding one directory per node.
    public let directory: String
    /// `redis://127.0.0.1:PORT,127.0.0.1:PORT,…`: every node, as seeds.
    public var url: String { "redis://" + nodes.map(\.address).joined(separator: ",") }
    /// The milliseconds after which an unreachable master counts as failed.
    public let nodeTimeoutMilliseconds: Int
    /// The replicas each master was given at the start.
    public let replicasPerMaster: Int

    private let executable: String
    private let client: String
    private let processes: Mutex<[Int: ChildProcess]>

    private init(
        executable: String,
        client: String,
        nodes: [Node],
        directory: String,
        nodeTimeoutMilliseconds: Int,
        replicasPerMaster: Int
    ) {
        self.executable = executable
        self.replicasPerMaster = replicasPerMaster
        self.client = client
        self.nodes = nodes
        self.directory = directory
        self.nodeTimeoutMilliseconds = nodeTimeoutMilliseconds
        self.processes = Mutex([:])
    }

    /// Starts the nodes, creates the cluster and waits until every node sees all slots served.
    ///
    /// A free port can be taken between the moment it is found and the node's bind (by a server
    /// another test starts at the same time), and then `redis-cli --cluster create` meets a node
    /// that is not this cluster's: such a start is undone and tried again on other ports.
    public static func start(
        masters: Int = 3,
        replicasPerMaster: Int = 1,
        nodeTimeoutMilliseconds: Int = 1_000
    ) async throws -> RedisCluster {
        var attempt = 1
        while true {
            do {
                return try await startOnce(
                    masters: masters,
                    replicasPerMaster: replicasPerMaster,
                    nodeTimeoutMilliseconds: nodeTimeoutMilliseconds
                )
            } catch let error as LocalServerError where attempt < 3 {
                FileHandle.standardError.write(Data("RedisCluster: start failed, trying other ports: \(error)\n".utf8))
                attempt += 1
            }
        }
    }

    private static func startOnce(
        masters: Int,
        replicasPerMaster: Int,
        nodeTimeoutMilliseconds: Int
    ) async throws -> RedisCluster {
        guard let executable = LocalProcess.find("redis-server") else {
            throw LocalServerError("redis-server is not installed: run `apt-get install -y redis-server` (or scripts/test)")
        }
        guard let client = LocalProcess.find("redis-cli") else {
            throw LocalServerError("redis-cli is not installed: run `apt-get install -y redis-tools` (or scripts/test)")
        }
        let directory = try LocalProcess.makeTemporaryDirectory(prefix: "historian-redis-cluster")
        var nodes: [Node] = []
        var ports = Set<Int>()
        for index in 0..<(masters * (1 + replicasPerMaster)) {
            var port = try Loopback.freePort()
            // Each node also listens on port + 10000 (the cluster bus).
            while ports.contains(port) || port + 10_000 > 65_535 { port = try Loopback.freePort() }
            ports.insert(port)
            let nodeDirectory = directory + "/node-\(index)"
            try FileManager.default.createDirectory(atPath: nodeDirectory, withIntermediateDirectories: true)
            nodes.append(Node(port: port, directory: nodeDirectory))
        }
        let cluster = RedisCluster(
            executable: executable,
            client: client,
            nodes: nodes,
            directory: directory,
            nodeTimeoutMilliseconds: nodeTimeoutMilliseconds,
            replicasPerMaster: replicasPerMaster
        )
        do {
            for node in nodes { try await cluster.launch(node) }
            try await LocalProcess.run(
                client,
                ["--cluster", "create"] + nodes.map(\.address)
                    + ["--cluster-replicas", String(replicasPerMaster), "--cluster-yes"]
            )
            try await cluster.waitUntilHealthy(timeout: .seconds(60))
            try await cluster.waitUntilReplicasSynced(timeout: .seconds(60))
        } catch {
            try? await cluster.destroy()
            throw error
        }
        return cluster
    }

    /// The process IDs of the nodes running now (to read their CPU time).
    public var pids: [pid_t] {
        processes.withLock { processes in processes.values.filter(\.isRunning).map(\.pid) }
    }

    /// The nodes that are masters now, as the first live node reports them.
    public func masters() async throws -> [(id: String, port: Int)] {
        try await clusterNodes().filter { $0.flags.contains("master") && !$0.flags.contains("fail") }.map { ($0.id, $0.port) }
    }

    /// Every node's line of `CLUSTER NODES`, from the first node that answers: ID, port, flags,
    /// and the slot ranges it serves.
    public func clusterNodes() async throws -> [(id: String, port: Int, flags: Set<String>, slots: [String])] {
        for node in nodes where isRunning(node) {
            guard let text = try? await cli(node, ["CLUSTER", "NODES"]) else { continue }
            return text.split(whereSeparator: \.isNewline).compactMap { line in
                let fields = line.split(separator: " ").map(String.init)
                guard fields.count >= 8 else { return nil }
                // 127.0.0.1:PORT@BUS
                let address = fields[1].split(separator: "@").first ?? ""
                guard let port = address.split(separator: ":").last.flatMap({ Int($0) }) else { return nil }
                let flags = Set(fields[2].split(separator: ",").map { $0 == "myself" ? "" : String($0) }.filter { !$0.isEmpty })
                return (fields[0], port, flags, Array(fields.dropFirst(8)))
            }
        }
        throw LocalServerError("no node of the cluster answers CLUSTER NODES")
    }

    /// The master serving `slot` now.
    public func master(ofSlot slot: Int) async throws -> (id: String, port: Int) {
        for node in try await clusterNodes() where node.flags.contains("master") && !node.flags.contains("fail") {
            for range in node.slots where !range.hasPrefix("[") {
                let bounds = range.split(separator: "-").compactMap { Int($0) }
                if let low = bounds.first, slot >= low, slot <= (bounds.last ?? low) { return (node.id, node.port) }
            }
        }
        throw LocalServerError("no master serves slot \(slot)")
    }

    /// Kills the node on `port` with SIGKILL, as a crash would.
    public func kill(port: Int) async throws {
        let process = processes.withLock { processes in processes.removeValue(forKey: port) }
        process?.signal(SIGKILL)
        _ = try await process?.wait(timeout: .seconds(10))
    }

    /// Starts the node on `port` again after `kill(port:)`; it rejoins with its `nodes.conf`
    /// (as a replica, if another node took its place meanwhile).
    public func restart(port: Int) async throws {
        guard let node = nodes.first(where: { $0.port == port }) else { throw LocalServerError("no node on port \(port)") }
        try await launch(node)
    }

    /// Waits until the slots the node on `port` served (it was killed) are served by another
    /// master, a replica of it promoted, and the cluster is healthy again.
    public func waitForFailover(of port: Int, timeout: Duration = .seconds(60)) async throws {
        let deadline = ContinuousClock.now + timeout
        while true {
            let serving = (try? await clusterNodes())?.filter { $0.flags.contains("master") && !$0.slots.isEmpty }
            if let serving, !serving.contains(where: { $0.port == port }) {
                try await waitUntilHealthy(timeout: max(.seconds(1), deadline - ContinuousClock.now))
                return
            }
            if ContinuousClock.now > deadline {
                throw LocalServerError("no replica took over from the master on port \(port) within \(timeout)")
            }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    /// Waits until every running node reports `cluster_state:ok` and sees every slot served.
    public func waitUntilHealthy(timeout: Duration = .seconds(60)) async throws {
        let deadline = ContinuousClock.now + timeout
        while true {
            var healthy = true
            for node in nodes where isRunning(node) {
                let info = (try? await cli(node, ["CLUSTER", "INFO"])) ?? ""
                if !info.contains("cluster_state:ok") || !info.contains("cluster_slots_ok:16384") {
                    healthy = false
                    break
                }
            }
            if healthy { return }
            if ContinuousClock.now > deadline {
                throw LocalServerError("the Redis Cluster in \(directory) did not become healthy within \(timeout)")
            }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    /// Waits until every running replica's link to its master is up (its first sync done).
    public func waitUntilReplicasSynced(timeout: Duration = .seconds(60)) async throws {
        let deadline = ContinuousClock.now + timeout
        for node in nodes where isRunning(node) {
            while true {
                let info = (try? await cli(node, ["INFO", "replication"])) ?? ""
                if info.contains("role:master") || info.contains("master_link_status:up") { break }
                if ContinuousClock.now > deadline {
                    throw LocalServerError("the replica on port \(node.port) did not sync within \(timeout)")
                }
                try await Task.sleep(for: .milliseconds(100))
            }
        }
    }

    /// Moves `slots` slots from one master to another with `redis-cli --cluster reshard`, key
    /// by key (`MIGRATE`), while clients go on: they meet `ASK` and then `MOVED` meanwhile.
    public func reshard(slots: Int, from source: String, to destination: String) async throws {
        guard let seed = nodes.first(where: { isRunning($0) }) else { throw LocalServerError("no node is running") }
        try await LocalProcess.run(
            client,
            [
                "--cluster", "reshard", seed.address, "--cluster-from", source, "--cluster-to", destination,
                "--cluster-slots", String(slots), "--cluster-yes", "--cluster-pipeline", "10",
            ]
        )
    }

    /// `redis-cli -p PORT ARGS…` on one node; its output.
    public func cli(_ node: Node, _ arguments: [String]) async throws -> String {
        try await LocalProcess.run(client, ["-p", String(node.port)] + arguments)
    }

    /// Stops every node and removes the cluster's directory.
    public func destroy() async throws {
        let running = processes.withLock { processes in defer { processes = [:] }; return Array(processes.values) }
        for process in running { process.signal(SIGKILL) }
        for process in running { _ = try? await process.wait(timeout: .seconds(10)) }
        try? FileManager.default.removeItem(atPath: directory)
    }

    private func isRunning(_ node: Node) -> Bool {
        processes.withLock { $0[node.port]?.isRunning ?? false }
    }

    private func launch(_ node: Node) async throws {
        let child = try ChildProcess(
            executable: executable,
            arguments: [
                "--port", "\(node.port)",
                "--bind", "127.0.0.1",
                "--dir", node.directory,
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "\(nodeTimeoutMilliseconds)",
                // A replica may take over however long its link was down (a test kills a master
                // whenever it likes), and its first sync starts at once rather than after 5 s.
                "--cluster-replica-validity-factor", "0",
                "--repl-diskless-sync-delay", "0",
                "--save", "",
                "--appendonly", "no",
                "--daemonize", "no",
                "--logfile", node.directory + "/redis.log",
            ]
        )
        processes.withLock { $0[node.port] = child }
        do {
            try await LocalProcess.wait(for: .seconds(20), "redis-server (cluster node) on port \(node.port)") {
                guard child.isRunning else { return true }
                return LocalProcess.redisInline(port: node.port, "PING") == "+PONG"
            }
        } catch {
            child.signal(SIGKILL)
            throw error
        }
        guard child.isRunning else {
            processes.withLock { $0[node.port] = nil }
            let log = (try? String(contentsOfFile: node.directory + "/redis.log", encoding: .utf8)) ?? ""
            throw LocalServerError("redis-server (cluster node) exited on start: \(log.suffix(1000))")
        }
    }

    deinit {
        processes.withLock { processes in
            for process in processes.values { process.signal(SIGKILL) }
        }
    }
}
