/// What sends commands to where their keys live: one ``RedisConnection`` (a single Redis, where every key lives
/// on the one server and the key is not looked at), or a ``RedisClusterClient`` (the master serving the key's
/// hash slot).
///
/// Code that speaks in keys (a stream and its group, a conversation's cache keys) takes one of these and runs
/// the same on both; what needs one node's view (`MULTI` over keys of several slots, `SCAN`) asks
/// ``isCluster`` first.
public protocol RoutedRedis: AnyObject, Sendable {
    /// Whether keys of different slots live on different nodes, so that one call (a script, a transaction,
    /// a pipeline's order) cannot span them.
    var isCluster: Bool { get }

    /// Sends one command to where `key` lives and returns its reply; an error reply throws ``RedisError`` with
    /// code ``RedisError/Code/server``.
    func send(_ command: [RedisArgument], key: RedisArgument, timeout: Duration?) async throws -> RESPValue

    /// Sends one command to where `key` lives and hands its reply, in place, to `decode`.
    func send<Decoded: Sendable>(
        _ command: [RedisArgument],
        key: RedisArgument,
        timeout: Duration?,
        decode: @escaping @Sendable (RedisReplyView) throws -> Decoded
    ) async throws -> Decoded

    /// Sends the commands, each to where its key lives, and returns the replies in order, error replies as
    /// `.error` values. On one connection they go in order as one pipeline; on a cluster, one pipeline per
    /// node, ordered only within a node.
    func pipeline(
        _ commands: [(key: RedisArgument, command: [RedisArgument])],
        timeout: Duration?
    ) async throws -> [RESPValue]

    /// Whether it can no longer be used and should be replaced (a broken connection). A cluster client
    /// reconnects to its nodes by itself and is unusable only once closed.
    var isBroken: Bool { get }

    func close()
}

extension RoutedRedis {
    public func send(_ command: [RedisArgument], key: RedisArgument) async throws -> RESPValue {
        try await send(command, key: key, timeout: nil)
    }

    public func send<Decoded: Sendable>(
        _ command: [RedisArgument],
        key: RedisArgument,
        decode: @escaping @Sendable (RedisReplyView) throws -> Decoded
    ) async throws -> Decoded {
        try await send(command, key: key, timeout: nil, decode: decode)
    }

    public func pipeline(_ commands: [(key: RedisArgument, command: [RedisArgument])]) async throws -> [RESPValue] {
        try await pipeline(commands, timeout: nil)
    }
}

extension RedisConnection: RoutedRedis {
    public var isCluster: Bool { false }

    public func send(_ command: [RedisArgument], key: RedisArgument, timeout: Duration?) async throws -> RESPValue {
        try await send(command, timeout: timeout)
    }

    public func send<Decoded: Sendable>(
        _ command: [RedisArgument],
        key: RedisArgument,
        timeout: Duration?,
        decode: @escaping @Sendable (RedisReplyView) throws -> Decoded
    ) async throws -> Decoded {
        try await send(command, timeout: timeout, decode: decode)
    }

    public func pipeline(
        _ commands: [(key: RedisArgument, command: [RedisArgument])],
        timeout: Duration?
    ) async throws -> [RESPValue] {
        try await pipeline(commands.map(\.command), timeout: timeout)
    }
}

extension RedisClusterClient: RoutedRedis {
    public var isCluster: Bool { true }

    public var isBroken: Bool { state.withLock { $0.isClosed } }
}
