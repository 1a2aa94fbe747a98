/// The ID of a Redis stream entry: `milliseconds-sequence`.
public struct StreamID: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var milliseconds: UInt64
    public var sequence: UInt64

    public init(milliseconds: UInt64, sequence: UInt64) {
        self.milliseconds = milliseconds
        self.sequence = sequence
    }

    public init?(_ text: some StringProtocol) {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 2, let milliseconds = UInt64(parts[0]), let sequence = UInt64(parts[1]) else {
            return nil
        }
        self.init(milliseconds: milliseconds, sequence: sequence)
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

    /// The value of the first field with this name; a repeated field name keeps its first value.
    public subscript(name: String) -> [UInt8]? {
        let key = name.utf8
        return fields.first { $0.name.count == key.count && $0.name.elementsEqual(key) }?.value
    }
}
