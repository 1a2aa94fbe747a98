import SQLiteReader

/// The times a SQLite store holds, as SQLite's own date functions read them, plus Unix times.
///
/// - Text `YYYY-MM-DD HH:MM[:SS[.fff…]]`, with a space or `T` (what `CURRENT_TIMESTAMP` and
///   Python's `isoformat()` write): UTC, as SQLite takes a time without an offset.
/// - RFC 3339 with an offset (`2024-05-01T12:00:00+02:00`, `…Z`).
/// - A number (an integer or real column, or text of digits with an optional fraction): Unix
///   time, in seconds when its magnitude is below 10¹¹ (the year 5138) and in milliseconds from
///   there up (10¹¹ ms is March 1973, so no chat message is misread).
///
/// Anything else is refused. A Julian day number (SQLite's `julianday()`) is a number too, and
/// is read as Unix seconds, in January 1970: such a store needs converting first.
enum SQLiteTimestamp {
    /// Unix times of at least this magnitude are milliseconds.
    static let millisecondsFrom: Double = 1e11

    /// The instant `value` names, or `nil` when it names none. NULL is the caller's to judge.
    static func parse(_ value: SQLiteValue) -> Timestamp? {
        switch value {
        case .null:
            return nil
        case .integer(let number):
            return unix(Double(number), exact: number)
        case .real(let number):
            return unix(number, exact: nil)
        case .text(let bytes), .blob(let bytes):
            return parse(text: bytes)
        }
    }

    static func parse(text bytes: [UInt8]) -> Timestamp? {
        guard !bytes.isEmpty, bytes.count <= 64, bytes.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) else { return nil }
        let text = String(decoding: bytes, as: UTF8.self)
        if let number = number(bytes) {
            return unix(number, exact: Int64(text))
        }
        // RFC 3339 as it is; else a time without an offset, in UTC, with or without its seconds.
        if let value = Timestamp(rfc3339: text) ?? Timestamp(rfc3339: text + "Z") { return value }
        return bytes.count == 16 ? Timestamp(rfc3339: text + ":00Z") : nil
    }

    /// `-?digits(.digits)?` as a number; `nil` for anything else (exponents, `inf`, `nan`).
    private static func number(_ bytes: [UInt8]) -> Double? {
        var digits = bytes[...]
        if digits.first == UInt8(ascii: "-") { digits = digits.dropFirst() }
        let parts = digits.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count),
            parts.allSatisfy({ !$0.isEmpty && $0.allSatisfy { $0 >= 0x30 && $0 <= 0x39 } })
        else { return nil }
        return Double(String(decoding: bytes, as: UTF8.self))
    }

    /// A Unix time in seconds or milliseconds (see `millisecondsFrom`); `exact`, when given, is
    /// the same integer, converted without going through a `Double`.
    private static func unix(_ number: Double, exact: Int64?) -> Timestamp? {
        guard number.isFinite else { return nil }
        let microseconds: Int64
        if let exact {
            let scale: Int64 = abs(number) < millisecondsFrom ? 1_000_000 : 1000
            let (product, overflow) = exact.multipliedReportingOverflow(by: scale)
            guard !overflow else { return nil }
            microseconds = product
        } else {
            let scaled = (number * (abs(number) < millisecondsFrom ? 1e6 : 1e3)).rounded()
            guard scaled > Double(Int64.min), scaled < Double(Int64.max) else { return nil }
            microseconds = Int64(scaled)
        }
        let value = Timestamp(microseconds: microseconds)
        guard value >= Timestamp.earliest, value <= Timestamp.latest else { return nil }
        return value
    }
}
