/// A UUID in its canonical lowercase, hyphenated text form.
///
/// Any version is accepted and any case; the value is kept as text because it only ever travels
/// between Redis and PostgreSQL as text.
public struct UUIDText: Sendable, Hashable, Comparable, CustomStringConvertible {
    public let text: String

    /// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` in any case; `nil` for anything else.
    public init?(_ bytes: some Collection<UInt8>) {
        guard bytes.count == 36 else { return nil }
        var canonical = [UInt8]()
        canonical.reserveCapacity(36)
        for (position, byte) in bytes.enumerated() {
            if position == 8 || position == 13 || position == 18 || position == 23 {
                guard byte == 0x2D else { return nil }
                canonical.append(byte)
                continue
            }
            switch byte {
            case 0x30...0x39, 0x61...0x66: canonical.append(byte)
            case 0x41...0x46: canonical.append(byte + 0x20)
            default: return nil
            }
        }
        self.text = String(decoding: canonical, as: UTF8.self)
    }

    public init?(_ string: String) {
        self.init(Array(string.utf8))
    }

    public static func < (lhs: UUIDText, rhs: UUIDText) -> Bool { lhs.text < rhs.text }

    public var description: String { text }
}
