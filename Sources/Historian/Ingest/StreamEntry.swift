/// The ID of a Redis stream entry: `milliseconds-sequence`.
public struct StreamID: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var milliseconds: UInt64
    public var sequence: UInt64

    public init(milliseconds: UInt64, sequence: UInt64) {
        self.milliseconds = milliseconds
        self.sequence = sequence
    }

    public init?(_ text: some StringProtocol) {
        var text = String(text)
        guard let id = text.withUTF8({ StreamID(ascii: UnsafeRawBufferPointer($0)) }) else { return nil }
        self = id
    }

    /// Parses `milliseconds-sequence` from ASCII bytes, as Redis sends IDs.
    public init?(ascii bytes: UnsafeRawBufferPointer) {
        var parts: (UInt64, UInt64) = (0, 0)
        var part = 0
        var digits = 0
        for byte in bytes {
            if byte == 0x2D, part == 0, digits > 0 {
                part = 1
                digits = 0
                continue
            }
            guard byte >= 0x30, byte <= 0x39 else { return nil }
            let (times10, overflow1) = (part == 0 ? parts.0 : parts.1).multipliedReportingOverflow(by: 10)
            let (sum, overflow2) = times10.addingReportingOverflow(UInt64(byte - 0x30))
            guard !overflow1, !overflow2 else { return nil }
            if part == 0 { parts.0 = sum } else { parts.1 = sum }
            digits += 1
        }
        guard part == 1, digits > 0 else { return nil }
        self.init(milliseconds: parts.0, sequence: parts.1)
    }

    public static let zero = StreamID(milliseconds: 0, sequence: 0)

    public static func < (lhs: StreamID, rhs: StreamID) -> Bool {
        (lhs.milliseconds, lhs.sequence) < (rhs.milliseconds, rhs.sequence)
    }

    public var description: String { "\(milliseconds)-\(sequence)" }
}

/// One entry read from the ingest stream: its ID and its fields exactly as Redis holds them.
public struct StreamEntry: Sendable, Hashable {
    public struct Field: Sendable, Hashable {
        public var name: [UInt8]
        public var value: [UInt8]

        public init(name: [UInt8], value: [UInt8]) {
            self.name = name
            self.value = value
        }

        /// The contract's field names, each one array that every entry shares.
        static let knownNames: [[UInt8]] = [
            "message_id", "conversation_id", "user_id", "role", "content", "created_at", "session_id", "dept_id",
            "title", "tokens_used", "latency_ms", "metadata", "contexts",
        ]
        .map { Array($0.utf8) }

        /// A field name read from a reply: the shared array when it is one of the contract's,
        /// else a copy.
        static func name(copying bytes: UnsafeRawBufferPointer) -> [UInt8] {
            for known in knownNames where known.count == bytes.count {
                if known.withUnsafeBytes({ $0.elementsEqual(bytes) }) { return known }
            }
            return Array(bytes)
        }
    }

    public var id: StreamID
    public var fields: [Field]

    public init(id: StreamID, fields: [Field]) {
        self.id = id
        self.fields = fields
    }

    public init(id: StreamID, _ pairs: KeyValuePairs<String, String>) {
        self.id = id
        self.fields = pairs.map { Field(name: Array($0.key.utf8), value: Array($0.value.utf8)) }
    }

    /// The bytes of the entry's field names and values, as Redis sends them (without framing).
    public var bytes: Int { fields.reduce(0) { $0 + $1.name.count + $1.value.count } }

    /// The value of the first field with this name; a repeated field name keeps its first value.
    public subscript(name: String) -> [UInt8]? {
        var name = name
        return name.withUTF8 { key in
            fields.first { field in
                field.name.count == key.count
                    && field.name.withUnsafeBytes { $0.elementsEqual(UnsafeRawBufferPointer(key)) }
            }?.value
        }
    }
}
