#if canImport(Glibc)
import Glibc
#endif

/// A point in time with microsecond precision, as PostgreSQL's `timestamptz` stores it.
///
/// Parsing and formatting are done by hand (civil-from-days arithmetic) because they sit on the
/// per-message path and must accept exactly RFC 3339 with an offset, nothing looser.
public struct Timestamp: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// Microseconds since 1970-01-01T00:00:00Z.
    public var microseconds: Int64

    public init(microseconds: Int64) {
        self.microseconds = microseconds
    }

    /// For times known to be in range (years 1 to 9999); outside input goes through
    /// `init?(unixMilliseconds:)`.
    public init(milliseconds: Int64) {
        self.microseconds = milliseconds * 1000
    }

    /// Unix milliseconds from outside (a stream entry's ID, a `created_at` number); `nil` after the
    /// year 9999, which neither PostgreSQL nor RFC 3339 can hold (and whose microseconds could
    /// overflow).
    public init?(unixMilliseconds milliseconds: UInt64) {
        guard milliseconds <= UInt64(Self.latest.microseconds / 1000) else { return nil }
        self.microseconds = Int64(milliseconds) * 1000
    }

    public static func < (lhs: Timestamp, rhs: Timestamp) -> Bool {
        lhs.microseconds < rhs.microseconds
    }

    /// The earliest and latest instants accepted: years 1 through 9999, which PostgreSQL and
    /// RFC 3339 both represent.
    static let earliest = Timestamp(microseconds: -62_135_596_800_000_000)
    static let latest = Timestamp(microseconds: 253_402_300_799_999_999)

    /// Parses RFC 3339 with an offset (`2026-11-21T08:37:07.123Z`, `…+02:00`); `nil` otherwise.
    public init?(rfc3339 text: some StringProtocol) {
        let bytes = Array(text.utf8)
        var index = 0
        func digits(_ count: Int) -> Int? {
            guard index + count <= bytes.count else { return nil }
            var value = 0
            for byte in bytes[index..<(index + count)] {
                guard byte >= 0x30, byte <= 0x39 else { return nil }
                value = value * 10 + Int(byte - 0x30)
            }
            index += count
            return value
        }
        func expect(_ allowed: UInt8...) -> Bool {
            guard index < bytes.count, allowed.contains(bytes[index]) else { return false }
            index += 1
            return true
        }
        guard let year = digits(4), expect(0x2D), let month = digits(2), expect(0x2D), let day = digits(2),
            expect(0x54, 0x74, 0x20),  // T, t, or a space as RFC 3339 §5.6 permits
            let hour = digits(2), expect(0x3A), let minute = digits(2), expect(0x3A), let second = digits(2)
        else { return nil }
        var fraction: Int64 = 0
        if index < bytes.count, bytes[index] == 0x2E {
            index += 1
            var scale: Int64 = 100_000
            var seen = 0
            while index < bytes.count, bytes[index] >= 0x30, bytes[index] <= 0x39 {
                fraction += Int64(bytes[index] - 0x30) * scale
                scale /= 10
                index += 1
                seen += 1
            }
            guard seen > 0 else { return nil }
        }
        guard index < bytes.count else { return nil }
        var offsetSeconds = 0
        if bytes[index] == 0x5A || bytes[index] == 0x7A {  // Z or z
            index += 1
        } else {
            let sign = bytes[index]
            guard sign == 0x2B || sign == 0x2D else { return nil }
            index += 1
            guard let offsetHour = digits(2), expect(0x3A), let offsetMinute = digits(2),
                offsetHour < 24, offsetMinute < 60
            else { return nil }
            offsetSeconds = (offsetHour * 3600 + offsetMinute * 60) * (sign == 0x2D ? -1 : 1)
        }
        guard index == bytes.count,
            year >= 1, (1...12).contains(month), day >= 1, day <= Self.daysIn(month: month, year: year),
            hour < 24, minute < 60, second <= 60  // a leap second is folded into the next minute
        else { return nil }
        let days = Self.daysFromCivil(year: year, month: month, day: day)
        let seconds = Int64(days) * 86_400 + Int64(hour * 3600 + minute * 60 + second) - Int64(offsetSeconds)
        let value = Timestamp(microseconds: seconds * 1_000_000 + fraction)
        guard value >= Self.earliest, value <= Self.latest else { return nil }
        self = value
    }

    /// RFC 3339 in UTC with microseconds: `2026-11-21T08:37:07.123456Z`.
    public var rfc3339: String {
        String(unsafeUninitializedCapacity: Self.rfc3339Length) { buffer in
            write(into: buffer)
            return Self.rfc3339Length
        }
    }

    /// Appends `rfc3339`'s bytes without making a string.
    public func appendRFC3339(to out: inout [UInt8]) {
        let start = out.count
        out.append(contentsOf: repeatElement(0, count: Self.rfc3339Length))
        out.withUnsafeMutableBufferPointer { buffer in
            write(into: UnsafeMutableBufferPointer(rebasing: buffer[start...]))
        }
    }

    static let rfc3339Length = 27

    /// Writes the 27 bytes of `rfc3339` at the start of `buffer`.
    private func write(into buffer: UnsafeMutableBufferPointer<UInt8>) {
        var seconds = microseconds / 1_000_000
        var micros = microseconds % 1_000_000
        if micros < 0 {
            micros += 1_000_000
            seconds -= 1
        }
        var days = seconds / 86_400
        var secondOfDay = seconds % 86_400
        if secondOfDay < 0 {
            secondOfDay += 86_400
            days -= 1
        }
        let (year, month, day) = Self.civilFromDays(Int(days))
        var position = 0
        func digits(_ value: Int, _ width: Int) {
            var value = value
            for offset in stride(from: width - 1, through: 0, by: -1) {
                buffer[position + offset] = UInt8(truncatingIfNeeded: 0x30 + value % 10)
                value /= 10
            }
            position += width
        }
        func literal(_ byte: UInt8) {
            buffer[position] = byte
            position += 1
        }
        // Years 1–9999 only (see `earliest` and `latest`), so four digits always suffice.
        digits(year, 4)
        literal(0x2D)
        digits(month, 2)
        literal(0x2D)
        digits(day, 2)
        literal(0x54)
        digits(Int(secondOfDay / 3600), 2)
        literal(0x3A)
        digits(Int(secondOfDay % 3600 / 60), 2)
        literal(0x3A)
        digits(Int(secondOfDay % 60), 2)
        literal(0x2E)
        digits(Int(micros), 6)
        literal(0x5A)
    }

    public var description: String { rfc3339 }

    static func daysIn(month: Int, year: Int) -> Int {
        switch month {
        case 2: return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
    static func daysFromCivil(year: Int, month: Int, day: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }

    static func civilFromDays(_ days: Int) -> (year: Int, month: Int, day: Int) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let mp = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }
}

extension Timestamp {
    /// The current wall-clock time.
    public static var now: Timestamp {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Timestamp(microseconds: Int64(spec.tv_sec) * 1_000_000 + Int64(spec.tv_nsec) / 1000)
    }
}
