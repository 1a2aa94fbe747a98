import Gzip

/// Splits bytes into pieces for readers fed piece by piece, as data comes off a socket or a file.
///
/// The sizes are drawn from the bytes' own CRC-32, so one input always splits the same way (a
/// crash replays) while the fuzzer, changing the input, meets other boundaries: single bytes,
/// small pieces and large ones.
enum InputPieces {
    static func split(_ bytes: [UInt8]) -> [ArraySlice<UInt8>] {
        var state = UInt64(crc32(bytes)) | 1
        var pieces: [ArraySlice<UInt8>] = []
        var start = 0
        while start < bytes.count {
            // A linear congruential step (Knuth's MMIX constants): cheap, and enough to vary sizes.
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            let limit: UInt64 = state >> 63 == 0 ? 8 : 4096
            let size = 1 + Int((state >> 32) % limit)
            pieces.append(bytes[start..<min(start + size, bytes.count)])
            start += size
        }
        return pieces
    }
}
