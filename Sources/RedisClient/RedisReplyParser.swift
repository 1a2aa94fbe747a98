internal import CHiredis

/// hiredis' reply reader without a connection: RESP bytes in, replies out, built by the same code
/// that builds a connection's replies.
///
/// For tests and fuzzing of what turns replies into values: they can start from the bytes a
/// server would send instead of from a live server.
package final class RedisReplyParser {
    /// hiredis' reader, with its default reply functions (those `redisGetReply` uses).
    private let reader: UnsafeMutablePointer<redisReader>

    package init() {
        reader = redisReaderCreate()
    }

    deinit {
        redisReaderFree(reader)
    }

    /// Appends bytes as a server would send them.
    /// - Throws: ``RedisError/Code/protocolError`` once the reader has met bytes that are not RESP.
    package func feed(_ bytes: [UInt8]) throws(RedisError) {
        let status = bytes.withUnsafeBytes { buffer in
            redisReaderFeed(reader, buffer.baseAddress?.assumingMemoryBound(to: CChar.self), buffer.count)
        }
        guard status == REDIS_OK else { throw readerError() }
    }

    /// Hands the next complete reply, in place, to `body`, and frees it after; `nil` when the bytes
    /// fed so far end before the next reply does.
    /// - Throws: ``RedisError/Code/protocolError`` for bytes that are not RESP, or what `body` throws.
    package func next<Result>(_ body: (RedisReplyView) throws -> Result) throws -> Result? {
        var raw: UnsafeMutableRawPointer?
        guard redisReaderGetReply(reader, &raw) == REDIS_OK else { throw readerError() }
        guard let raw else { return nil }
        defer { freeReplyObject(raw) }
        return try body(RedisReplyView(raw.assumingMemoryBound(to: redisReply.self)))
    }

    private func readerError() -> RedisError {
        let message = errorText(inField: reader.pointee.errstr)
        return RedisError(code: .protocolError, message: message.isEmpty ? "unreadable reply" : message)
    }
}
