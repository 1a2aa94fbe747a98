import Historian

/// One stream entry, written as text: one field a line, `name=value` (split at the first `=`),
/// after an optional first line that is the entry's ID (`1700000000123-0`; the default).
///
/// Lines rather than RESP so that the fuzzer's mutations land in the values, where validation
/// looks; `stream-reply` covers the framing. Values hold any byte but a newline (and so JSON
/// whitespace is space, tab and CR here, and titles meet CR, U+0085 and U+2028 as line ends).
enum EntryTarget {
    static let defaultID = StreamID(milliseconds: 1_700_000_000_123, sequence: 0)

    static func run(_ input: [UInt8], _ findings: inout FuzzFindings) {
        EntryChecks.check(entry(input), &findings)
    }

    static func entry(_ input: [UInt8]) -> StreamEntry {
        var lines = input.split(separator: 0x0A, omittingEmptySubsequences: false)[...]
        var id = defaultID
        if let first = lines.first, let parsed = first.withUnsafeBytes({ StreamID(ascii: $0) }) {
            id = parsed
            lines = lines.dropFirst()
        }
        let fields = lines.map { line in
            guard let equals = line.firstIndex(of: 0x3D) else {
                return StreamEntry.Field(name: Array(line), value: [])
            }
            return StreamEntry.Field(name: Array(line[..<equals]), value: Array(line[(equals + 1)...]))
        }
        return StreamEntry(id: id, fields: fields)
    }
}
