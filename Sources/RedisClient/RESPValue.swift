/// A reply, decoded from hiredis' `redisReply` tree.
public enum RESPValue: Sendable, Hashable {
    /// A status reply such as `OK`.
    case simpleString(String)
    /// A bulk string, byte-exact (may be arbitrary, non-UTF-8 bytes).
    case bulkString([UInt8])
    /// An integer reply.
    case integer(Int64)
    /// An array reply; elements may themselves be arrays.
    case array([RESPValue])
    /// A nil bulk string or nil array.
    case null
    /// An error reply, kept as a value inside pipelines and `EXEC` results.
    case error(String)

    /// The text of a bulk or simple string, or `nil` if it is another kind or not valid UTF-8.
    public var string: String? {
        switch self {
        case .simpleString(let text):
            return text
        case .bulkString(let bytes):
            return String(validating: bytes, as: UTF8.self)
        default:
            return nil
        }
    }

    /// The bytes of a bulk string (or the UTF-8 bytes of a simple string), else `nil`.
    public var bytes: [UInt8]? {
        switch self {
        case .bulkString(let bytes):
            return bytes
        case .simpleString(let text):
            return Array(text.utf8)
        default:
            return nil
        }
    }

    /// An integer reply, or a bulk string holding a decimal integer, else `nil`.
    public var int: Int64? {
        switch self {
        case .integer(let value):
            return value
        case .bulkString(let bytes):
            return String(validating: bytes, as: UTF8.self).flatMap { Int64($0) }
        default:
            return nil
        }
    }

    /// The elements of an array reply, else `nil` (a nil array is `.null`, so also `nil` here).
    public var array: [RESPValue]? {
        if case .array(let elements) = self {
            return elements
        }
        return nil
    }

    /// Whether this is a nil bulk string or nil array.
    public var isNull: Bool {
        self == .null
    }
}
