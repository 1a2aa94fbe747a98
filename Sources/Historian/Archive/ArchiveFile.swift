import Crypto
import Foundation
import Gzip

/// Where a conversation's archive goes: `<root>/YYYY/MM/DD/<conversation id>.jsonl.gz`, dated
/// by the day (UTC) it was archived, beside `<name>.jsonl.gz.sha256`.
public struct ArchiveLayout: Sendable {
    public var root: String

    public init(root: String) {
        self.root = root
    }

    /// The directory and file name of a conversation archived at `date`.
    public func location(of conversation: CanonicalUUID, archivedAt date: Date) -> (directory: String, name: String) {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let day = calendar.dateComponents([.year, .month, .day], from: date)
        let directory = String(format: "%@/%04d/%02d/%02d", root, day.year!, day.month!, day.day!)
        return (directory, "\(conversation.text).jsonl.gz")
    }
}

/// A failure reading or writing an archive file: the file and what is wrong, never its content.
public struct ArchiveFileError: Error, Sendable, Hashable, CustomStringConvertible {
    public var path: String
    public var problem: String

    public var description: String { "archive \(path): \(problem)" }
}

/// What was written: the file, the SHA-256 of its bytes (what `.sha256` holds), and the
/// SHA-256 and line count of the JSON lines inside, for verifying the file read back.
public struct WrittenArchive: Sendable, Hashable {
    public var path: String
    public var sha256: String
    public var contentSHA256: String
    public var lines: Int
}

/// Writes one archive file: JSON lines in, gzip out, made durable before it gets its name.
///
/// The file is written under a temporary name in its final directory, synced, renamed and the
/// directory synced; then the same for its `.sha256` beside it. A crash leaves either no file
/// under the final name or a complete one (and, at worst, a stray temporary file, which the next
/// pass removes).
final class ArchiveWriter {
    let directory: String
    let name: String
    private let temporary: String
    private let descriptor: Int32
    private let compressor: GzipCompressor
    private var fileHash = SHA256()
    private var contentHash = SHA256()
    private var pending: [UInt8] = []
    private var lines = 0
    private var closed = false

    var path: String { "\(directory)/\(name)" }

    init(directory: String, name: String) throws {
        self.directory = directory
        self.name = name
        self.temporary = "\(directory)/.\(name).tmp"
        try Durable.makeDirectory(directory)
        descriptor = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o640)
        guard descriptor >= 0 else { throw Durable.failure(temporary, "cannot create") }
        do {
            compressor = try GzipCompressor()
        } catch {
            close(descriptor)
            unlink(temporary)
            throw ArchiveFileError(path: temporary, problem: "\(error)")
        }
    }

    deinit {
        if !closed {
            close(descriptor)
            unlink(temporary)
        }
    }

    /// Appends one line (a JSON object, without its newline).
    func append(line: String) throws {
        var bytes = Array(line.utf8)
        bytes.append(0x0A)
        contentHash.update(data: bytes)
        lines += 1
        try compressor.compress(bytes, into: &pending)
        if pending.count >= 256 * 1024 { try flush() }
    }

    /// Ends the file, makes it and its `.sha256` durable, and names them.
    func finish() throws -> WrittenArchive {
        try compressor.finish(into: &pending)
        try flush()
        CrashPoint.reached(.archiveWritten)
        guard fsync(descriptor) == 0 else { throw Durable.failure(temporary, "cannot sync") }
        closed = true
        guard close(descriptor) == 0 else { throw Durable.failure(temporary, "cannot close") }
        guard rename(temporary, path) == 0 else { throw Durable.failure(path, "cannot rename into place") }
        try Durable.syncDirectory(directory)
        CrashPoint.reached(.archiveRenamed)
        let digest = Self.hex(fileHash.finalize())
        // `sha256sum -c` format: the digest, two spaces, the file's name (run it in the directory).
        try Durable.write(Array("\(digest)  \(name)\n".utf8), to: "\(path).sha256")
        return WrittenArchive(path: path, sha256: digest, contentSHA256: Self.hex(contentHash.finalize()), lines: lines)
    }

    private func flush() throws {
        guard !pending.isEmpty else { return }
        fileHash.update(data: pending)
        try Durable.writeAll(pending, to: descriptor, path: temporary)
        pending.removeAll(keepingCapacity: true)
    }

    static func hex(_ digest: some Sequence<UInt8>) -> String {
        digest.map { String(format: "%02x", $0) }.joined()
    }
}

