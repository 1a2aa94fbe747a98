/// PostgreSQL's COPY text format: tab-separated, `\N` for NULL, backslash escapes.
public enum CopyText {
    /// Appends one row: the fields tab-separated, then a newline.
    public static func appendRow(_ fields: [String?], to out: inout [UInt8]) {
        for (index, field) in fields.enumerated() {
            if index > 0 { tab(&out) }
            append(field, to: &out)
        }
        out.append(0x0A)
    }

    public static func tab(_ out: inout [UInt8]) {
        out.append(0x09)
    }

    public static func append(_ value: String?, to out: inout [UInt8]) {
        guard var value else {
            out.append(0x5C)
            out.append(0x4E)
            return
        }
        value.withUTF8 { bytes in
            // Copy runs of plain bytes whole; only the four special bytes are escaped one by one.
            var runStart = 0
            var index = ByteScan.firstCandidate(in: bytes, from: 0, quote: false)
            while index < bytes.count {
                let escaped: UInt8?
                switch bytes[index] {
                case 0x5C: escaped = 0x5C
                case 0x09: escaped = 0x74
                case 0x0A: escaped = 0x6E
                case 0x0D: escaped = 0x72
                default: escaped = nil  // another control character: COPY takes it as it is
                }
                if let escaped {
                    out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<index]))
                    out.append(0x5C)
                    out.append(escaped)
                    runStart = index + 1
                }
                index = ByteScan.firstCandidate(in: bytes, from: index + 1, quote: false)
            }
            out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart...]))
        }
    }
}
