public import Logging
internal import Synchronization

/// A client for a Redis Cluster: routes each command to the master serving its key's hash slot, over one
/// ``RedisConnection`` per master.
///
/// It learns the slot map with `CLUSTER SLOTS` from the first seed that answers, connects to masters lazily and
/// reconnects when a connection broke. It follows `MOVED` (relearning the map) and `ASK` (sending `ASKING` first,
/// leaving the map alone), and retries `TRYAGAIN` and `CLUSTERDOWN` with a short back-off until the call's
/// timeout: a command that got one of those replies did not run, so sending it again is safe.
///
/// A connection failure is different: the command may have run, so it is not resent. The call throws the
/// connection's error and the map is marked stale, so the next call relearns it from any node that answers, which
/// after a failover names the promoted replica.
///
/// The caller names each command's routing key: commands put their keys at different positions (`EVALSHA sha 1
/// key`, `XREADGROUP … STREAMS key id`), and a command's keys must share a slot anyway (hash tags make them).
///
/// Sendable: the slot map and connection table sit behind a `Mutex`; each connection confines itself to its queue.
public final class RedisClusterClient: Sendable {
    let configuration: RedisClusterConfiguration
    let logger: Logger
    let traffic: RedisTrafficObserver?
    let state = Mutex(ClusterState())

    /// A client for the cluster the configuration's seeds belong to; nothing is sent until the first call.
    ///
    /// Throws ``RedisError`` with code ``RedisError/Code/invalidConfiguration`` for a configuration
    /// ``RedisClusterConfiguration/init(seeds:maxRedirects:)`` would refuse (seeds changed since). `traffic`, when
    /// given, is told what each node's connection sends (see ``RedisTraffic``).
    public init(
        _ configuration: RedisClusterConfiguration,
        logger: Logger,
        traffic: RedisTrafficObserver? = nil
    ) throws {
        try configuration.validate()
        self.configuration = configuration
        self.logger = logger
        self.traffic = traffic
    }

    /// Sends one command to the master serving `key`'s slot and returns its reply; an error reply throws
    /// ``RedisError`` with code ``RedisError/Code/server``, as ``RedisConnection/send(_:timeout:)`` does.
    ///
    /// `timeout` bounds each read and write, as on a connection, and also how long `TRYAGAIN`/`CLUSTERDOWN` are
    /// retried; it defaults to the first seed's command timeout. A connection failure throws and is not retried.
    public func send(
        _ command: [RedisArgument],
        key: RedisArgument,
        timeout: Duration? = nil
    ) async throws -> RESPValue {
        try await send(command, slot: RedisHashSlot(key: key), timeout: timeout)
    }

    /// Sends one command to the master serving `slot`; see ``send(_:key:timeout:)``.
    public func send(
        _ command: [RedisArgument],
        slot: RedisHashSlot,
        timeout: Duration? = nil
    ) async throws -> RESPValue {
        let reply = try await execute([command], slots: [slot], timeout: timeout)[0]
        if case .error(let text) = reply {
            throw RedisError(serverReply: text)
        }
        return reply
    }

    /// Sends the commands, each to the master serving its key's slot, and returns the replies in the caller's
    /// order; error replies come back as `.error` values, as ``RedisConnection/pipeline(_:timeout:)`` returns them.
    ///
    /// Each node's share goes out as one pipeline on its connection, node after node; commands of one node keep
    /// their order among themselves, but not across nodes, nor when some are redirected. Only connection-level
    /// failures throw (some commands may then have run), and they mark the slot map stale. A command redirected
    /// more than ``RedisClusterConfiguration/maxRedirects`` times gets its last `MOVED`/`ASK` reply as its result;
    /// one still refused with `TRYAGAIN`/`CLUSTERDOWN` at the timeout gets that reply, and one whose slot no known
    /// master serves by then gets `CLUSTERDOWN Hash slot not served`, as Redis itself answers.
    public func pipeline(
        _ commands: [(key: RedisArgument, command: [RedisArgument])],
        timeout: Duration? = nil
    ) async throws -> [RESPValue] {
        try await execute(commands.map(\.command), slots: commands.map { RedisHashSlot(key: $0.key) }, timeout: timeout)
    }

    /// Sends the commands, each to the master serving its slot; see the form taking keys.
    public func pipeline(
        _ commands: [(slot: RedisHashSlot, command: [RedisArgument])],
        timeout: Duration? = nil
    ) async throws -> [RESPValue] {
        try await execute(commands.map(\.command), slots: commands.map(\.slot), timeout: timeout)
    }

    /// Sends one command to every master (e.g. `SCRIPT LOAD`, `WAIT`, `DBSIZE`), node after node, and returns each
    /// master's reply, error replies as `.error` values; no redirect is followed.
    ///
    /// A connection failure throws (the command may have run on some masters) and marks the slot map stale.
    public func sendToMasters(
        _ command: [RedisArgument],
        timeout: Duration? = nil
    ) async throws -> [(node: RedisClusterNode, reply: RESPValue)] {
        try Self.check(command)
        let masters = try await slotMap().masters
        let dispatches = masters.map {
            RedisClusterCallStateMachine.Dispatch(endpoint: $0.endpoint, entries: [.init(index: 0, asking: false)])
        }
        let replies = try await send(dispatches, commands: [command], timeout: timeout)
        return zip(masters, replies).map { ($0, $1[0]) }
    }

