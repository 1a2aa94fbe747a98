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
        guard bytes.count == 36, bytes[8] == 0x2D, bytes[13] == 0x2D, bytes[18] == 0x2D, bytes[23] == 0x2D else {
            return nil
        }
        // Two halves of 16 digits each; `invalid` collects any byte that is not a hex digit.
        var halves: (UInt64, UInt64) = (0, 0)
        var invalid = false
        var digits = 0
        for position in 0..<36 where position != 8 && position != 13 && position != 18 && position != 23 {
            let byte = bytes[position]
            let digit = byte &- 0x30
            let letter = (byte | 0x20) &- 0x61
            let nibble: UInt8 = digit < 10 ? digit : letter &+ 10
            invalid = invalid || (digit >= 10 && letter >= 6)
            if digits < 16 {
                halves.0 = halves.0 << 4 | UInt64(nibble & 0xF)
            } else {
                halves.1 = halves.1 << 4 | UInt64(nibble & 0xF)
            }
            digits += 1
        }
        guard !invalid else { return nil }
        return CanonicalUUID(value: UInt128(halves.0) << 64 | UInt128(halves.1))
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
            if position == 8 || position == 13 || position == 18 || position == 23 {
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
