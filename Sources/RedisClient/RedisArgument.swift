/// One argument of a Redis command: raw bytes (values may be arbitrary, non-UTF-8 bytes).
///
/// Deliberately not `CustomStringConvertible` beyond the default: arguments may hold message bodies or passwords,
/// so nothing here renders them as text for logs.
public struct RedisArgument: Sendable, Hashable, ExpressibleByStringLiteral, ExpressibleByIntegerLiteral,
    ExpressibleByStringInterpolation
{
    /// The bytes sent to the server, unchanged.
    public var bytes: [UInt8]

    /// An argument holding exactly these bytes.
    public init(_ bytes: [UInt8]) {
        self.bytes = bytes
    }

    /// An argument holding the UTF-8 encoding of `string`.
    public init(_ string: String) {
        self.bytes = Array(string.utf8)
    }

    /// An argument holding the decimal representation of `int`, as Redis expects numbers.
    public init(_ int: Int) {
        self.bytes = Array(String(int).utf8)
    }

    /// An argument from a string literal, UTF-8 encoded.
    public init(stringLiteral value: String) {
        self.init(value)
    }

    /// An argument from an integer literal, in decimal.
    public init(integerLiteral value: Int) {
        self.init(value)
    }
}
