extension Duration {
    /// Whole milliseconds, rounded down: what Redis takes for `BLOCK`, `MIN-IDLE-TIME` and
    /// `PX`.
    var wholeMilliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }

    /// Milliseconds with one decimal, for logs: `12.3`.
    var milliseconds: String {
        let (seconds, attoseconds) = components
        let tenths = seconds * 10_000 + attoseconds / 100_000_000_000_000
        return "\(tenths / 10).\(tenths % 10)"
    }
}
