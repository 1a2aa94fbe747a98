/// A UUID in its canonical lowercase, hyphenated text form.
///
/// Any version is accepted and any case; the value is kept as text because it only ever travels
/// between Redis and PostgreSQL as text.
public struct UUIDText: Sendable, Hashable, Comparable, CustomStringConvertible {
    public let text: String

    /// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` in any case; `nil` for anything else.
    public init?(_ bytes: some Collection<UInt8>) {
        guard bytes.count == 36 else { return nil }
        var valid = true
        // Written straight into the string's storage: one allocation.
        let text = String(unsafeUninitializedCapacity: 36) { canonical in
            for (position, byte) in bytes.enumerated() {
                if position == 8 || position == 13 || position == 18 || position == 23 {
                    guard byte == 0x2D else {
                        valid = false
                        return 0
                    }
                    canonical[position] = byte
                    continue
                }
                switch byte {
                case 0x30...0x39, 0x61...0x66: canonical[position] = byte
                case 0x41...0x46: canonical[position] = byte + 0x20
                default:
                    valid = false
                    return 0
                }
            }
            return 36
        }
        guard valid else { return nil }
        self.text = text
    }

    public init?(_ string: String) {
        self.init(Array(string.utf8))
    }

    /// The UUID's 16 bytes, as PostgreSQL's binary format holds them.
    public var bytes: [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(16)
        var high: UInt8?
        for character in text.utf8 where character != 0x2D {
            // The text is canonical: 0-9 and a-f only.
            let nibble = character <= 0x39 ? character - 0x30 : character - 0x61 + 10
            if let first = high {
                bytes.append(first << 4 | nibble)
                high = nil
            } else {
                high = nibble
            }
        }
        return bytes
    }

    public static func < (lhs: UUIDText, rhs: UUIDText) -> Bool { lhs.text < rhs.text }

    public var description: String { text }
}
