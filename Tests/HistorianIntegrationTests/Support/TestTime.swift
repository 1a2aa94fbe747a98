import Foundation

/// Instants as a test writes them by hand: from whole microseconds since 1970, with Foundation's
/// formatters, independent of Historian's own `Timestamp`.
enum TestTime {
    /// `YYYY-MM-DDTHH:MM:SS.ffffffZ`, as ``sql(_:)`` has PostgreSQL print a `timestamptz`.
    static func utc(microseconds: Int64) -> String {
        let (seconds, fraction) = split(microseconds)
        return formatter(offsetHours: 0).string(from: Date(timeIntervalSince1970: Double(seconds)))
            + String(format: ".%06dZ", fraction)
    }

    /// RFC 3339 with milliseconds and an offset of whole hours east of UTC, such as
    /// `2025-01-01T02:00:00.250+02:00`; the microseconds below a millisecond are dropped.
    static func rfc3339(microseconds: Int64, offsetHours: Int) -> String {
        let (seconds, fraction) = split(microseconds)
        return formatter(offsetHours: offsetHours).string(from: Date(timeIntervalSince1970: Double(seconds)))
            + String(format: ".%03d", fraction / 1000) + (offsetHours < 0 ? "-" : "+")
            + String(format: "%02d:00", abs(offsetHours))
    }

    /// The SQL that prints the `timestamptz` column `column` as ``utc(microseconds:)`` writes it.
    static func sql(_ column: String) -> String {
        #"to_char(\#(column) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"#
    }

    private static func split(_ microseconds: Int64) -> (seconds: Int64, fraction: Int) {
        let fraction = ((microseconds % 1_000_000) + 1_000_000) % 1_000_000
        return ((microseconds - fraction) / 1_000_000, Int(fraction))
    }

    private static func formatter(offsetHours: Int) -> DateFormatter {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.calendar = Calendar(identifier: .gregorian)
        formatter.timeZone = TimeZone(secondsFromGMT: offsetHours * 3600)
        formatter.dateFormat = "yyyy-MM-dd'T'HH:mm:ss"
        return formatter
    }

    /// An RFC 3339 time with or without fractional seconds, as Foundation reads it.
    static func parseRFC3339(_ text: String) -> Date? {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let date = formatter.date(from: text) { return date }
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.date(from: text)
    }
}
