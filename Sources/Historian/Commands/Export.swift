import Foundation
import Logging
import PostgresClient

/// `historian export ID`: one conversation, from PostgreSQL or, once archived, from its archive
/// file, as the archive's JSON lines, one JSON document or CSV.
///
/// Both sources give the same lines. PostgreSQL's are read with the archiver's own SQL in one
/// snapshot, so they are byte for byte what an archive of the conversation would hold. An
/// archive file is checked against the SHA-256 recorded for it before any of it is printed,
/// then read a second time to print it. Output goes out in chunks as the lines come, so a long
/// conversation is never all in memory.
public struct ConversationExport: Sendable {
    public enum Format: String, Sendable, CaseIterable {
        /// One JSON document: `{"conversation":{…},"messages":[…]}`.
        case json
        /// The archive's lines: the conversation's, then its messages', one JSON object a line.
        case jsonl
        /// RFC 4180: a header row, then one row per message.
        case csv
    }

    /// Where a conversation was read from.
    public enum Source: Sendable, Hashable, CustomStringConvertible {
        case postgres
        case archive(path: String)

        public var description: String {
            switch self {
            case .postgres: "from PostgreSQL"
            case .archive(let path): "from archive \(path)"
            }
        }
    }

    public enum Outcome: Sendable, Hashable {
        case exported(from: Source, messages: Int)
        /// Neither in `conversations` nor in `archived_conversations`.
        case notFound
    }

    let endpoints: ServerEndpoints
    let logger: Logger

    public init(configuration: HistorianConfiguration, logger: Logger) throws {
        self.endpoints = try ServerEndpoints(configuration)
        self.logger = logger
    }

    /// Output goes out in chunks of about this many bytes; a longer line is one chunk.
    static let chunkBytes = 64 * 1024

    /// How often an export looks again when the archive file it was sent to is gone: a restore
    /// brings the conversation back to PostgreSQL first and removes its file afterwards.
    static let attempts = 3

    /// Exports `conversation`.
    /// - Parameters:
    ///   - source: called once, before any output, with where the conversation is read from.
    ///   - output: called with the formatted bytes, in order, a chunk at a time.
    public func run(
        _ conversation: CanonicalUUID,
        format: Format,
        source: (Source) -> Void,
        output: ([UInt8]) throws -> Void
    ) async throws -> Outcome {
        let postgres = try await endpoints.connectPostgres(logger: logger, applicationName: "historian-export")
        defer { postgres.close() }
        // All of it, the archive file's reads included, is blocking work on the connection's thread.
        return try await postgres.withSession { session in
            try Self.export(conversation, format: format, in: session, source: source, output: output)
        }
    }

    static func export(
        _ conversation: CanonicalUUID,
        format: Format,
        in session: PostgresSession,
        source: (Source) -> Void,
        output: ([UInt8]) throws -> Void
    ) throws -> Outcome {
        try Archiver.prepare(session)
        return try withoutActuallyEscaping(output) { output in
            var attempt = 0
            while true {
                attempt += 1
                // Its lines from PostgreSQL, or where its archive is, in one snapshot: an archive
                // pass deletes the rows and records the file in one transaction.
                let found = try session.transaction("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") {
                    _ -> Found in
                    if let head = try Archiver.conversationHead(conversation, in: session) {
                        source(.postgres)
                        var encoder = ExportEncoder(format: format, output: output)
                        try encoder.conversation(head.line)
                        try Archiver.forEachMessageLine(of: conversation, in: session) { try encoder.message($0) }
                        try encoder.finish()
                        return .exported(messages: encoder.messages)
                    }
                    let rows = try session.query(
                        "SELECT path, sha256, message_count::text FROM archived_conversations WHERE id = $1::uuid",
                        [conversation.text]
                    )
                    guard let row = rows.rows.first, let path = row[0], let sha256 = row[1],
                        let messages = row[2].flatMap({ Int($0) })
                    else { return .notFound }
                    return .archived(path: path, sha256: sha256, messages: messages)
                }
                let recorded: (path: String, sha256: String, messages: Int)
                switch found {
                case .exported(let messages): return .exported(from: .postgres, messages: messages)
                case .notFound: return .notFound
                case .archived(let path, let sha256, let messages): recorded = (path, sha256, messages)
                }

                let descriptor = open(recorded.path, O_RDONLY | O_CLOEXEC)
                guard descriptor >= 0 else {
                    if errno == ENOENT, attempt < attempts { continue }
                    throw Durable.failure(recorded.path, "cannot open")
                }
                defer { close(descriptor) }
                source(.archive(path: recorded.path))
                let path = recorded.path

                // 1. The whole file checked before anything is printed.
                var lines = 0
                let checked = try ArchiveReader.read(descriptor: descriptor, path: path) { line in
                    lines += 1
                    let prefix = lines == 1 ? #"{"type":"conversation","# : #"{"type":"message","#
                    guard line.hasPrefix(prefix), line.last == "}" else {
                        throw ArchiveFileError(path: path, problem: "line \(lines) is not a \(lines == 1 ? "conversation" : "message")")
                    }
                }
                guard checked.sha256 == recorded.sha256 else {
                    throw ArchiveFileError(path: path, problem: "its SHA-256 is not the one recorded when it was archived")
                }
                guard checked.lines == recorded.messages + 1 else {
                    throw ArchiveFileError(path: path, problem: "it holds \(max(checked.lines - 1, 0)) messages; \(recorded.messages) were archived")
                }

                // 2. The same open file again, printed as it is read.
                guard lseek(descriptor, 0, SEEK_SET) == 0 else { throw Durable.failure(path, "cannot seek") }
                var encoder = ExportEncoder(format: format, output: output)
                let printed = try ArchiveReader.read(descriptor: descriptor, path: path) { line in
                    if encoder.started {
                        try encoder.message(line)
                    } else {
                        try encoder.conversation(line)
                    }
                }
                // Archive files are only ever replaced whole, so this one cannot have changed; were
                // it written over in place, the output would not end well-formed.
                guard printed.sha256 == recorded.sha256 else {
                    throw ArchiveFileError(path: path, problem: "it changed while it was read")
                }
                try encoder.finish()
                return .exported(from: .archive(path: path), messages: encoder.messages)
            }
        }
    }
}

