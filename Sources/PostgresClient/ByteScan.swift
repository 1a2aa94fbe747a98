/// Finds the bytes that text escaping must look at, eight bytes at a time.
///
/// `COPY` text rows and the cache's JSON elements both copy runs of plain bytes whole and
/// escape a few bytes one by one. Looking at every byte in turn is slow for large contents, so
/// this checks a whole 64-bit word at once with the usual bit tricks (does any byte equal `c`; is any byte below `n`), and only a word that
/// holds a candidate is looked at byte by byte.
public enum ByteScan {
    private static let ones: UInt64 = 0x0101_0101_0101_0101
    private static let highBits: UInt64 = 0x8080_8080_8080_8080

    /// The index of the first byte at or after `start` that is a control character (below
    /// 0x20), a backslash or, with `quote`, a double quote; `bytes.count` if there is none.
    @inline(__always)
    public static func firstCandidate(in bytes: UnsafeBufferPointer<UInt8>, from start: Int, quote: Bool) -> Int {
        var index = start
        let count = bytes.count
        if let base = bytes.baseAddress {
            let raw = UnsafeRawPointer(base)
            let backslashes = ones &* 0x5C
            // Without quotes, the quote test repeats the backslash test.
            let quotes = quote ? ones &* 0x22 : backslashes
            let controlLimit = ones &* 0x20
            while index &+ 8 <= count {
                let word = raw.loadUnaligned(fromByteOffset: index, as: UInt64.self)
                let withBackslashes = word ^ backslashes
                let withQuotes = word ^ quotes
                // A byte below 0x20, or a byte equal to the backslash or the quote (zero after
                // the XOR); each test is exact for the word as a whole.
                let below = (word &- controlLimit) & ~word
                let backslash = (withBackslashes &- ones) & ~withBackslashes
                let quoteFound = (withQuotes &- ones) & ~withQuotes
                if (below | backslash | quoteFound) & highBits != 0 { break }
                index &+= 8
            }
        }
        while index < count {
            let byte = bytes[index]
            if byte < 0x20 || byte == 0x5C || (quote && byte == 0x22) { return index }
            index &+= 1
        }
        return count
    }
}
