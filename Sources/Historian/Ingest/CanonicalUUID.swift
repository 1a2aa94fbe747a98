/// A UUID, held as its 128 bits and written in its canonical lowercase, hyphenated text form.
///
/// Any version is accepted and any case. Message and conversation IDs are hashed, compared and
/// sorted many times per batch; as an integer, that costs no allocation and no string
/// comparison. Its order is that of the canonical text and of PostgreSQL's `uuid` (byte by
/// byte), so arrays sorted here arrive in the order PostgreSQL takes locks in.
public struct CanonicalUUID: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// The 16 bytes, the first one most significant.
    public let value: UInt128

    public init(value: UInt128) {
        self.value = value
    }

    /// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` in any case; `nil` for anything else.
    public init?(_ bytes: some Collection<UInt8>) {
        guard
            let parsed = bytes.withContiguousStorageIfAvailable({ Self.parse(UnsafeRawBufferPointer($0)) })
                ?? Array(bytes).withUnsafeBytes({ Self.parse($0) })
        else { return nil }
        self = parsed
    }

    private static func parse(_ bytes: UnsafeRawBufferPointer) -> CanonicalUUID? {
        guard bytes.count == 36 else { return nil }
        var value: UInt128 = 0
        for position in 0..<36 {
            let byte = bytes[position]
            if isHyphen(position) {
                guard byte == 0x2D else { return nil }
                continue
            }
            let nibble: UInt8
            switch byte {
            case 0x30...0x39: nibble = byte - 0x30
            case 0x61...0x66: nibble = byte - 0x61 + 10
            case 0x41...0x46: nibble = byte - 0x41 + 10
            default: return nil
            }
            value = value << 4 | UInt128(nibble)
        }
        return CanonicalUUID(value: value)
    }

    /// Where the canonical text has its hyphens.
    private static func isHyphen(_ position: Int) -> Bool {
        position == 8 || position == 13 || position == 18 || position == 23
    }

    public init?(_ string: String) {
        self.init(string.utf8)
    }

    /// The canonical text, 36 bytes.
    public var text: String {
        String(unsafeUninitializedCapacity: 36) { buffer in
            write(into: buffer)
            return 36
        }
    }

    /// Appends the canonical text, without making a `String` of it.
    public func appendText(to out: inout [UInt8]) {
        let start = out.count
        out.append(contentsOf: repeatElement(0, count: 36))
        out.withUnsafeMutableBufferPointer { buffer in
            write(into: UnsafeMutableBufferPointer(rebasing: buffer[start..<start + 36]))
        }
    }

    private func write(into buffer: UnsafeMutableBufferPointer<UInt8>) {
        var position = 36
        var rest = value
        while position > 0 {
            position -= 1
            if Self.isHyphen(position) {
                buffer[position] = 0x2D
                continue
            }
            let nibble = UInt8(truncatingIfNeeded: rest & 0xF)
            buffer[position] = nibble < 10 ? 0x30 + nibble : 0x61 + nibble - 10
            rest >>= 4
        }
    }

    public static func < (lhs: CanonicalUUID, rhs: CanonicalUUID) -> Bool { lhs.value < rhs.value }

    public var description: String { text }
}
