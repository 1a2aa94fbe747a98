import Foundation

/// A LangChain list element (LangChain's `message_to_dict`, contract §8) made in Historian
/// from a recent-list element, for the messages a write carries: the cache script pushes it as
/// it comes rather than slice and join strings itself, since Redis's CPU is shared by every
/// process and Historian's is not.
///
/// It makes the same bytes as the script's `langchainElement` (`RecentCache.langchainScript`),
/// which still converts what the script reads back from Redis (a late message merged into the
/// list, a LangChain list rebuilt). `LangchainElementTests` compares the two on awkward content.
/// Tool messages are left to the script (`nil`): their `tool_call_id` comes out of the
/// metadata through cjson, whose escaping Historian would have to copy byte for byte.
enum LangchainElement {
    /// The element for `recent` (the contract's JSON shape, as `RecentCache.element` or
    /// PostgreSQL builds it), or `nil` for a tool message or an element of another shape.
    static func make(fromRecent recent: String) -> String? {
        var recent = recent
        return recent.withUTF8 { bytes -> String? in
            // `{"id" : "` then the 36-character UUID.
            guard bytes.count > 45 else { return nil }
            guard let roleStart = find(#""role" : ""#, in: bytes, from: 45) else { return nil }
            guard let roleEnd = find("\"", in: bytes, from: roleStart, returningStart: true) else { return nil }
            let kind: StaticString
            let extra: StaticString
            switch Array(bytes[roleStart..<roleEnd]) {
            case Array("user".utf8): (kind, extra) = ("human", "")
            case Array("assistant".utf8):
                (kind, extra) = ("ai", #", "tool_calls": [], "invalid_tool_calls": [], "usage_metadata": null"#)
            case Array("system".utf8): (kind, extra) = ("system", "")
            default: return nil
            }
            guard let contentStart = find(#""content" : "#, in: bytes, from: roleEnd),
                let contentEnd = find(#", "metadata" : "#, in: bytes, from: contentStart, returningStart: true)
            else { return nil }
            var out: [UInt8] = []
            out.reserveCapacity(contentEnd - contentStart + 220)
            func literal(_ text: StaticString) {
                out.append(contentsOf: UnsafeBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
            }
            literal(#"{"type": ""#)
            literal(kind)
            literal(#"", "data": {"content": "#)
            out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[contentStart..<contentEnd]))
            literal(#", "additional_kwargs": {}, "response_metadata": {}, "type": ""#)
            literal(kind)
            literal(#"", "name": null, "id": ""#)
            out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[9..<45]))
            out.append(0x22)
            literal(extra)
            literal("}}")
            return String(decoding: out, as: UTF8.self)
        }
    }

    /// The index just past the first `needle` at or after `start` (or where it starts), as
    /// Lua's plain `string.find` finds it.
    private static func find(
        _ needle: StaticString,
        in bytes: UnsafeBufferPointer<UInt8>,
        from start: Int,
        returningStart: Bool = false
    ) -> Int? {
        let pattern = UnsafeBufferPointer(start: needle.utf8Start, count: needle.utf8CodeUnitCount)
        guard let first = pattern.first, start + pattern.count <= bytes.count else { return nil }
        var index = start
        while index + pattern.count <= bytes.count {
            if bytes[index] == first, memcmp(bytes.baseAddress! + index, pattern.baseAddress!, pattern.count) == 0 {
                return returningStart ? index : index + pattern.count
            }
            index += 1
        }
        return nil
    }
}
