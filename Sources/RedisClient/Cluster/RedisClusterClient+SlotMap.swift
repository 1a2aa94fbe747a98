internal import Synchronization

extension RedisClusterClient {
    /// The slot map, learnt first when the client has none or it is stale (a node failed since).
    public func slotMap() async throws -> RedisClusterSlotMap {
        let current = state.withLock { state in state.slotMapIsStale ? nil : state.slotMap }
        if let current {
            return current
        }
        return try await refreshSlotMap()
    }

    /// Learns the slot map anew with `CLUSTER SLOTS`, or waits for the learning already in flight.
    ///
    /// Asks the known masters, their replicas, then the seeds, until one answers with a map serving every slot
    /// (else the one that served most). Throws the last server error when the nodes answered but none with a map
    /// (e.g. cluster support disabled), else ``RedisError/Code/connectionFailed`` when none could be reached.
    @discardableResult
    public func refreshSlotMap() async throws -> RedisClusterSlotMap {
        let learning = try state.withLock { state throws(RedisError) -> Task<RedisClusterSlotMap, any Error> in
            guard !state.isClosed else { throw Self.closedError }
            if let learning = state.learning {
                return learning
            }
            let candidates = state.learningCandidates(seeds: configuration.seeds.map(\.endpoint))
            let failures = state.failures
            let task = Task {
                do {
                    let map = try await self.learnSlotMap(asking: candidates)
                    let unused = self.state.withLock { $0.learnt(map, startedAfter: failures) }
                    for connection in unused { connection.close() }
                    return map
                } catch {
                    self.state.withLock { $0.learning = nil }
                    throw error
                }
            }
            state.learning = task
            return task
        }
        return try await learning.value
    }

    /// Asks `candidates` in order for `CLUSTER SLOTS` until one answers with a complete map.
    private func learnSlotMap(asking candidates: [RedisConfiguration.Endpoint]) async throws -> RedisClusterSlotMap {
        var best: (map: RedisClusterSlotMap, endpoint: RedisConfiguration.Endpoint)?
        var lastServerError: RedisError?
        var lastConnectionError: (any Error)?
        for endpoint in candidates {
            let map: RedisClusterSlotMap
            do {
                map = try await askForSlotMap(endpoint)
            } catch let error as RedisError where error.code == .server || error.code == .protocolError {
                lastServerError = error
                continue
            } catch {
                nodeUnreachable(endpoint)
                lastConnectionError = error
                continue
            }
            if map.servedSlotCount > best?.map.servedSlotCount ?? 0 {
                best = (map, endpoint)
            }
            if map.servedSlotCount == RedisHashSlot.count {
                break
            }
        }
        guard let best else {
            if let lastServerError {
                throw lastServerError
            }
            let reason = (lastConnectionError as? RedisError)?.message ?? lastConnectionError.map { "\($0)" } ?? "none"
            throw RedisError(
                code: .connectionFailed,
                message:
                    "no Redis Cluster node answered CLUSTER SLOTS (asked \(candidates.count)); last error: \(reason)"
            )
        }
        logger.debug(
            "Learnt the Redis Cluster slot map",
            metadata: [
                "redis.endpoint": "\(best.endpoint)",
                "redis.cluster.masters": "\(best.map.masters.count)",
                "redis.cluster.served_slots": "\(best.map.servedSlotCount)",
            ]
        )
        return best.map
    }

    /// One node's `CLUSTER SLOTS`, over its pooled connection when there is one, else over a new connection that
    /// is kept if the node turns out to be a master without one, and closed otherwise.
    private func askForSlotMap(_ endpoint: RedisConfiguration.Endpoint) async throws -> RedisClusterSlotMap {
        let pooled = state.withLock { $0.connectedConnection(to: endpoint) }
        let connection: RedisConnection
        if let pooled {
            connection = pooled
        } else {
            connection = try await RedisConnection.connect(
                configuration.node(endpoint),
                logger: logger,
                traffic: traffic
            )
        }
        do {
            let reply = try await connection.send(["CLUSTER", "SLOTS"])
            let map = try RedisClusterSlotMap(clusterSlotsReply: reply, replyingHost: endpoint.hostForClusterReplies)
            if pooled == nil {
                if !state.withLock({ $0.adopt(connection, to: endpoint, masterIn: map) }) {
                    connection.close()
                }
            }
            return map
        } catch {
            if pooled == nil { connection.close() }
            throw error
        }
    }

    private func nodeUnreachable(_ endpoint: RedisConfiguration.Endpoint) {
        state.withLock { _ = $0.unreachable.insert(endpoint) }
    }
}
