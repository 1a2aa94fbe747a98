/// Conversation titles derived from a first user message.
public enum Title {
    /// The longest derived title, in characters.
    public static let maximumLength = 80

    /// The first line of `content`, runs of white space folded to one space, cut on a word
    /// boundary to at most 80 characters; `nil` when nothing is left.
    public static func derive(from content: String) -> String? {
        let firstLine = content.split(omittingEmptySubsequences: true, whereSeparator: \.isNewline)
            .first { !$0.allSatisfy(\.isWhitespace) } ?? ""
        let words = firstLine.split(whereSeparator: \.isWhitespace)
        guard !words.isEmpty else { return nil }
        var title = ""
        for word in words {
            let separator = title.isEmpty ? 0 : 1
            if title.count + separator + word.count > maximumLength {
                if title.isEmpty {
                    // A single word longer than the limit: a hard cut is the only boundary there is.
                    title = String(word.prefix(maximumLength))
                }
                break
            }
            if separator == 1 { title += " " }
            title += word
        }
        return title
    }
}
