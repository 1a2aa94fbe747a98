/// One reader of outside input, fed arbitrary bytes by libFuzzer (`scripts/fuzz`) or, replaying
/// the corpus and the regressions, by the tests.
///
/// A bug shows as a crash (a trap, or what the address sanitizer catches) or as a property the
/// target checks that did not hold; see docs/fuzzing.md for what each one feeds.
package enum FuzzTarget: String, CaseIterable, Sendable, CustomStringConvertible {
    case streamReply = "stream-reply"
    case entry
    case archive
    case gzip
    case configuration

    /// What the target feeds, in one line.
    package var summary: String {
        switch self {
        case .streamReply: "RESP bytes through hiredis' reader, the stream decoders and validation"
        case .entry: "one stream entry's fields (name=value lines) through validation"
        case .archive: "archive text, gzipped, through the archive line reader and what reads the lines"
        case .gzip: "gzip bytes through the decompressor, whole and piece by piece"
        case .configuration: "configuration values (key: value lines) through their parsing and redaction"
        }
    }

    /// Feeds `input` to the target.
    /// - Returns: the properties that did not hold; empty when all did.
    package func run(_ input: [UInt8]) -> [String] {
        var findings = FuzzFindings()
        switch self {
        case .streamReply: StreamReplyTarget.run(input, &findings)
        case .entry: EntryTarget.run(input, &findings)
        case .archive: ArchiveTarget.run(input, &findings)
        case .gzip: GzipTarget.run(input, &findings)
        case .configuration: ConfigurationTarget.run(input, &findings)
        }
        return findings.problems
    }

    package var description: String { rawValue }
}
