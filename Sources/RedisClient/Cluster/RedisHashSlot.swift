/// The Redis Cluster hash slot of a key: which of the cluster's 16384 slots, and so which master, serves it.
///
/// The slot is CRC16-XMODEM of the key modulo 16384, as the cluster specification defines it, with its hash-tag
/// rule: when the key has a `{`, a later `}`, and at least one byte between the first `{` and the first `}` after
/// it, only those bytes are hashed, so that keys such as `{user1000}.following` and `{user1000}.followers` share a
/// slot (and a node) and may be used together in one command.
public struct RedisHashSlot: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// How many slots a cluster has.
    public static let count = 16_384

    /// The slot's number, from 0 to 16383.
    public let value: Int

    /// The slot with this number; `nil` outside 0...16383.
    public init?(_ value: Int) {
        guard (0..<Self.count).contains(value) else { return nil }
        self.value = value
    }

    /// The slot that serves `key`.
    public init(key: RedisArgument) {
        self.value = key.withBytes { Self.slot(ofKey: $0) }
    }

    /// The slot that serves the key made of these bytes.
    public init(key: some Collection<UInt8>) {
        self.value = Self.slot(ofKey: key)
    }

    public static func < (left: RedisHashSlot, right: RedisHashSlot) -> Bool {
        left.value < right.value
    }

    /// The slot's number.
    public var description: String {
        String(value)
    }

    /// The hash-tag rule, then CRC16 modulo the slot count (a power of two, hence the mask).
    static func slot(ofKey key: some Collection<UInt8>) -> Int {
        Int(crc16(hashedPart(ofKey: key)) & UInt16(count - 1))
    }

    /// The bytes that are hashed: the hash tag's content when the key has a non-empty one, else the whole key.
    static func hashedPart<Key: Collection<UInt8>>(ofKey key: Key) -> Key.SubSequence {
        guard let open = key.firstIndex(of: UInt8(ascii: "{")) else { return key[...] }
        let afterOpen = key.index(after: open)
        guard let close = key[afterOpen...].firstIndex(of: UInt8(ascii: "}")), close != afterOpen else {
            return key[...]
        }
        return key[afterOpen..<close]
    }

    /// CRC16-XMODEM (CCITT polynomial 0x1021, initial value 0, no reflection, no final XOR), the checksum the
    /// cluster specification names.
    static func crc16(_ bytes: some Sequence<UInt8>) -> UInt16 {
        var crc: UInt16 = 0
        for byte in bytes {
            crc = (crc << 8) ^ crc16Table[Int(UInt8(truncatingIfNeeded: crc >> 8) ^ byte)]
        }
        return crc
    }

    /// The CRC of each byte value, so that `crc16` handles a byte per step instead of a bit.
    private static let crc16Table: [UInt16] = (0...255).map { byte in
        var crc = UInt16(byte) << 8
        for _ in 0..<8 {
            crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1
        }
        return crc
    }
}
