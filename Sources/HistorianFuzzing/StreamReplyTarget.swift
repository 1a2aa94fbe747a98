import Historian
import RedisClient

/// Bytes as Redis would send them (RESP), read by hiredis' own reader, whole and piece by piece;
/// then each reply through what Historian makes of a stream read: `XREADGROUP`'s decoder,
/// `XCLAIM`/`XRANGE`'s, `XPENDING`'s, and the validation of every entry decoded.
enum StreamReplyTarget {
    static func run(_ input: [UInt8], _ findings: inout FuzzFindings) {
        guard !declaresHugeArray(input) else { return }
        let whole = replies(in: [input[...]], &findings)
        let pieces = replies(in: InputPieces.split(input), &findings)
        findings.expect(whole == pieces, "the replies read whole differ from those read piece by piece")
    }

    /// The replies, until the bytes end or stop being RESP (`nil` then), each decoded and checked.
    private static func replies(in pieces: [ArraySlice<UInt8>], _ findings: inout FuzzFindings) -> [RESPValue?] {
        let parser = RedisReplyParser()
        var replies: [RESPValue?] = []
        do {
            for piece in pieces {
                try parser.feed(Array(piece))
                while let reply = try parser.next({ decode($0, &findings) }) {
                    replies.append(reply)
                }
            }
        } catch {
            replies.append(nil)
        }
        return replies
    }

    /// Decodes one reply in place every way Historian does, and checks the results against the
    /// same reply copied into a `RESPValue` and decoded plainly.
    private static func decode(_ reply: RedisReplyView, _ findings: inout FuzzFindings) -> RESPValue? {
        let value = try? reply.value
        let delivery = try? IngestStream.decodeDelivery(reply)
        let entries = try? IngestStream.decodeEntries(reply)
        if let value {
            _ = IngestStream.decodePendingCounts(value)
            _ = value.fieldPairs
            if isByteExact(value) {
                let expected = plainDelivery(value)
                findings.expect(
                    delivery.map { Array(zip($0.ids, $0.entries)).map(Pair.init) } == expected,
                    "XREADGROUP's decoder disagrees with the plain reading of \(value)"
                )
                if case .array(let items) = value {
                    let plain = items.map(plainEntry)
                    let expected = plain.contains(nil) ? nil : plain.compactMap { $0 }
                    findings.expect(
                        entries.map { $0.map(Pair.init) } == expected,
                        "XCLAIM's decoder disagrees with the plain reading of \(value)"
                    )
                }
            }
        }
        for entry in (delivery?.entries ?? []) + (entries ?? []).map(\.1) {
            if let entry { EntryChecks.check(entry, &findings) }
        }
        return value
    }

    /// An entry as the decoders return it, comparable.
    private struct Pair: Equatable {
        var id: StreamID
        var entry: StreamEntry?

        init(_ pair: (StreamID, StreamEntry?)) {
            (id, entry) = pair
        }
    }

    /// `[[stream, [entry, …]], …]` read from the copied reply; `nil` where the decoder must throw.
    private static func plainDelivery(_ value: RESPValue) -> [Pair]? {
        switch value {
        case .null:
            return []
        case .array(let streams):
            var pairs: [Pair] = []
            for stream in streams {
                guard case .array(let pair) = stream, pair.count == 2, case .array(let items) = pair[1] else {
                    return nil
                }
                for item in items {
                    guard let entry = plainEntry(item) else { return nil }
                    pairs.append(entry)
                }
            }
            return pairs
        default:
            return nil
        }
    }

    /// `[id, [name, value, …] | nil]`: any string kind holds the ID, an odd last name is dropped,
    /// and a name or value of another kind is empty.
    private static func plainEntry(_ item: RESPValue) -> Pair? {
        guard case .array(let parts) = item, parts.count == 2, let idBytes = textBytes(parts[0]),
            let id = idBytes.withUnsafeBytes({ StreamID(ascii: $0) })
        else { return nil }
        guard case .array(let flat) = parts[1] else { return Pair((id, nil)) }
        let fields = stride(from: 0, to: flat.count - 1, by: 2).map { index in
            StreamEntry.Field(name: textBytes(flat[index]) ?? [], value: textBytes(flat[index + 1]) ?? [])
        }
        return Pair((id, StreamEntry(id: id, fields: fields)))
    }

    private static func textBytes(_ value: RESPValue) -> [UInt8]? {
        switch value {
        case .bulkString(let bytes): bytes
        case .simpleString(let text), .error(let text): Array(text.utf8)
        default: nil
        }
    }

    /// Whether the copy holds every byte as sent: status and error replies are copied as text, which
    /// replaces bytes that are not UTF-8.
    private static func isByteExact(_ value: RESPValue) -> Bool {
        switch value {
        case .simpleString(let text), .error(let text): !text.unicodeScalars.contains("\u{FFFD}")
        case .array(let elements): elements.allSatisfy(isByteExact)
        default: true
        }
    }

    /// Whether an array header (`*N` at the start of a line) declares more elements than the input
    /// has bytes. hiredis 0.14 allocates an array's element table as it reads the header (8 bytes
    /// an element, up to 2^31 elements); such an input could never complete, and only measures
    /// the allocator.
    static func declaresHugeArray(_ input: [UInt8]) -> Bool {
        var index = 0
        while index < input.count {
            if input[index] == UInt8(ascii: "*"), index == 0 || input[index - 1] == 0x0A {
                var count = 0
                var digit = index + 1
                while digit < input.count, input[digit] >= 0x30, input[digit] <= 0x39, count <= input.count {
                    count = count * 10 + Int(input[digit] - 0x30)
                    digit += 1
                }
                if count > input.count { return true }
            }
            index += 1
        }
        return false
    }
}
