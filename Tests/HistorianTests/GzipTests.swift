import Foundation
import Gzip
import Testing

/// The gzip streams behind the archive files, against zlib and the system's `gzip`.
struct GzipTests {
    static func compress(_ data: [UInt8], chunk: Int) throws -> [UInt8] {
        let compressor = try GzipCompressor()
        var out: [UInt8] = []
        var start = 0
        while start < data.count {
            try compressor.compress(data[start..<min(start + chunk, data.count)], into: &out)
            start += chunk
        }
        try compressor.finish(into: &out)
        return out
    }

    static func decompress(_ data: [UInt8], chunk: Int) throws -> [UInt8] {
        let decompressor = try GzipDecompressor()
        var out: [UInt8] = []
        var start = 0
        while start < data.count {
            try decompressor.decompress(data[start..<min(start + chunk, data.count)], into: &out)
            start += chunk
        }
        try decompressor.finish()
        return out
    }

    /// Text that compresses well, then bytes that do not, so outputs span many internal buffers.
    static let sample: [UInt8] = {
        var generator = SystemRandomNumberGenerator()
        var bytes = Array(String(repeating: "{\"type\":\"message\",\"content\":\"Grüße 日本語 🚀\"}\n", count: 20_000).utf8)
        bytes += (0..<300_000).map { _ in UInt8.random(in: 0...255, using: &generator) }
        return bytes
    }()

    @Test("round trips in any chunking", arguments: [(1 << 20, 1 << 20), (7, 4096), (65_536, 1), (1000, 333)])
    func roundTrip(compressChunk: Int, decompressChunk: Int) throws {
        let compressed = try Self.compress(Self.sample, chunk: compressChunk)
        #expect(compressed.count < Self.sample.count)
        if decompressChunk == 1 {
            // Byte by byte through the whole sample would take long; a smaller one does the same.
            let small = try Self.compress(Array(Self.sample.prefix(5000)), chunk: 5000)
            #expect(try Self.decompress(small, chunk: 1) == Array(Self.sample.prefix(5000)))
        } else {
            #expect(try Self.decompress(compressed, chunk: decompressChunk) == Self.sample)
        }
    }

    @Test("empty input makes a valid empty member")
    func empty() throws {
        let compressed = try Self.compress([], chunk: 1)
        #expect(try Self.decompress(compressed, chunk: 10).isEmpty)
    }

    @Test("the system's gzip reads what it writes, and it reads what gzip writes")
    func systemGzip() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("gzip-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let ours = directory.appendingPathComponent("ours.gz")
        try Data(try Self.compress(Self.sample, chunk: 10_000)).write(to: ours)
        #expect(try Self.run(["gzip", "-t", ours.path]).status == 0)
        #expect(try Self.run(["gzip", "-dc", ours.path]).output == Data(Self.sample))

        let plain = directory.appendingPathComponent("theirs")
        try Data(Self.sample).write(to: plain)
        #expect(try Self.run(["gzip", "-9", plain.path]).status == 0)
        let theirs = try [UInt8](Data(contentsOf: directory.appendingPathComponent("theirs.gz")))
        #expect(try Self.decompress(theirs, chunk: 8192) == Self.sample)
    }

    @Test("members one after another read as one, as zcat reads them")
    func concatenatedMembers() throws {
        let first = try Self.compress(Array("first\n".utf8), chunk: 100)
        let second = try Self.compress(Array("second\n".utf8), chunk: 100)
        #expect(try Self.decompress(first + second, chunk: 5) == Array("first\nsecond\n".utf8))
    }

    @Test("a file cut short or damaged fails, never reads as complete")
    func damaged() throws {
        let compressed = try Self.compress(Self.sample, chunk: 1 << 20)
        #expect(throws: GzipError.self) { try Self.decompress(Array(compressed.dropLast(9)), chunk: 4096) }
        var flipped = compressed
        flipped[flipped.count / 3] ^= 0x55
        #expect(throws: GzipError.self) { try Self.decompress(flipped, chunk: 4096) }
        #expect(throws: GzipError.self) { try Self.decompress(Array("not gzip at all".utf8), chunk: 4096) }
    }

    static func run(_ arguments: [String]) throws -> (status: Int32, output: Data) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, data)
    }
}