    /// Sends one command to the node at `endpoint` as it is, following no redirect (e.g. `SCAN` node by node, with
    /// ``masters()``); an error reply throws ``RedisError`` with code ``RedisError/Code/server``.
    public func send(
        _ command: [RedisArgument],
        to endpoint: RedisConfiguration.Endpoint,
        timeout: Duration? = nil
    ) async throws -> RESPValue {
        try Self.check(command)
        let dispatch = RedisClusterCallStateMachine.Dispatch(
            endpoint: endpoint,
            entries: [.init(index: 0, asking: false)]
        )
        let reply = try await send([dispatch], commands: [command], timeout: timeout)[0][0]
        if case .error(let text) = reply {
            throw RedisError(serverReply: text)
        }
        return reply
    }

    /// The masters serving slots, learning the slot map first if the client has none or it is stale.
    public func masters() async throws -> [RedisClusterNode] {
        try await slotMap().masters
    }

    /// Every node of the slot map last learnt, masters first; empty before the first call learnt one. No I/O.
    public var nodes: [RedisClusterNode] {
        state.withLock { $0.slotMap?.nodes ?? [] }
    }

    /// Closes every node's connection; idempotent. Later calls throw ``RedisError/Code/connectionClosed``.
    public func close() {
        let connections = state.withLock { state in
            state.isClosed = true
            defer { state.connections = [:] }
            return Array(state.connections.values)
        }
        for connection in connections {
            switch connection {
            case .connected(let connection):
                connection.close()
            case .connecting(let task):
                Task { try? await task.value.close() }
            }
        }
        logger.debug("Closed Redis Cluster client", metadata: ["redis.cluster.connections": "\(connections.count)"])
    }

    // MARK: - Running a call

    /// Runs the call's state machine: routes, sends each round's shares to their nodes, relearns the map, backs off.
    private func execute(
        _ commands: [[RedisArgument]],
        slots: [RedisHashSlot],
        timeout: Duration?
    ) async throws -> [RESPValue] {
        guard !commands.isEmpty else { return [] }
        for command in commands {
            try Self.check(command)
        }
        let deadline = ContinuousClock.now + (timeout ?? configuration.seeds[0].commandTimeout)
        var machine = RedisClusterCallStateMachine(
            slots: slots,
            deadline: deadline,
            maxRedirects: configuration.maxRedirects
        )
        var map = try await slotMap()
        while true {
            switch machine.nextAction(map: map, now: .now) {
            case .finish(let replies):
                return replies
            case .learnSlotMap:
                logger.debug("Redis Cluster slots moved or not served; relearning the slot map")
                map = try await refreshSlotMap()
            case .wait(let until):
                try await Task.sleep(until: until, clock: .continuous)
            case .send(let dispatches):
                let replies = try await send(dispatches, commands: commands, timeout: timeout)
                let now = ContinuousClock.now
                for (dispatch, replies) in zip(dispatches, replies) {
                    for (entry, reply) in zip(dispatch.entries, replies) {
                        machine.received(reply, forCommand: entry.index, now: now)
                    }
                }
            }
        }
    }

    /// Sends each node its share, one node after the other, and returns each share's replies (without the
    /// `ASKING` ones). Every node is tried, then the first failure, if any, is thrown.
    ///
    /// One after the other: a node's connection blocks while its pipeline is out, and on a worker's thread (see
    /// `BlockingThreadExecutor`) the shares would run one at a time anyway.
    private func send(
        _ dispatches: [RedisClusterCallStateMachine.Dispatch],
        commands: [[RedisArgument]],
        timeout: Duration?
    ) async throws -> [[RESPValue]] {
        var results: [[RESPValue]] = []
        results.reserveCapacity(dispatches.count)
        var failure: (any Error)?
        for dispatch in dispatches {
            do {
                results.append(try await send(dispatch, commands: commands, timeout: timeout))
            } catch {
                failure = failure ?? error
                results.append([])
            }
        }
        if let failure { throw failure }
        return results
    }

    /// Sends one node its share as one pipeline, `ASKING` before the commands that need it.
    private func send(
        _ dispatch: RedisClusterCallStateMachine.Dispatch,
        commands: [[RedisArgument]],
        timeout: Duration?
    ) async throws -> [RESPValue] {
        var wire: [[RedisArgument]] = []
        wire.reserveCapacity(dispatch.entries.count)
        for entry in dispatch.entries {
            if entry.asking {
                wire.append(["ASKING"])
            }
            wire.append(commands[entry.index])
        }
        let replies: [RESPValue]
        do {
            let connection = try await connection(to: dispatch.endpoint)
            replies = try await connection.pipeline(wire, timeout: timeout)
        } catch {
            nodeFailed(dispatch.endpoint, error: error)
            throw error
        }
        var results: [RESPValue] = []
        results.reserveCapacity(dispatch.entries.count)
        var position = 0
        for entry in dispatch.entries {
            // ASKING's own reply (OK) is not the caller's.
            position += entry.asking ? 1 : 0
            results.append(replies[position])
            position += 1
        }
        return results
    }

    /// Refuses an empty command before anything is sent, as a connection would.
    private static func check(_ command: [RedisArgument]) throws(RedisError) {
        guard !command.isEmpty else {
            throw RedisError(code: .protocolError, message: "a command needs at least one argument")
        }
    }

    static let closedError = RedisError(code: .connectionClosed, message: "the Redis Cluster client is closed")
}
