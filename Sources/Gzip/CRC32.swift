internal import CZlib

/// zlib's CRC-32 (the IEEE polynomial, as gzip, PNG and most languages' `crc32` compute it) of `bytes`.
///
/// Frontends choose a stream shard as `crc32(conversation_id) mod N`; this is the same function,
/// so Historian (and its tests and benchmark) choose as they do.
public func crc32(_ bytes: some Collection<UInt8>) -> UInt32 {
    let checksum = bytes.withContiguousStorageIfAvailable { buffer in
        CZlib.crc32(0, buffer.baseAddress, uInt(buffer.count))
    } ?? Array(bytes).withUnsafeBufferPointer { buffer in
        CZlib.crc32(0, buffer.baseAddress, uInt(buffer.count))
    }
    return UInt32(truncatingIfNeeded: checksum)
}