/// Reads an archive file back: checks the SHA-256 of its bytes as it goes and hands out its
/// JSON lines; `finish` then says whether everything held.
enum ArchiveReader {
    /// Reads the file at `path`, calling `line` with each JSON line in order (without its newline).
    /// - Returns: the SHA-256 of the file's bytes and of the JSON lines inside, and the line count.
    /// - Throws: when the file cannot be read, is not complete gzip, or has a line that is not UTF-8.
    static func read(
        _ path: String,
        line: (String) throws -> Void
    ) throws -> (sha256: String, contentSHA256: String, lines: Int) {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw Durable.failure(path, "cannot open") }
        defer { close(descriptor) }
        return try read(descriptor: descriptor, path: path, line: line)
    }

    /// Reads the open file `descriptor` (named `path` in errors) from where it stands to its end,
    /// as ``read(_:line:)`` does. Reading one open file twice reads the same file both times,
    /// whatever happens to its name meanwhile.
    static func read(descriptor: Int32, path: String, line: (String) throws -> Void) throws
        -> (sha256: String, contentSHA256: String, lines: Int)
    {
        var reader = try ArchiveLineReader(path: path)
        var buffer = [UInt8](repeating: 0, count: 256 * 1024)
        while true {
            let count = buffer.withUnsafeMutableBytes { Glibc.read(descriptor, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw Durable.failure(path, "cannot read")
            }
            if count == 0 { break }
            try reader.read(buffer[0..<count], line: line)
        }
        return try reader.finish()
    }

    /// Reads the file back and checks it against what was written: the same bytes on disk (by
    /// SHA-256), the same JSON lines inside, each a JSON object.
    static func verify(_ written: WrittenArchive) throws {
        let read = try read(written.path) { line in
            guard line.first == "{", line.last == "}" else {
                throw ArchiveFileError(path: written.path, problem: "a line is not a JSON object")
            }
        }
        guard read.sha256 == written.sha256 else {
            throw ArchiveFileError(path: written.path, problem: "its SHA-256 on disk differs from what was written")
        }
        guard read.contentSHA256 == written.contentSHA256, read.lines == written.lines else {
            throw ArchiveFileError(path: written.path, problem: "it does not decompress to what was written")
        }
        let recorded = try String(contentsOfFile: "\(written.path).sha256", encoding: .utf8)
        guard recorded == "\(written.sha256)  \((written.path as NSString).lastPathComponent)\n" else {
            throw ArchiveFileError(path: "\(written.path).sha256", problem: "does not hold the file's SHA-256")
        }
    }
}

/// The bytes of an archive file as they are read, piece by piece: their SHA-256 taken, the gzip
/// stream inside decompressed, and its JSON lines handed out as each is complete, so that the text
/// held stays near one line long.
package struct ArchiveLineReader {
    private let path: String
    private let decompressor: GzipDecompressor
    private var fileHash = SHA256()
    private var contentHash = SHA256()
    /// Decompressed text; lines before `consumed` have been handed out.
    private var text: [UInt8] = []
    private var consumed = 0
    private var lines = 0

    /// - Parameter path: the file's name in errors.
    package init(path: String) throws {
        self.path = path
        do { decompressor = try GzipDecompressor() } catch { throw ArchiveFileError(path: path, problem: "\(error)") }
    }

    /// Reads the next bytes of the file, calling `line` with each JSON line they complete, in order
    /// (without its newline).
    /// - Throws: `ArchiveFileError` when the bytes are not gzip or a line is not UTF-8; or what
    ///   `line` throws.
    package mutating func read(_ bytes: ArraySlice<UInt8>, line: (String) throws -> Void) throws {
        fileHash.update(data: bytes)
        do {
            try decompressor.decompress(bytes) { piece in
                contentHash.update(data: piece)
                text.append(contentsOf: piece)
                try emitLines(line)
            }
        } catch let error as GzipError {
            throw ArchiveFileError(path: path, problem: "not valid gzip: \(error.message)")
        }
    }

    /// Ends the reading.
    /// - Returns: the SHA-256 of the file's bytes and of the JSON lines inside, and the line count.
    /// - Throws: `ArchiveFileError` when the gzip stream or the last line is cut short.
    package func finish() throws -> (sha256: String, contentSHA256: String, lines: Int) {
        do {
            try decompressor.finish()
        } catch let error as GzipError {
            throw ArchiveFileError(path: path, problem: error.message)
        }
        guard consumed == text.count else {
            throw ArchiveFileError(path: path, problem: "the last line has no newline")
        }
        return (ArchiveWriter.hex(fileHash.finalize()), ArchiveWriter.hex(contentHash.finalize()), lines)
    }

    private mutating func emitLines(_ line: (String) throws -> Void) throws {
        var start = consumed
        while let newline = text[start...].firstIndex(of: 0x0A) {
            guard let decoded = String(validating: text[start..<newline], as: UTF8.self) else {
                throw ArchiveFileError(path: path, problem: "line \(lines + 1) is not UTF-8")
            }
            lines += 1
            try line(decoded)
            start = newline + 1
        }
        consumed = start
        if consumed > 1 << 20 || consumed == text.count {
            text.removeFirst(consumed)
            consumed = 0
        }
    }
}

