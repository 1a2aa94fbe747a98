import Crypto

extension CanonicalUUID {
    /// The name-based UUID of `name` in `namespace`, version 5 (SHA-1), as RFC 9562 §5.5 makes
    /// it: the first 16 bytes of SHA-1(namespace's 16 bytes ‖ name), version and variant set.
    /// The same as Python's `uuid.uuid5` and PostgreSQL's `uuid_generate_v5`.
    public static func version5(namespace: CanonicalUUID, name: some Sequence<UInt8>) -> CanonicalUUID {
        var hash = Insecure.SHA1()
        var bytes = [UInt8](repeating: 0, count: 16)
        for index in 0..<16 {
            bytes[index] = UInt8(truncatingIfNeeded: namespace.value >> (8 * (15 - index)))
        }
        hash.update(data: bytes)
        hash.update(data: Array(name))
        var value: UInt128 = 0
        for byte in hash.finalize().prefix(16) {
            value = value << 8 | UInt128(byte)
        }
        // Version 5 in the high nibble of byte 6, variant 10 in the top bits of byte 8.
        value = value & ~(UInt128(0xF) << 76) | UInt128(0x5) << 76
        value = value & ~(UInt128(0x3) << 62) | UInt128(0x2) << 62
        return CanonicalUUID(value: value)
    }

    public static func version5(namespace: CanonicalUUID, name: String) -> CanonicalUUID {
        version5(namespace: namespace, name: name.utf8)
    }
}

/// The IDs that `historian import sqlite` gives what it imports, the same on every run, so
/// that importing the same file twice adds nothing (docs/sqlite-import.md).
public enum ImportIDs {
    /// The namespace of conversation IDs that are not UUIDs:
    /// `uuid5(NAMESPACE_URL, "urn:historian:import:sqlite:conversation")`. Fixed for good: a
    /// different one would import every such conversation again under new IDs.
    public static let conversationNamespace = CanonicalUUID("21432bf2-dfbf-5f51-98e1-7a7f2d9b3616")!

    /// A conversation's ID: the SQLite ID itself when it is a UUID (any case), else its UUIDv5
    /// in `conversationNamespace`, named by the ID's bytes.
    public static func conversation(_ sqliteID: [UInt8]) -> (id: CanonicalUUID, isSourceUUID: Bool) {
        if let uuid = CanonicalUUID(sqliteID) { return (uuid, true) }
        return (CanonicalUUID.version5(namespace: conversationNamespace, name: sqliteID), false)
    }

    /// A message's ID: the UUIDv5 of its SQLite ID, in decimal, in its conversation's namespace.
    public static func message(_ sqliteID: Int64, in conversation: CanonicalUUID) -> CanonicalUUID {
        CanonicalUUID.version5(namespace: conversation, name: String(sqliteID))
    }

    /// The stream entry ID recorded with an imported message (`messages.stream_entry`): `0-N`
    /// for SQLite message N. Redis never numbers an entry with time 0, so `0-` marks a message
    /// that came from an import, and N finds its row in the SQLite file. (A negative N, which SQLite allows,
    /// is recorded as its 64-bit two's complement.)
    public static func entry(_ sqliteID: Int64) -> StreamID {
        StreamID(milliseconds: 0, sequence: UInt64(bitPattern: sqliteID))
    }
}
