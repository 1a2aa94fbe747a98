internal import CZlib

/// A failure of zlib, with its return code; never any of the data.
public struct GzipError: Error, Sendable, Hashable, CustomStringConvertible {
    public var code: Int32
    public var message: String

    public var description: String { "gzip: \(message) (zlib \(code))" }
}

/// Compresses bytes into the gzip format, chunk by chunk.
///
/// The `z_stream` lives at a fixed heap address for the compressor's whole life, as zlib
/// requires (it keeps a pointer back to it), and is freed in `deinit`.
public final class GzipCompressor {
    private let stream: UnsafeMutablePointer<z_stream>
    /// zlib's output goes here first; made once, not per call (a call per archive line).
    private var buffer = [UInt8](repeating: 0, count: 64 * 1024)
    private var finished = false

    /// - Parameter level: zlib's level, 1 (fastest) to 9 (smallest); 6 is zlib's default.
    public init(level: Int32 = 6) throws {
        stream = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
        stream.initialize(to: z_stream())
        let status = historian_deflate_init_gzip(stream, level)
        guard status == Z_OK else {
            stream.deallocate()
            throw GzipError(code: status, message: "cannot start compressing")
        }
    }

    deinit {
        deflateEnd(stream)
        stream.deallocate()
    }

    /// Compresses `bytes`, appending whatever output zlib has ready to `output`.
    public func compress(_ bytes: some Collection<UInt8>, into output: inout [UInt8]) throws {
        precondition(!finished, "compress after finish")
        // zlib only reads its input; the pointer is mutable in its C declaration only.
        let done: Void? = try bytes.withContiguousStorageIfAvailable { input in
            try run(UnsafeMutableBufferPointer(mutating: input), flush: Z_NO_FLUSH, into: &output)
        }
        if done == nil {
            var input = Array(bytes)
            try input.withUnsafeMutableBufferPointer { try run($0, flush: Z_NO_FLUSH, into: &output) }
        }
    }

    /// Ends the gzip member (the rest of the data and the trailer's CRC-32 and length).
    public func finish(into output: inout [UInt8]) throws {
        precondition(!finished, "finish twice")
        var empty: [UInt8] = []
        try empty.withUnsafeMutableBufferPointer { buffer in
            try run(buffer, flush: Z_FINISH, into: &output)
        }
        finished = true
    }

    private func run(_ input: UnsafeMutableBufferPointer<UInt8>, flush: Int32, into output: inout [UInt8]) throws {
        stream.pointee.next_in = input.baseAddress
        stream.pointee.avail_in = UInt32(input.count)
        while true {
            let (status, produced) = buffer.withUnsafeMutableBufferPointer { out in
                stream.pointee.next_out = out.baseAddress
                stream.pointee.avail_out = UInt32(out.count)
                let status = deflate(stream, flush)
                return (status, out.count - Int(stream.pointee.avail_out))
            }
            guard status == Z_OK || status == Z_STREAM_END || status == Z_BUF_ERROR else {
                throw GzipError(code: status, message: "compression failed")
            }
            output.append(contentsOf: buffer[0..<produced])
            if flush == Z_FINISH {
                if status == Z_STREAM_END { break }
            } else if stream.pointee.avail_in == 0 && produced < buffer.count {
                break
            }
        }
        stream.pointee.next_in = nil
        stream.pointee.next_out = nil
    }
}

/// Decompresses the gzip format, chunk by chunk, checking each member's CRC-32 and length.
/// Members written one after another (as `cat a.gz b.gz` makes) read as one.
public final class GzipDecompressor {
    private let stream: UnsafeMutablePointer<z_stream>
    /// zlib's output goes here first; made once, not per call.
    private var buffer = [UInt8](repeating: 0, count: 64 * 1024)
    /// Whether the input so far ends exactly at the end of a member.
    public private(set) var isComplete = false
    private var started = false

    public init() throws {
        stream = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
        stream.initialize(to: z_stream())
        let status = historian_inflate_init_gzip(stream)
        guard status == Z_OK else {
            stream.deallocate()
            throw GzipError(code: status, message: "cannot start decompressing")
        }
    }

    deinit {
        inflateEnd(stream)
        stream.deallocate()
    }

    /// Decompresses `bytes`, appending the output to `output`. Throws on data that is not gzip,
    /// is corrupt, or fails its checksum.
    public func decompress(_ bytes: some Collection<UInt8>, into output: inout [UInt8]) throws {
        try decompress(bytes) { output.append(contentsOf: $0) }
    }

    /// Decompresses `bytes`, handing the output to `body` as it comes, at most 64 KiB at a time:
    /// data that compresses well can grow a thousandfold, and need not be held whole. Throws as
    /// ``decompress(_:into:)`` does, and what `body` throws.
    public func decompress(_ bytes: some Collection<UInt8>, pieces body: (ArraySlice<UInt8>) throws -> Void) throws {
        guard !bytes.isEmpty else { return }
        started = true
        let done: Void? = try bytes.withContiguousStorageIfAvailable { input in
            try inflateAll(UnsafeMutableBufferPointer(mutating: input), pieces: body)
        }
        if done == nil {
            var input = Array(bytes)
            try input.withUnsafeMutableBufferPointer { try inflateAll($0, pieces: body) }
        }
    }

    private func inflateAll(_ input: UnsafeMutableBufferPointer<UInt8>, pieces body: (ArraySlice<UInt8>) throws -> Void) throws {
        defer {
            stream.pointee.next_in = nil
            stream.pointee.next_out = nil
        }
        stream.pointee.next_in = input.baseAddress
        stream.pointee.avail_in = UInt32(input.count)
        // Until the input is used up and zlib holds no more output for a full chunk.
        var outputFull = false
        while stream.pointee.avail_in > 0 || outputFull {
            if isComplete {
                // Another member follows.
                let status = inflateReset(stream)
                guard status == Z_OK else { throw GzipError(code: status, message: "cannot read the next member") }
                isComplete = false
            }
            let (status, produced) = buffer.withUnsafeMutableBufferPointer { out in
                stream.pointee.next_out = out.baseAddress
                stream.pointee.avail_out = UInt32(out.count)
                let status = inflate(stream, Z_NO_FLUSH)
                return (status, out.count - Int(stream.pointee.avail_out))
            }
            switch status {
            case Z_OK: break
            case Z_STREAM_END: isComplete = true
            case Z_BUF_ERROR:
                // No progress possible: it needs more input than there is.
                guard produced > 0 else { return }
            default:
                let reason = stream.pointee.msg.map { String(cString: $0) } ?? "corrupt data"
                throw GzipError(code: status, message: reason)
            }
            try body(buffer[0..<produced])
            outputFull = produced == buffer.count && !isComplete
        }
    }

    /// Throws unless the input ended exactly at the end of a member: a file cut short fails here.
    public func finish() throws {
        guard started, isComplete else {
            throw GzipError(code: Z_BUF_ERROR, message: "the data ends before the end of the gzip stream")
        }
    }
}
