/// What a ``RedisClusterClient`` knows and holds between calls: the slot map, whether it is stale, the learning
/// in flight, the connection of each node. Kept behind the client's `Mutex`; its methods are the decisions made
/// under that lock, with no I/O.
struct ClusterState: Sendable {
    /// A node's connection, or its connecting, shared by every call that needs that node meanwhile.
    enum PooledConnection: Sendable {
        case connecting(Task<RedisConnection, any Error>)
        case connected(RedisConnection)
    }

    /// What a call does to get a node's connection.
    enum ConnectionLookup {
        /// Use this one.
        case ready(RedisConnection)
        /// Wait for this connecting (perhaps another call's) to finish.
        case pending(Task<RedisConnection, any Error>)
        /// Connect, and record the connecting with ``connecting(_:to:)`` in the same critical section.
        case connect
    }

    /// The slot map last learnt, if any.
    var slotMap: RedisClusterSlotMap?
    /// Whether the next call must relearn the map first (none yet, or a node failed since).
    var slotMapIsStale = true
    /// Counts node failures, so that a learning that started before one does not clear the staleness it causes.
    var failures = 0
    /// The learning of the map in flight, which every call needing the map meanwhile waits for.
    var learning: Task<RedisClusterSlotMap, any Error>?
    var connections: [RedisConfiguration.Endpoint: PooledConnection] = [:]
    /// Nodes whose last connection failed: asked for the map last.
    var unreachable: Set<RedisConfiguration.Endpoint> = []
    var isClosed = false

    /// How a call gets the connection to `endpoint`; a broken connection is replaced.
    func lookUpConnection(to endpoint: RedisConfiguration.Endpoint) -> ConnectionLookup {
        switch connections[endpoint] {
        case .connected(let connection) where !connection.isBroken:
            return .ready(connection)
        case .connecting(let task):
            return .pending(task)
        case .connected, nil:
            return .connect
        }
    }

    /// Records the connecting to `endpoint` that a ``ConnectionLookup/connect`` started.
    mutating func connecting(_ task: Task<RedisConnection, any Error>, to endpoint: RedisConfiguration.Endpoint) {
        connections[endpoint] = .connecting(task)
    }

    /// The connecting `task` succeeded: later calls use its connection. Returns false when the client was closed
    /// meanwhile (the caller closes the connection).
    mutating func connected(
        _ connection: RedisConnection,
        by task: Task<RedisConnection, any Error>,
        to endpoint: RedisConfiguration.Endpoint
    ) -> Bool {
        unreachable.remove(endpoint)
        guard !isClosed else { return false }
        if case .connecting(let pending) = connections[endpoint], pending == task {
            connections[endpoint] = .connected(connection)
        }
        return true
    }

    /// The connecting `task` failed: the next call tries afresh.
    mutating func connectingFailed(_ task: Task<RedisConnection, any Error>, to endpoint: RedisConfiguration.Endpoint) {
        if case .connecting(let pending) = connections[endpoint], pending == task {
            connections[endpoint] = nil
        }
    }

    /// The healthy connection to `endpoint` already made, if any: learning the map reuses it.
    func connectedConnection(to endpoint: RedisConfiguration.Endpoint) -> RedisConnection? {
        if case .connected(let connection) = connections[endpoint], !connection.isBroken {
            return connection
        }
        return nil
    }

    /// A node failed (its connection broke or could not be made): relearn the map on the next call, asking that
    /// node last.
    mutating func nodeFailed(_ endpoint: RedisConfiguration.Endpoint) {
        failures += 1
        slotMapIsStale = true
        unreachable.insert(endpoint)
    }

    /// The nodes to ask for the slot map, in order: the known masters, their replicas, then the seeds; nodes that
    /// failed last.
    func learningCandidates(seeds: [RedisConfiguration.Endpoint]) -> [RedisConfiguration.Endpoint] {
        var seen: Set<RedisConfiguration.Endpoint> = []
        let known = (slotMap?.nodes.map(\.endpoint) ?? []) + seeds
        let ordered = known.filter { seen.insert($0).inserted }
        return ordered.filter { !unreachable.contains($0) } + ordered.filter { unreachable.contains($0) }
    }

    /// A learning that started after `failures` node failures produced `map`: installs it, keeping it stale if a
    /// node failed meanwhile, and returns the connections to close (to nodes that are replicas now: calls go to
    /// masters only).
    mutating func learnt(_ map: RedisClusterSlotMap, startedAfter failuresThen: Int) -> [RedisConnection] {
        learning = nil
        slotMap = map
        slotMapIsStale = failures != failuresThen
        var unused: [RedisConnection] = []
        for replica in map.replicas {
            if case .connected(let connection) = connections[replica.endpoint] {
                connections[replica.endpoint] = nil
                unused.append(connection)
            }
        }
        return unused
    }

    /// Adopts the connection a learning made to a node that `map` names a master and that has no connection yet;
    /// false when it is not wanted (the caller closes it).
    mutating func adopt(
        _ connection: RedisConnection,
        to endpoint: RedisConfiguration.Endpoint,
        masterIn map: RedisClusterSlotMap
    ) -> Bool {
        guard !isClosed, connections[endpoint] == nil, map.masters.contains(where: { $0.endpoint == endpoint }) else {
            return false
        }
        connections[endpoint] = .connected(connection)
        return true
    }
}
