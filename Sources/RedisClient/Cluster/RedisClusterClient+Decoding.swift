extension RedisClusterClient {
    /// Sends one command to the master serving `key`'s slot and hands its reply, in place, to `decode`, as
    /// ``RedisConnection/send(_:timeout:decode:)`` does: for large replies (a stream read) that the caller turns
    /// into its own types. Redirects and retries are those of ``send(_:key:timeout:)``: the same call state
    /// machine decides, told only whether each reply was an error (and which) or a value, so `decode` sees the
    /// final reply alone. An error reply throws ``RedisError`` with code ``RedisError/Code/server``; an error that
    /// `decode` throws is rethrown and leaves the node's connection usable.
    public func send<Decoded: Sendable>(
        _ command: [RedisArgument],
        key: RedisArgument,
        timeout: Duration? = nil,
        decode: @escaping @Sendable (RedisReplyView) throws -> Decoded
    ) async throws -> Decoded {
        guard !command.isEmpty else {
            throw RedisError(code: .protocolError, message: "a command needs at least one argument")
        }
        var machine = RedisClusterCallStateMachine(
            slots: [RedisHashSlot(key: key)],
            deadline: ContinuousClock.now + (timeout ?? configuration.seeds[0].commandTimeout),
            maxRedirects: configuration.maxRedirects
        )
        var map = try await slotMap()
        var decoded: Result<Decoded, any Error>?
        while true {
            switch machine.nextAction(map: map, now: .now) {
            case .finish(let replies):
                if case .error(let text) = replies[0] { throw RedisError(serverReply: text) }
                guard let decoded else {
                    throw RedisError(code: .protocolError, message: "a cluster call finished without a reply")
                }
                return try decoded.get()
            case .learnSlotMap:
                map = try await refreshSlotMap()
            case .wait(let until):
                try await Task.sleep(until: until, clock: .continuous)
            case .send(let dispatches):
                // One command: one node, one entry.
                let dispatch = dispatches[0]
                let asking = dispatch.entries[0].asking
                let outcomes: [DecodedReply<Decoded>]
                do {
                    let connection = try await connection(to: dispatch.endpoint)
                    outcomes = try await connection.pipeline(asking ? [["ASKING"], command] : [command], timeout: timeout) {
                        view in
                        // ASKING's own `OK` goes through here too, and is dropped below.
                        view.kind == .error
                            ? .error(view.withBytes { String(decoding: $0, as: UTF8.self) })
                            : .value(Result { try decode(view) })
                    }
                } catch {
                    nodeFailed(dispatch.endpoint, error: error)
                    throw error
                }
                switch outcomes[outcomes.count - 1] {
                case .error(let text):
                    machine.received(.error(text), forCommand: 0, now: .now)
                case .value(let result):
                    decoded = result
                    // The state machine needs only to know the command is done.
                    machine.received(.null, forCommand: 0, now: .now)
                }
            }
        }
    }
}

/// A reply decoded in place, or the error reply that came instead.
private enum DecodedReply<Decoded: Sendable>: Sendable {
    case value(Result<Decoded, any Error>)
    case error(String)
}
