internal import CHiredis

/// A reply read in place from hiredis' `redisReply` tree, for callers that turn large replies
/// straight into their own types instead of into a ``RESPValue`` tree first.
///
/// It is valid only inside the `decode` closure it is passed to (see
/// ``RedisConnection/send(_:timeout:decode:)``): hiredis frees the tree right after. Never let
/// it, or a buffer from ``withBytes(_:)``, escape.
public struct RedisReplyView {
    public enum Kind: Sendable, Hashable {
        case bulkString, simpleString, error, integer, null, array
    }

    /// A `redisReply`; raw so that the hiredis types stay internal to this module.
    private let pointer: UnsafeRawPointer

    init(_ reply: UnsafePointer<redisReply>) {
        self.pointer = UnsafeRawPointer(reply)
    }

    private var reply: redisReply {
        pointer.assumingMemoryBound(to: redisReply.self).pointee
    }

    public var kind: Kind {
        switch reply.type {
        case REDIS_REPLY_STRING: .bulkString
        case REDIS_REPLY_STATUS: .simpleString
        case REDIS_REPLY_ERROR: .error
        case REDIS_REPLY_INTEGER: .integer
        case REDIS_REPLY_ARRAY: .array
        default: .null
        }
    }

    /// The number of elements of an array reply; 0 for any other kind.
    public var count: Int {
        let reply = reply
        return reply.type == REDIS_REPLY_ARRAY ? reply.elements : 0
    }

    /// Element `index` of an array reply, `nil` when out of range or not an array.
    public subscript(index: Int) -> RedisReplyView? {
        let reply = reply
        guard reply.type == REDIS_REPLY_ARRAY, index >= 0, index < reply.elements, let element = reply.element?[index] else {
            return nil
        }
        return RedisReplyView(element)
    }

    /// Calls `body` with the bytes of a bulk string, status or error (empty for other kinds),
    /// without copying them.
    public func withBytes<Result>(_ body: (UnsafeRawBufferPointer) throws -> Result) rethrows -> Result {
        let reply = reply
        switch reply.type {
        case REDIS_REPLY_STRING, REDIS_REPLY_STATUS, REDIS_REPLY_ERROR:
            return try body(UnsafeRawBufferPointer(start: reply.str, count: reply.str == nil ? 0 : reply.len))
        default:
            return try body(UnsafeRawBufferPointer(start: nil, count: 0))
        }
    }

    /// A copy of the bytes of a bulk string or status, else `nil`.
    public var bytes: [UInt8]? {
        switch kind {
        case .bulkString, .simpleString: withBytes { Array($0) }
        default: nil
        }
    }

    /// The whole reply, copied into a ``RESPValue``.
    public var value: RESPValue {
        get throws(RedisError) {
            switch kind {
            case .bulkString:
                return .bulkString(withBytes { Array($0) })
            case .simpleString:
                return .simpleString(withBytes { String(decoding: $0, as: UTF8.self) })
            case .error:
                return .error(withBytes { String(decoding: $0, as: UTF8.self) })
            case .integer:
                return .integer(Int64(reply.integer))
            case .null:
                guard reply.type == REDIS_REPLY_NIL else {
                    throw RedisError(code: .protocolError, message: "unsupported reply type \(reply.type)")
                }
                return .null
            case .array:
                var values: [RESPValue] = []
                values.reserveCapacity(count)
                for index in 0..<count {
                    guard let element = self[index] else {
                        throw RedisError(code: .protocolError, message: "array reply with a missing element")
                    }
                    values.append(try element.value)
                }
                return .array(values)
            }
        }
    }
}
