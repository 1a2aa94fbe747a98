import PostgresClient
import Testing

@testable import Historian

/// The word-at-a-time scan against the plain byte loop it replaces, and the two escapers built
/// on it against straightforward reference escapers.
struct ByteScanTests {
    static func naiveFirst(_ bytes: [UInt8], from start: Int, quote: Bool) -> Int {
        bytes.indices.dropFirst(start).first { bytes[$0] < 0x20 || bytes[$0] == 0x5C || (quote && bytes[$0] == 0x22) }
            ?? bytes.count
    }

    /// Every length up to 40, with each interesting byte at each position, over plain ASCII and
    /// over non-ASCII (bytes of 0x80 and above must never count).
    @Test func findsEveryCandidateAtEveryPosition() {
        let interesting: [UInt8] = [0x00, 0x01, 0x09, 0x0A, 0x0D, 0x1F, 0x20, 0x21, 0x22, 0x23, 0x5B, 0x5C, 0x5D, 0x7F, 0x80, 0xA2, 0xDC, 0xFF]
        var mismatches: [String] = []
        for background: UInt8 in [0x61, 0xC3, 0x9C] {
            for length in 0...40 {
                for position in 0..<max(1, length) {
                    for byte in interesting {
                        var bytes = [UInt8](repeating: background, count: length)
                        if length > 0 { bytes[position] = byte }
                        for quote in [false, true] {
                            for start in [0, 1, 7, 8, 9] where start <= length {
                                let found = bytes.withUnsafeBufferPointer {
                                    ByteScan.firstCandidate(in: $0, from: start, quote: quote)
                                }
                                let expected = Self.naiveFirst(bytes, from: start, quote: quote)
                                if found != expected {
                                    mismatches.append("\(bytes) from \(start) quote \(quote): \(found), not \(expected)")
                                }
                            }
                        }
                    }
                }
            }
        }
        #expect(mismatches.isEmpty, "\(mismatches.prefix(5))")
    }

    static func referenceCopyText(_ text: String) -> [UInt8] {
        text.utf8.flatMap { byte -> [UInt8] in
            switch byte {
            case 0x5C: [0x5C, 0x5C]
            case 0x09: [0x5C, 0x74]
            case 0x0A: [0x5C, 0x6E]
            case 0x0D: [0x5C, 0x72]
            default: [byte]
            }
        }
    }

    static func referenceJSON(_ text: String) -> [UInt8] {
        let hex = Array("0123456789abcdef".utf8)
        return [0x22]
            + text.utf8.flatMap { byte -> [UInt8] in
                switch byte {
                case 0x08: [0x5C, 0x62]
                case 0x0C: [0x5C, 0x66]
                case 0x0A: [0x5C, 0x6E]
                case 0x0D: [0x5C, 0x72]
                case 0x09: [0x5C, 0x74]
                case 0x22, 0x5C: [0x5C, byte]
                case 0..<0x20: [0x5C, 0x75, 0x30, 0x30, hex[Int(byte >> 4)], hex[Int(byte & 0x0F)]]
                default: [byte]
                }
            } + [0x22]
    }

    @Test func escapersMatchTheirReferences() {
        var random = SystemRandomNumberGenerator()
        let pieces = ["plain words ", "ü", "日本", "🚀", "\\", "\"", "\t", "\n", "\r", "\u{1}", "\u{8}", "\u{C}", "\u{1F}", "\u{7F}", "x"]
        for _ in 0..<500 {
            let text = (0..<Int.random(in: 0...60, using: &random)).map { _ in pieces.randomElement(using: &random)! }.joined()
            var copy: [UInt8] = []
            CopyText.append(text, to: &copy)
            #expect(copy == Self.referenceCopyText(text), "\(Array(text.utf8))")
            var json: [UInt8] = []
            RecentCache.appendJSONString(text, to: &json)
            #expect(json == Self.referenceJSON(text), "\(Array(text.utf8))")
        }
    }
}
