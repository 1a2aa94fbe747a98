import Foundation

/// A row of the file that was not imported, and why: reported by its SQLite IDs, never with its
/// content.
public struct ImportProblem: Sendable, Hashable, CustomStringConvertible {
    /// The conversation's SQLite ID, as `ImportMapping.displayed` shows it.
    public var conversation: String
    /// The message's SQLite ID; `nil` for a problem of the conversation row.
    public var message: String?
    public var rejection: Rejection
    /// For a conversation row: how many of its messages stayed out with it.
    public var messagesLeftOut = 0

    /// `conversation <id> message <id>: <reason>: <detail>`.
    public var description: String {
        var line = "conversation \(conversation)"
        if let message { line += " message \(message)" }
        line += ": \(rejection.reason): \(rejection.detail)"
        if messagesLeftOut > 0 {
            line +=
                messagesLeftOut == 1
                ? " (its message is not imported)" : " (its \(messagesLeftOut) messages are not imported)"
        }
        return line
    }
}

/// How far an import has come.
public struct ImportProgress: Sendable, Hashable {
    public var conversations = 0
    public var conversationsTotal = 0
    public var messages = 0
    public var messagesTotal = 0
    public var elapsed = Duration.zero

    /// Done, from 0 to 1: by messages, or by conversations in a file without messages.
    public var fraction: Double {
        if messagesTotal > 0 { return min(1, Double(messages) / Double(messagesTotal)) }
        if conversationsTotal > 0 { return min(1, Double(conversations) / Double(conversationsTotal)) }
        return 1
    }

    /// Messages per second so far.
    public var rate: Double {
        let seconds = elapsed.inSeconds
        return seconds > 0 ? Double(messages) / seconds : 0
    }

    /// One line for a terminal, redrawn in place, short enough for 80 columns:
    /// `[=========>          ]  48%  9600/20000 messages, 5210/s`.
    public func bar(width: Int = 20) -> String {
        let filled = Int((fraction * Double(width)).rounded(.down))
        let head = filled < width ? ">" + String(repeating: " ", count: width - filled - 1) : ""
        return "[" + String(repeating: "=", count: filled) + head + "] "
            + String(format: "%3ld%%  %ld/%ld messages, %.0f/s", percent, messages, messagesTotal, rate)
    }

    /// One line of a log: `progress: 52% (10400/20000 messages, 520/1000 conversations, 5210 messages/s)`.
    public var line: String {
        "progress: \(percent)% (\(messages)/\(messagesTotal) messages, \(conversations)/\(conversationsTotal) conversations, "
            + String(format: "%.0f messages/s)", rate)
    }

    private var percent: Int { Int((fraction * 100).rounded(.down)) }
}

/// When plain progress lines are written (output that is not a terminal): each time another
/// tenth is done, and at least every `every` while work goes on, so a log shows a long import
/// moving without filling up.
public struct ProgressLines: Sendable {
    public var every: Duration
    private var tenths = 0
    private var last = Duration.zero

    public init(every: Duration = .seconds(10)) {
        self.every = every
    }

    /// The line to write now, if any.
    public mutating func line(for progress: ImportProgress) -> String? {
        let reached = Int((progress.fraction * 10).rounded(.down))
        guard reached > tenths || progress.elapsed - last >= every else { return nil }
        tenths = max(tenths, reached)
        last = progress.elapsed
        return progress.line
    }
}

/// What an import did, or would do (`--dry-run`).
public struct ImportSummary: Sendable, Hashable {
    public struct Counts: Sendable, Hashable {
        /// Written by this run (with `--dry-run`: would be).
        public var imported = 0
        /// In PostgreSQL already, as the file has them: nothing to write.
        public var alreadyPresent = 0
        /// Not imported; each reported with its reason.
        public var reported = 0

        public var total: Int { imported + alreadyPresent + reported }
    }

    public var conversations = Counts()
    public var messages = Counts()
    public var elapsed = Duration.zero
    public var dryRun = false

    /// Messages read per second, over the whole run.
    public var rate: Double {
        let seconds = elapsed.inSeconds
        return seconds > 0 ? Double(messages.total) / seconds : 0
    }

    /// The summary's lines.
    public var lines: [String] {
        let imported = dryRun ? "to import" : "imported"
        func describe(_ counts: Counts, _ noun: String) -> String {
            "\(noun): \(counts.imported) \(imported), \(counts.alreadyPresent) already present, \(counts.reported) reported"
        }
        return [
            (dryRun ? "dry run: nothing written; " : "")
                + String(
                    format: "%ld messages read in %.1f s (%.0f messages/s)",
                    messages.total,
                    elapsed.inSeconds,
                    rate
                ),
            describe(conversations, "conversations"),
            describe(messages, "messages"),
        ]
    }
}

extension Duration {
    /// The duration in seconds, as a `Double`.
    var inSeconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}
