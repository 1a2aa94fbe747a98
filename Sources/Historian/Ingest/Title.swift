/// Conversation titles derived from a first user message.
public enum Title {
    /// The longest derived title, in characters.
    public static let maximumLength = 80

    /// The first line of `content` that is not blank, runs of white space folded to one space,
    /// cut on a word boundary to at most 80 characters; `nil` when nothing is left.
    ///
    /// Reads only as far as the title reaches: a 1 MiB message costs no more than a short one.
    public static func derive(from content: String) -> String? {
        if let ascii = deriveASCII(from: content) { return ascii }
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

    /// `derive` for content whose title is ASCII, byte by byte: there every character is one
    /// byte (a CR LF pair, one character, counts as two newlines, which fold the same way), and
    /// white space and newlines are the ASCII ones (`Character.isWhitespace` and `isNewline`).
    /// Looking up Unicode properties for each character made titles a notable part of the
    /// process's work per message. `.some(nil)`: nothing is left; `nil`: a byte beyond ASCII
    /// came before the title was done, and `derive` reads the content as characters instead.
    static func deriveASCII(from content: String) -> String?? {
        var content = content
        return content.withUTF8 { bytes -> String?? in
            var title: [UInt8] = []
            var word: [UInt8] = []
            /// Adds the word in hand; false once the title is full.
            func takeWord() -> Bool {
                defer { word.removeAll(keepingCapacity: true) }
                guard !word.isEmpty else { return true }
                if title.isEmpty {
                    title = Array(word.prefix(maximumLength))
                    return word.count <= maximumLength
                }
                guard title.count + 1 + word.count <= maximumLength else { return false }
                title.append(0x20)
                title += word
                return true
            }
            for byte in bytes {
                guard byte < 0x80 else { return nil }
                if byte >= 0x0A && byte <= 0x0D {
                    // Newlines: LF, VT, FF, CR.
                    if !title.isEmpty || !word.isEmpty { break }
                    continue
                }
                if byte == 0x20 || byte == 0x09 {
                    if !takeWord() { return .some(String(decoding: title, as: UTF8.self)) }
                    continue
                }
                word.append(byte)
                if word.count > maximumLength || (!title.isEmpty && title.count + 1 + word.count > maximumLength) {
                    break
                }
            }
            _ = takeWord()
            return .some(title.isEmpty ? nil : String(decoding: title, as: UTF8.self))
        }
    }
}
