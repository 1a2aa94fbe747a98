/// Conversation titles derived from a first user message.
public enum Title {
    /// The longest derived title, in characters.
    public static let maximumLength = 80

    /// The first line of `content` that is not blank, runs of white space folded to one space,
    /// cut on a word boundary to at most 80 characters; `nil` when nothing is left.
    ///
    /// Reads only as far as the title reaches: a 1 MiB message costs no more than a short one.
    public static func derive(from content: String) -> String? {
        var title = ""
        var titleLength = 0
        var word = ""
        var wordLength = 0
        /// Adds the word in hand; false once the title is full.
        func takeWord() -> Bool {
            defer {
                word = ""
                wordLength = 0
            }
            guard wordLength > 0 else { return true }
            if titleLength == 0 {
                // A single word longer than the limit: a hard cut is the only boundary there is.
                title = wordLength > maximumLength ? String(word.prefix(maximumLength)) : word
                titleLength = min(wordLength, maximumLength)
                return wordLength <= maximumLength
            }
            guard titleLength + 1 + wordLength <= maximumLength else { return false }
            title += " "
            title += word
            titleLength += 1 + wordLength
            return true
        }
        for character in content {
            if character.isNewline {
                if titleLength > 0 || wordLength > 0 { break }
                continue
            }
            if character.isWhitespace {
                if !takeWord() { return title }
                continue
            }
            word.append(character)
            wordLength += 1
            // This word can no longer fit: no need to read the rest of it.
            if wordLength > maximumLength || (titleLength > 0 && titleLength + 1 + wordLength > maximumLength) {
                break
            }
        }
        _ = takeWord()
        return title.isEmpty ? nil : title
    }
}
