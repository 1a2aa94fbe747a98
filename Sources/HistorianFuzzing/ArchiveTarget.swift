import Crypto
import Foundation
import Gzip
import Historian

/// An archive file's text (a conversation line, then message lines), gzipped as the archiver
/// writes it, in one member or two, and read back in pieces by the archive line reader; each line
/// then goes where the history API and `historian export` send it.
///
/// The text is what the fuzzer writes, not the gzip bytes around it (the `gzip` target has those),
/// so that its mutations reach the lines.
enum ArchiveTarget {
    static let path = "fuzz.jsonl.gz"

    static func run(_ input: [UInt8], _ findings: inout FuzzFindings) {
        let file = compress(input)
        var read: [String] = []
        var consumers = LineConsumers()
        let outcome: Result<(sha256: String, contentSHA256: String, lines: Int), ArchiveFileError>
        do {
            var reader = try ArchiveLineReader(path: path)
            for piece in InputPieces.split(file) {
                try reader.read(piece) { line in
                    read.append(line)
                    consumers.take(line)
                }
            }
            outcome = .success(try reader.finish())
        } catch let error as ArchiveFileError {
            outcome = .failure(error)
        } catch {
            findings.expect(false, "the archive line reader threw \(error)")
            return
        }
        consumers.finish(&findings)

        // The reader against a plain split of the text at its newlines.
        let expected = plainLines(input)
        findings.expect(read == expected.lines, "the lines read differ from the text's")
        switch outcome {
        case .success(let result):
            findings.expect(expected.problem == nil, "read whole, but: \(expected.problem ?? "")")
            findings.expect(result.lines == read.count, "\(result.lines) lines counted, \(read.count) read")
            findings.expect(result.sha256 == hex(SHA256.hash(data: file)), "the file's SHA-256 is wrong")
            findings.expect(result.contentSHA256 == hex(SHA256.hash(data: input)), "the text's SHA-256 is wrong")
            if let exported = consumers.jsonl {
                findings.expect(exported == input, "the JSON lines export differs from the archive's text")
            }
        case .failure(let error):
            findings.expect(
                error.problem == expected.problem && error.path == path,
                "failed with \"\(error.problem)\", expected \"\(expected.problem ?? "no failure")\""
            )
        }
    }

    /// The text gzipped as one member, or as two when its CRC-32 says so (files concatenated with
    /// `cat` read as one), split where its CRC-32 says.
    static func compress(_ text: [UInt8]) -> [UInt8] {
        let checksum = Int(crc32(text))
        let split = checksum % 2 == 0 ? text.count : (checksum >> 1) % (text.count + 1)
        var file: [UInt8] = []
        for part in [text[..<split], text[split...]] where part.count > 0 || file.isEmpty {
            do {
                let compressor = try GzipCompressor()
                try compressor.compress(part, into: &file)
                try compressor.finish(into: &file)
            } catch {
                preconditionFailure("gzip could not compress: \(error)")
            }
        }
        return file
    }

    /// The lines of `text` as a plain split has them, up to the first that is not UTF-8, and the
    /// problem that the reader must report, if any.
    static func plainLines(_ text: [UInt8]) -> (lines: [String], problem: String?) {
        var lines: [String] = []
        var parts = text.split(separator: 0x0A, omittingEmptySubsequences: false)
        let unterminated = parts.removeLast()
        for part in parts {
            guard let line = String(validating: part, as: UTF8.self) else {
                return (lines, "line \(lines.count + 1) is not UTF-8")
            }
            lines.append(line)
        }
        return (lines, unterminated.isEmpty ? nil : "the last line has no newline")
    }

    static func hex(_ digest: some Sequence<UInt8>) -> String {
        digest.map { byte in
            let digits = Array("0123456789abcdef".utf8)
            return String(decoding: [digits[Int(byte >> 4)], digits[Int(byte & 0xF)]], as: UTF8.self)
        }
        .joined()
    }
}

/// Where the lines of an archive go: the checks `historian export` and `restore` make of each,
/// the history API's reading of message lines, and the export in every format.
private struct LineConsumers {
    private var count = 0
    /// Whether every line so far passed the export's check, which stops at the first that does not.
    private var exportable = true
    private var encoders: [(format: ConversationExport.Format, encoder: ExportEncoder, failed: Bool)] = []
    private let output = ExportOutput()
    private var problems: [String] = []

    init() {
        for format in ConversationExport.Format.allCases {
            let output = output
            encoders.append((format, ExportEncoder(format: format) { output.append($0, as: format) }, false))
        }
    }

    /// The JSON lines export, when every line went to it.
    var jsonl: [UInt8]? {
        exportable ? output.bytes[.jsonl] ?? [] : nil
    }

    mutating func take(_ line: String) {
        count += 1
        let isConversation = count == 1
        let prefix = isConversation ? #"{"type":"conversation","# : #"{"type":"message","#
        exportable = exportable && line.hasPrefix(prefix) && line.last == "}"
        if !isConversation {
            _ = try? HistoryLine(line: line, in: ArchiveTarget.path)
        }
        guard exportable else { return }
        for index in encoders.indices where !encoders[index].failed {
            do {
                if isConversation {
                    try encoders[index].encoder.conversation(line)
                } else {
                    try encoders[index].encoder.message(line)
                }
            } catch {
                encoders[index].failed = true
                if encoders[index].format != .csv {
                    problems.append("the \(encoders[index].format) export failed: \(error)")
                }
            }
        }
    }

    mutating func finish(_ findings: inout FuzzFindings) {
        for index in encoders.indices where exportable && count > 0 && !encoders[index].failed {
            do {
                try encoders[index].encoder.finish()
            } catch {
                problems.append("the \(encoders[index].format) export failed to finish: \(error)")
            }
        }
        for problem in problems { findings.expect(false, problem) }
    }
}

/// The bytes each export wrote; a class, as the encoders' output closures append to it.
private final class ExportOutput {
    var bytes: [ConversationExport.Format: [UInt8]] = [:]

    func append(_ chunk: [UInt8], as format: ConversationExport.Format) {
        bytes[format, default: []] += chunk
    }
}