/// Turns a conversation's archive lines into one export format, and hands the bytes out in
/// chunks of about ``ConversationExport/chunkBytes``.
/// What one snapshot of PostgreSQL held of a conversation being exported.
private enum Found {
    /// It was in PostgreSQL, and is written out.
    case exported(messages: Int)
    /// Its archive, as recorded.
    case archived(path: String, sha256: String, messages: Int)
    case notFound
}

package struct ExportEncoder {
    let format: ConversationExport.Format
    let output: ([UInt8]) throws -> Void
    private var pending: [UInt8] = []
    private(set) var started = false
    private(set) var messages = 0

    static let csvColumns = [
        "id", "conversation_id", "role", "created_at", "content", "tokens_used", "latency_ms", "metadata",
        "session_id", "contexts",
    ]

    package init(format: ConversationExport.Format, output: @escaping ([UInt8]) throws -> Void) {
        self.format = format
        self.output = output
        pending.reserveCapacity(ConversationExport.chunkBytes)
    }

    /// The conversation's line, which comes first.
    package mutating func conversation(_ line: String) throws {
        started = true
        switch format {
        case .jsonl:
            pending.append(contentsOf: line.utf8)
            pending.append(0x0A)
        case .json:
            pending.append(contentsOf: #"{"conversation":"#.utf8)
            pending.append(contentsOf: line.utf8)
            pending.append(contentsOf: #","messages":["#.utf8)
        case .csv:
            for (index, column) in Self.csvColumns.enumerated() {
                if index > 0 { pending.append(0x2C) }
                pending.append(contentsOf: column.utf8)
            }
            pending.append(contentsOf: [0x0D, 0x0A])
        }
        try flush(whenFull: true)
    }

    /// One message's line, in the conversation's order.
    package mutating func message(_ line: String) throws {
        messages += 1
        switch format {
        case .jsonl:
            pending.append(contentsOf: line.utf8)
            pending.append(0x0A)
        case .json:
            if messages > 1 { pending.append(0x2C) }
            pending.append(contentsOf: line.utf8)
        case .csv:
            try appendRow(line)
        }
        try flush(whenFull: true)
    }

    /// Closes the document and hands out what is left.
    package mutating func finish() throws {
        if format == .json { pending.append(contentsOf: "]}\n".utf8) }
        try flush(whenFull: false)
    }

    private mutating func flush(whenFull: Bool) throws {
        guard !pending.isEmpty, !whenFull || pending.count >= ConversationExport.chunkBytes else { return }
        try output(pending)
        pending.removeAll(keepingCapacity: true)
    }

    /// One CSV row of the message's columns; `metadata` as compact JSON, `contexts` as their number.
    private mutating func appendRow(_ line: String) throws {
        guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
            throw HistorianError(.unexpectedReply, "message \(messages) of the conversation is not a JSON object")
        }
        let contexts = (object["contexts"] as? [Any])?.count ?? 0
        let fields = [
            Self.text(object["id"]), Self.text(object["conversation_id"]), Self.text(object["role"]),
            Self.text(object["created_at"]), Self.text(object["content"]), Self.text(object["tokens_used"]),
            Self.text(object["latency_ms"]), Self.text(object["metadata"]), Self.text(object["session_id"]),
            String(contexts),
        ]
        for (index, field) in fields.enumerated() {
            if index > 0 { pending.append(0x2C) }
            Self.appendField(field, to: &pending)
        }
        pending.append(contentsOf: [0x0D, 0x0A])
    }

    /// A JSON value as a CSV field: strings as they are, numbers as JSON writes them, `null` (or
    /// no such key) empty, objects and arrays as compact JSON.
    static func text(_ value: Any?) -> String {
        switch value {
        case nil, is NSNull: return ""
        case let string as String: return string
        case let number as Int: return String(number)
        case let number as NSNumber: return number.stringValue
        case let value?:
            let options: JSONSerialization.WritingOptions = [.fragmentsAllowed, .sortedKeys, .withoutEscapingSlashes]
            guard let data = try? JSONSerialization.data(withJSONObject: value, options: options) else { return "" }
            return String(decoding: data, as: UTF8.self)
        }
    }

    /// RFC 4180: a field with a comma, quote, CR or LF goes in quotes, its quotes doubled.
    static func appendField(_ field: String, to out: inout [UInt8]) {
        let bytes = field.utf8
        guard bytes.contains(where: { $0 == 0x2C || $0 == 0x22 || $0 == 0x0D || $0 == 0x0A }) else {
            out.append(contentsOf: bytes)
            return
        }
        out.append(0x22)
        for byte in bytes {
            if byte == 0x22 { out.append(0x22) }
            out.append(byte)
        }
        out.append(0x22)
    }
}
