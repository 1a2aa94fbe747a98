internal import Synchronization

extension RedisClusterClient {
    /// The connection to the node at `endpoint`: the one already made, else a new one (shared with every call that
    /// needs the node meanwhile). Throws the connecting's error; the caller marks the node failed.
    func connection(to endpoint: RedisConfiguration.Endpoint) async throws -> RedisConnection {
        let lookup = try state.withLock { state throws(RedisError) -> ClusterState.ConnectionLookup in
            guard !state.isClosed else { throw Self.closedError }
            let lookup = state.lookUpConnection(to: endpoint)
            guard case .connect = lookup else { return lookup }
            let configuration = configuration.node(endpoint)
            let task = Task { [logger, traffic] in
                try await RedisConnection.connect(configuration, logger: logger, traffic: traffic)
            }
            state.connecting(task, to: endpoint)
            return .pending(task)
        }
        switch lookup {
        case .ready(let connection):
            return connection
        case .pending(let task):
            let connection: RedisConnection
            do {
                connection = try await task.value
            } catch {
                state.withLock { $0.connectingFailed(task, to: endpoint) }
                throw error
            }
            guard state.withLock({ $0.connected(connection, by: task, to: endpoint) }) else {
                connection.close()
                throw Self.closedError
            }
            return connection
        case .connect:
            preconditionFailure("a connecting is always started under the lock")
        }
    }

    /// A node's connection broke or could not be made: the next call relearns the slot map first.
    func nodeFailed(_ endpoint: RedisConfiguration.Endpoint, error: any Error) {
        let code = (error as? RedisError)?.code.description ?? "unknown"
        state.withLock { $0.nodeFailed(endpoint) }
        logger.debug(
            "Redis Cluster node failed; the slot map is relearnt on the next call",
            metadata: ["redis.endpoint": "\(endpoint)", "redis.error.code": "\(code)"]
        )
    }
}