/// Files that survive a crash: written, synced, renamed, and their directory synced.
enum Durable {
    static func failure(_ path: String, _ what: String) -> ArchiveFileError {
        ArchiveFileError(path: path, problem: "\(what): \(String(cString: strerror(errno)))")
    }

    static func writeAll(_ bytes: [UInt8], to descriptor: Int32, path: String) throws {
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress! + offset, $0.count - offset) }
            if written < 0 {
                if errno == EINTR { continue }
                throw failure(path, "cannot write")
            }
            offset += written
        }
    }

    /// Writes a small file durably under its final name.
    static func write(_ bytes: [UInt8], to path: String) throws {
        let directory = (path as NSString).deletingLastPathComponent
        let temporary = "\(directory)/.\((path as NSString).lastPathComponent).tmp"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o640)
        guard descriptor >= 0 else { throw failure(temporary, "cannot create") }
        do {
            try writeAll(bytes, to: descriptor, path: temporary)
            guard fsync(descriptor) == 0 else { throw failure(temporary, "cannot sync") }
        } catch {
            close(descriptor)
            unlink(temporary)
            throw error
        }
        guard close(descriptor) == 0 else { throw failure(temporary, "cannot close") }
        guard rename(temporary, path) == 0 else { throw failure(path, "cannot rename into place") }
        try syncDirectory(directory)
    }

    static func syncDirectory(_ directory: String) throws {
        let descriptor = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard descriptor >= 0 else { throw failure(directory, "cannot open directory") }
        defer { close(descriptor) }
        guard fsync(descriptor) == 0 else { throw failure(directory, "cannot sync directory") }
    }

    /// Creates the directory and any missing parents, syncing each parent that gained an entry.
    static func makeDirectory(_ directory: String) throws {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue {
            return
        }
        let parent = (directory as NSString).deletingLastPathComponent
        if !parent.isEmpty, parent != directory { try makeDirectory(parent) }
        if mkdir(directory, 0o750) != 0 && errno != EEXIST { throw failure(directory, "cannot create directory") }
        if !parent.isEmpty { try syncDirectory(parent) }
    }

    /// Removes a file and its `.sha256`, if there.
    static func remove(archive path: String) {
        unlink(path)
        unlink("\(path).sha256")
        try? syncDirectory((path as NSString).deletingLastPathComponent)
    }

    /// Whether `name` is one of the temporary names files are written under (`.<name>.tmp`).
    static func isTemporary(_ name: String) -> Bool {
        name.hasPrefix(".") && name.hasSuffix(".tmp") && name.contains(".jsonl.gz")
    }

    /// Removes the temporary files below `root` that a crashed pass left behind. Only one pass
    /// runs at a time (it holds the advisory lock while it calls this), so none is being written.
    /// - Returns: the paths removed.
    static func removeTemporaryFiles(below root: String) -> [String] {
        guard let walk = FileManager.default.enumerator(atPath: root) else { return [] }
        var removed: [String] = []
        while let relative = walk.nextObject() as? String {
            let path = root + "/" + relative
            if isTemporary((relative as NSString).lastPathComponent), unlink(path) == 0 { removed.append(path) }
        }
        return removed
    }
}
