/// A parameter of an extended-protocol query.
///
/// `text` is read as PostgreSQL reads a literal of the parameter's type. `binary` is
/// PostgreSQL's binary format of that type, which it takes without parsing text: for long
/// arrays, parsing the literal element by element costs the server about a microsecond per
/// element. ``PostgresBinary`` encodes the arrays Historian sends.
public enum PostgresParameter: Sendable, Hashable {
    case text(String?)
    case binary([UInt8])
}

/// PostgreSQL's binary format for one-dimensional arrays (`array_recv`): a header with the
/// element type, then each element as its length and its bytes (length -1 for NULL), all
/// integers big-endian.
public enum PostgresBinary {
    /// Element type OIDs (`pg_type.oid`), fixed in every PostgreSQL.
    private enum ElementType: UInt32 {
        case int4 = 23
        case text = 25
        case timestamptz = 1184
        case uuid = 2950
        case jsonb = 3802
    }

    /// Microseconds from the Unix epoch to PostgreSQL's, 2000-01-01 00:00:00 UTC.
    static let postgresEpochMicroseconds: Int64 = 946_684_800_000_000

    /// `uuid[]` from UUIDs as 128-bit integers, the first byte most significant.
    public static func uuidArray(_ elements: [UInt128]) -> [UInt8] {
        array(.uuid, elements.map { $0 as UInt128? }, payload: 16 * elements.count) { element, out in
            appendInteger(element, to: &out)
        }
    }

    /// `integer[]`; `nil` is NULL.
    public static func int4Array(_ elements: [Int32?]) -> [UInt8] {
        array(.int4, elements, payload: 4 * elements.count) { value, out in
            appendInteger(value, to: &out)
        }
    }

    /// `timestamptz[]` from microseconds since the Unix epoch; `nil` is NULL.
    public static func timestamptzArray(_ elements: [Int64?]) -> [UInt8] {
        array(.timestamptz, elements, payload: 8 * elements.count) { microseconds, out in
            appendInteger(microseconds - postgresEpochMicroseconds, to: &out)
        }
    }

    /// `text[]`; `nil` is NULL. PostgreSQL still checks that each element is valid in the
    /// database encoding and holds no NUL.
    public static func textArray(_ elements: [String?]) -> [UInt8] {
        array(.text, elements, payload: elements.reduce(0) { $0 + ($1?.utf8.count ?? 0) }) { text, out in
            out.append(contentsOf: text.utf8)
        }
    }

    /// `jsonb[]` from JSON texts; `nil` is NULL. PostgreSQL parses each text as `jsonb_in`
    /// would (format version 1).
    public static func jsonbArray(_ elements: [String?]) -> [UInt8] {
        array(.jsonb, elements, payload: elements.reduce(0) { $0 + 1 + ($1?.utf8.count ?? 0) }) { json, out in
            out.append(1)
            out.append(contentsOf: json.utf8)
        }
    }

    private static func array<Element>(
        _ type: ElementType,
        _ elements: [Element?],
        payload: Int,
        append: (Element, inout [UInt8]) -> Void
    ) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(20 + 4 * elements.count + payload)
        let hasNull = elements.contains { $0 == nil }
        appendInteger(Int32(elements.isEmpty ? 0 : 1), to: &out)  // dimensions
        appendInteger(Int32(hasNull ? 1 : 0), to: &out)  // flags: has NULLs
        appendInteger(type.rawValue, to: &out)
        guard !elements.isEmpty else { return out }
        appendInteger(Int32(elements.count), to: &out)  // length of the dimension
        appendInteger(Int32(1), to: &out)  // its lower bound
        for element in elements {
            guard let element else {
                appendInteger(Int32(-1), to: &out)
                continue
            }
            // The length goes first; it is known once the element is written.
            let lengthAt = out.count
            appendInteger(Int32(0), to: &out)
            append(element, &out)
            withUnsafeBytes(of: Int32(out.count - lengthAt - 4).bigEndian) {
                out.replaceSubrange(lengthAt..<(lengthAt + 4), with: $0)
            }
        }
        return out
    }

    private static func appendInteger<Integer: FixedWidthInteger>(_ value: Integer, to out: inout [UInt8]) {
        withUnsafeBytes(of: value.bigEndian) { out.append(contentsOf: $0) }
    }
}
