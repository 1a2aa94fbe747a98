/// One argument of a Redis command: raw bytes (values may be arbitrary, non-UTF-8 bytes).
///
/// A string argument keeps the string and is encoded straight into the command buffer when
/// sent, so building a large command copies each value once.
///
/// Deliberately not `CustomStringConvertible` beyond the default: arguments may hold message bodies or passwords,
/// so nothing here renders them as text for logs.
public struct RedisArgument: Sendable, Hashable, ExpressibleByStringLiteral, ExpressibleByIntegerLiteral,
    ExpressibleByStringInterpolation
{
    private enum Storage: Sendable {
        case bytes([UInt8])
        case string(String)
    }

    private var storage: Storage

    /// The bytes sent to the server, unchanged.
    public var bytes: [UInt8] {
        get {
            switch storage {
            case .bytes(let bytes): bytes
            case .string(let string): Array(string.utf8)
            }
        }
        set { storage = .bytes(newValue) }
    }

    /// An argument holding exactly these bytes.
    public init(_ bytes: [UInt8]) {
        self.storage = .bytes(bytes)
    }

    /// An argument holding the UTF-8 encoding of `string`.
    public init(_ string: String) {
        self.storage = .string(string)
    }

    /// An argument holding the decimal representation of `int`, as Redis expects numbers.
    public init(_ int: Int) {
        self.storage = .string(String(int))
    }

    /// An argument from a string literal, UTF-8 encoded.
    public init(stringLiteral value: String) {
        self.init(value)
    }

    /// An argument from an integer literal, in decimal.
    public init(integerLiteral value: Int) {
        self.init(value)
    }

    /// Calls `body` with the argument's bytes, without copying them.
    func withBytes<Result>(_ body: (UnsafeRawBufferPointer) throws -> Result) rethrows -> Result {
        switch storage {
        case .bytes(let bytes):
            return try bytes.withUnsafeBytes(body)
        case .string(var string):
            return try string.withUTF8 { try body(UnsafeRawBufferPointer($0)) }
        }
    }

    public static func == (lhs: RedisArgument, rhs: RedisArgument) -> Bool {
        lhs.withBytes { left in rhs.withBytes { right in left.elementsEqual(right) } }
    }

    public func hash(into hasher: inout Hasher) {
        withBytes { hasher.combine(bytes: $0) }
    }
}

/// Encodes commands in the Redis protocol (RESP arrays of bulk strings) into one buffer.
struct RESPCommandEncoder {
    private(set) var buffer: [UInt8] = []

    /// Empties the buffer; keeps its memory for the next commands unless it grew past `limit` bytes.
    mutating func reset(keepingUpTo limit: Int) {
        if buffer.capacity > limit {
            buffer = []
        } else {
            buffer.removeAll(keepingCapacity: true)
        }
    }

    /// Appends one command. The buffer grows as arrays do, and keeps its size across `reset`s,
    /// so a connection's usual commands soon fit without growing it.
    mutating func append(_ command: [RedisArgument]) {
        appendHeader(UInt8(ascii: "*"), command.count)
        for argument in command {
            argument.withBytes { bytes in
                appendHeader(UInt8(ascii: "$"), bytes.count)
                buffer.append(contentsOf: bytes)
            }
            appendLineEnd()
        }
    }

    /// `<marker><decimal>\r\n`.
    private mutating func appendHeader(_ marker: UInt8, _ value: Int) {
        buffer.append(marker)
        // The decimal digits, written backwards into a small buffer: there is a header per
        // argument, and `String(value)` allocates for each.
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { digits in
            var rest = UInt(value)
            var start = 20
            repeat {
                start -= 1
                digits[start] = 0x30 + UInt8(rest % 10)
                rest /= 10
            } while rest > 0
            buffer.append(contentsOf: UnsafeBufferPointer(rebasing: digits[start..<20]))
        }
        appendLineEnd()
    }

    private mutating func appendLineEnd() {
        buffer.append(0x0D)
        buffer.append(0x0A)
    }
}
