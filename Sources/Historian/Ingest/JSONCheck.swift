/// Checks of the JSON an entry carries (`metadata`, `contexts`) in one pass over its bytes,
/// building nothing.
///
/// The grammar is RFC 8259's, strictly: one value between optional whitespace (space, tab, LF,
/// CR); strings without raw control bytes (below 0x20) and with the escapes `\" \\ \/ \b \f \n
/// \r \t \uXXXX` only; numbers `-? (0|[1-9][0-9]*) (\.[0-9]+)? ([eE][+-]?[0-9]+)?`; `true`,
/// `false`, `null`; no trailing commas, no byte-order mark, no comments. On top of it, what
/// PostgreSQL's `jsonb` refuses on input is refused too: the escape `\u0000`, and surrogate
/// escapes that are not a high one (`\ud800`–`\udbff`) followed at once by a low one
/// (`\udc00`–`\udfff`). Containers nest at most `maximumDepth` deep, as in Foundation's parsers,
/// which these checks replace; the nesting is followed with a fixed stack, never by recursion.
///
/// The bytes must be valid UTF-8: the callers (`EntryValidator`) have validated them with its
/// `text(_:_:)` first (`String(validating:as:)`), so bytes from 0x80 up are passed over inside
/// strings rather than decoded a second time; outside strings they are syntax errors.
enum JSONCheck {
    /// Containers nested deeper than this are refused, as `JSONSerialization` and `JSONDecoder`
    /// refuse them (512 nested arrays or objects pass, 513 do not).
    static let maximumDepth = 512

    static let contextsNotAnArray = Rejection(.invalidJSON, "contexts is not a JSON array")
    static let contextsNotOfTheShape = Rejection(
        .invalidJSON,
        "contexts is not an array of {doc_id, content, score, metadata} objects"
    )
    static let contextsEscapedNUL = Rejection(.invalidJSON, "contexts contains \\u0000, which PostgreSQL cannot store")

    /// Whether `bytes` are one JSON value (any, also a scalar), by the grammar above.
    static func isValid(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        scan(bytes, numbers: .syntax, ifEmpty: false) { scanner in
            scanner.value(depth: 0) && scanner.atEnd()
        }
    }

    static func isValid(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBufferPointer { isValid($0) }
    }

    /// Whether `bytes` are one JSON object, by the grammar above, whose numbers are all finite as
    /// a `Double` (`1e400` is refused, `1e-400` passes), as `JSONSerialization` had them; but
    /// every number is checked, also one a later value of the same key replaces, which
    /// `JSONSerialization` never converted.
    static func isJSONObject(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        scan(bytes, numbers: .finite, ifEmpty: false) { scanner in
            scanner.next() == .openBrace && scanner.value(depth: 0) && scanner.atEnd()
        }
    }

    static func isJSONObject(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBufferPointer { isJSONObject($0) }
    }

    /// Checks that `bytes` are a JSON array of objects in which `doc_id` and `content` are strings,
    /// `score` a number and `metadata` an object, each also null or absent; other keys are allowed,
    /// their values only checked against the grammar.
    ///
    /// The details are the ones the `JSONDecoder` this replaces led to: `\u0000` anywhere comes
    /// first; then JSON that is not valid, "not an array of … objects"; then a top level that is
    /// not an array; then, in the order of decoding (elements in order, in each `doc_id`,
    /// `content`, `score`, `metadata`), an element that is not an object or a field of the wrong
    /// type, as `contexts[2]` or `contexts[0].score`, or a score that is no finite `Double` (or
    /// a nonzero number that rounds to zero, which PostgreSQL's `double precision` refuses too),
    /// "not an array of … objects" again. A key given twice has every value checked, since
    /// PostgreSQL keeps the last and `JSONDecoder` checked the first.
    static func checkContexts(_ bytes: UnsafeBufferPointer<UInt8>) throws(Rejection) {
        if let rejection = contextsRejection(bytes) { throw rejection }
    }

    static func checkContexts(_ bytes: [UInt8]) throws(Rejection) {
        if let rejection = bytes.withUnsafeBufferPointer({ contextsRejection($0) }) { throw rejection }
    }

    private static func contextsRejection(_ bytes: UnsafeBufferPointer<UInt8>) -> Rejection? {
        switch scan(bytes, numbers: .syntax, ifEmpty: .invalid, { $0.contexts() }) {
        case .valid:
            return nil
        case .invalid:
            // On this path only, which valid JSON never takes: an escaped NUL anywhere in the
            // text takes precedence over the syntax error, as it did.
            return containsEscapedNUL(bytes) ? contextsEscapedNUL : contextsNotOfTheShape
        case .notAnArray:
            return contextsNotAnArray
        case .wrongType(let index, let field):
            return Rejection(
                .invalidJSON,
                "contexts[\(index)]\(field.map { ".\($0.rawValue)" } ?? "") has the wrong type"
            )
        case .unrepresentableScore:
            return contextsNotOfTheShape
        }
    }

    /// Whether the text holds the escape `\u0000`, read from the start with escapes in pairs (so
    /// `\\u0000`, an escaped backslash and then text, is not one), whether or not the text is
    /// valid JSON: the check the validator made before parsing, kept for choosing the detail of
    /// JSON that is not valid. In valid JSON the single pass finds the same escapes.
    static func containsEscapedNUL(_ raw: UnsafeBufferPointer<UInt8>) -> Bool {
        var index = 0
        while index < raw.count {
            guard raw[index] == .backslash else {
                index += 1
                continue
            }
            if index + 5 < raw.count, raw[index + 1] == UInt8(ascii: "u"), raw[index + 2] == .zero,
                raw[index + 3] == .zero, raw[index + 4] == .zero, raw[index + 5] == .zero
            {
                return true
            }
            index += 2
        }
        return false
    }

    private static func scan<Result>(
        _ bytes: UnsafeBufferPointer<UInt8>,
        numbers: NumberRule,
        ifEmpty: Result,
        _ body: (inout Scanner) -> Result
    ) -> Result {
        guard let start = bytes.baseAddress, !bytes.isEmpty else { return ifEmpty }
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: maximumDepth) { stack in
            var scanner = Scanner(start: start, end: start + bytes.count, stack: stack.baseAddress!, numbers: numbers)
            return body(&scanner)
        }
    }

    /// What numbers must be besides well-formed.
    enum NumberRule {
        /// Nothing more.
        case syntax
        /// Finite as a `Double` (what `JSONSerialization` required).
        case finite
        /// Finite as a `Double`, and not rounded to zero unless it is zero (what `JSONDecoder`
        /// required of a `Double`, and PostgreSQL's `double precision` requires).
        case score
    }

    enum NumberVerdict {
        case invalid, representable, unrepresentable
    }

    /// The fields of a context element that are checked, in the order `JSONDecoder` decoded them.
    enum ContextField: String, CaseIterable {
        case docID = "doc_id"
        case content
        case score
        case metadata
    }

    enum ContextsOutcome: Equatable {
        case valid
        /// Not valid JSON (or holding what `jsonb` refuses).
        case invalid
        case notAnArray
        /// An element that is not an object (`field` nil) or a field of the wrong type.
        case wrongType(index: Int, field: ContextField?)
        case unrepresentableScore
    }

    enum FieldProblem {
        case wrongType, unrepresentable
    }

    /// The first problem of each checked field of one element.
    struct FieldProblems {
        private var problems: (FieldProblem?, FieldProblem?, FieldProblem?, FieldProblem?)

        init() {}

        subscript(field: ContextField) -> FieldProblem? {
            get {
                switch field {
                case .docID: problems.0
                case .content: problems.1
                case .score: problems.2
                case .metadata: problems.3
                }
            }
            set {
                switch field {
                case .docID: problems.0 = newValue
                case .content: problems.1 = newValue
                case .score: problems.2 = newValue
                case .metadata: problems.3 = newValue
                }
            }
        }

        /// The problem decoding would have met first.
        var first: (ContextField, FieldProblem)? {
            for field in ContextField.allCases {
                if let problem = self[field] { return (field, problem) }
            }
            return nil
        }
    }

    /// A cursor over the bytes, with a stack for the kinds of the open containers.
    struct Scanner {
        var p: UnsafePointer<UInt8>
        let end: UnsafePointer<UInt8>
        /// The opening byte (`{` or `[`) of each open container, `maximumDepth` of them at most.
        let stack: UnsafeMutablePointer<UInt8>
        let numbers: NumberRule

        init(
            start: UnsafePointer<UInt8>,
            end: UnsafePointer<UInt8>,
            stack: UnsafeMutablePointer<UInt8>,
            numbers: NumberRule
        ) {
            self.p = start
            self.end = end
            self.stack = stack
            self.numbers = numbers
        }

        @inline(__always)
        mutating func skipWhitespace() {
            while p < end {
                let byte = p.pointee
                guard byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 else { return }
                p += 1
            }
        }

        /// The next byte after whitespace (not consumed), nil at the end.
        @inline(__always)
        mutating func next() -> UInt8? {
            skipWhitespace()
            return p < end ? p.pointee : nil
        }

        /// Whether only whitespace is left.
        mutating func atEnd() -> Bool {
            skipWhitespace()
            return p == end
        }

        /// Scans one value, nested ones included, after optional whitespace; `base` containers
        /// are open around it.
        mutating func value(depth base: Int) -> Bool {
            var depth = base
            while true {
                // A value starts here.
                guard let byte = next() else { return false }
                switch byte {
                case .openBrace, .openBracket:
                    guard depth < JSONCheck.maximumDepth else { return false }
                    p += 1
                    guard let first = next() else { return false }
                    if first == Self.closing(byte) {
                        p += 1
                    } else {
                        stack[depth] = byte
                        depth += 1
                        if byte == .openBrace, !member() { return false }
                        continue
                    }
                case .quote:
                    guard string() else { return false }
                case UInt8(ascii: "t"):
                    guard literal("true") else { return false }
                case UInt8(ascii: "f"):
                    guard literal("false") else { return false }
                case UInt8(ascii: "n"):
                    guard literal("null") else { return false }
                case .minus, .zero...UInt8(ascii: "9"):
                    guard number(numbers) == .representable else { return false }
                default:
                    return false
                }
                // A value ended here: close containers until one goes on with another value.
                while true {
                    guard depth > base else { return true }
                    guard let byte = next() else { return false }
                    p += 1
                    let opening = stack[depth - 1]
                    if byte == .comma {
                        if opening == .openBrace, !member() { return false }
                        break
                    }
                    guard byte == Self.closing(opening) else { return false }
                    depth -= 1
                }
            }
        }

        @inline(__always)
        static func closing(_ opening: UInt8) -> UInt8 {
            opening + 2  // `{` 0x7B and `}` 0x7D, `[` 0x5B and `]` 0x5D
        }

        /// An object member's key and colon, up to its value.
        mutating func member() -> Bool {
            guard next() == .quote, string(), next() == .colon else { return false }
            p += 1
            return true
        }

        @inline(__always)
        mutating func literal(_ word: StaticString) -> Bool {
            let count = word.utf8CodeUnitCount
            guard end - p >= count else { return false }
            let bytes = word.utf8Start
            for offset in 0..<count where p[offset] != bytes[offset] { return false }
            p += count
            return true
        }

        @inline(__always)
        static func isDigit(_ byte: UInt8) -> Bool {
            byte &- .zero < 10
        }

        /// Scans a number from its first byte (`-` or a digit).
        mutating func number(_ rule: NumberRule) -> NumberVerdict {
            let start = p
            if p.pointee == .minus { p += 1 }
            guard p < end, Self.isDigit(p.pointee) else { return .invalid }
            if p.pointee == .zero {
                p += 1
            } else {
                repeat { p += 1 } while p < end && Self.isDigit(p.pointee)
            }
            if p < end, p.pointee == UInt8(ascii: ".") {
                p += 1
                guard p < end, Self.isDigit(p.pointee) else { return .invalid }
                repeat { p += 1 } while p < end && Self.isDigit(p.pointee)
            }
            let significandEnd = p
            var exponent = 0
            if p < end, p.pointee | 0x20 == UInt8(ascii: "e") {
                p += 1
                if p < end, p.pointee == .plus || p.pointee == .minus { p += 1 }
                guard p < end, Self.isDigit(p.pointee) else { return .invalid }
                repeat {
                    exponent = min(exponent * 10 + Int(p.pointee - .zero), 1_000_000)
                    p += 1
                } while p < end && Self.isDigit(p.pointee)
            }
            // With fewer than 300 digits and an exponent below 300 in all, a number is either zero
            // or between 1e-300 and 1e300 in magnitude: a normal Double. Others are parsed.
            guard rule != .syntax, (p - start) + exponent >= 300 else { return .representable }
            let text = String(decoding: UnsafeBufferPointer(start: start, count: p - start), as: UTF8.self)
            guard let value = Double(text), value.isFinite else { return .unrepresentable }
            if rule == .score, value == 0,
                UnsafeBufferPointer(start: start, count: significandEnd - start).contains(where: {
                    $0 > .zero && Self.isDigit($0)
                })
            {
                return .unrepresentable
            }
            return .representable
        }

        /// Scans a string from its opening quote past its closing one.
        mutating func string() -> Bool {
            p += 1
            while true {
                // Eight bytes at a time while none of them is a quote, a backslash or a control byte.
                while end - p >= 8 {
                    let word = UInt64(littleEndian: UnsafeRawPointer(p).loadUnaligned(as: UInt64.self))
                    let special = Self.specialBytes(word)
                    if special != 0 {
                        p += special.trailingZeroBitCount >> 3
                        break
                    }
                    p += 8
                }
                guard p < end else { return false }
                let byte = p.pointee
                p += 1
                if byte == .quote {
                    return true
                } else if byte == .backslash {
                    guard escape() else { return false }
                } else if byte < 0x20 {
                    return false
                }
            }
        }

        /// The high bit of each byte of `word` that is a quote, a backslash or below 0x20, and
        /// maybe of bytes above such a byte: the lowest one set is exact, as a borrow only
        /// travels up from a byte that matched. Bytes from 0x80 up never match.
        @inline(__always)
        static func specialBytes(_ word: UInt64) -> UInt64 {
            let ones: UInt64 = 0x0101_0101_0101_0101
            let quote = word ^ (ones &* UInt64(UInt8.quote))
            let backslash = word ^ (ones &* UInt64(UInt8.backslash))
            let zeroQuote = (quote &- ones) & ~quote
            let zeroBackslash = (backslash &- ones) & ~backslash
            let control = (word &- ones &* 0x20) & ~word
            return (zeroQuote | zeroBackslash | control) & (ones &* 0x80)
        }

        /// An escape, after its backslash.
        mutating func escape() -> Bool {
            guard p < end else { return false }
            let byte = p.pointee
            p += 1
            switch byte {
            case .quote, .backslash, UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"), UInt8(ascii: "n"),
                UInt8(ascii: "r"), UInt8(ascii: "t"):
                return true
            case UInt8(ascii: "u"):
                guard let unit = hex4() else { return false }
                switch unit {
                case 0:
                    return false  // jsonb: "\u0000 cannot be converted to text"
                case 0xD800...0xDBFF:
                    guard end - p >= 2, p[0] == .backslash, p[1] == UInt8(ascii: "u") else { return false }
                    p += 2
                    guard let low = hex4(), (0xDC00...0xDFFF).contains(low) else { return false }
                    return true
                case 0xDC00...0xDFFF:
                    return false
                default:
                    return true
                }
            default:
                return false
            }
        }

        /// Four hex digits, as a UTF-16 code unit.
        mutating func hex4() -> UInt32? {
            guard end - p >= 4 else { return nil }
            var unit: UInt32 = 0
            for offset in 0..<4 {
                guard let digit = JSONCheck.hexDigit(p[offset]) else { return nil }
                unit = unit << 4 | digit
            }
            p += 4
            return unit
        }

        /// Scans a `contexts` text.
        mutating func contexts() -> ContextsOutcome {
            guard let first = next() else { return .invalid }
            guard first == .openBracket else {
                return value(depth: 0) && atEnd() ? .notAnArray : .invalid
            }
            p += 1
            var problem: ContextsOutcome?
            guard let byte = next() else { return .invalid }
            if byte == .closeBracket {
                p += 1
            } else {
                var index = 0
                while true {
                    guard let byte = next() else { return .invalid }
                    if byte == .openBrace {
                        guard let problems = element() else { return .invalid }
                        if problem == nil, let (field, fieldProblem) = problems.first {
                            problem =
                                fieldProblem == .wrongType
                                ? .wrongType(index: index, field: field) : .unrepresentableScore
                        }
                    } else {
                        guard value(depth: 1) else { return .invalid }
                        if problem == nil { problem = .wrongType(index: index, field: nil) }
                    }
                    index += 1
                    guard let separator = next() else { return .invalid }
                    p += 1
                    if separator == .closeBracket { break }
                    guard separator == .comma else { return .invalid }
                }
            }
            guard atEnd() else { return .invalid }
            return problem ?? .valid
        }

        /// Scans one element object of `contexts`, from its opening brace; nil if not valid JSON.
        mutating func element() -> FieldProblems? {
            p += 1
            var problems = FieldProblems()
            guard let first = next() else { return nil }
            if first == .closeBrace {
                p += 1
                return problems
            }
            while true {
                guard next() == .quote else { return nil }
                let keyStart = p + 1
                guard string() else { return nil }
                let field = JSONCheck.contextField(UnsafeBufferPointer(start: keyStart, count: p - 1 - keyStart))
                guard next() == .colon else { return nil }
                p += 1
                guard let byte = next() else { return nil }
                var problem: FieldProblem?
                switch field {
                case nil:
                    guard value(depth: 2) else { return nil }
                case .score? where byte == .minus || Self.isDigit(byte):
                    switch number(.score) {
                    case .invalid: return nil
                    case .unrepresentable: problem = .unrepresentable
                    case .representable: break
                    }
                case let field?:
                    guard value(depth: 2) else { return nil }
                    if byte != UInt8(ascii: "n") {
                        switch field {
                        case .docID, .content: if byte != .quote { problem = .wrongType }
                        case .metadata: if byte != .openBrace { problem = .wrongType }
                        case .score: problem = .wrongType
                        }
                    }
                }
                if let field, let problem, problems[field] == nil { problems[field] = problem }
                guard let separator = next() else { return nil }
                p += 1
                if separator == .closeBrace { return problems }
                guard separator == .comma else { return nil }
            }
        }
    }

    /// The checked field a key (between its quotes, already scanned) names, if any. Keys are
    /// compared after unescaping, as `JSONDecoder` compared them (`"doc\u005fid"` is `doc_id`).
    static func contextField(_ key: UnsafeBufferPointer<UInt8>) -> ContextField? {
        if let field = contextField(unescaped: key) { return field }
        guard key.contains(.backslash) else { return nil }
        // Rare: unescape, with a placeholder for characters outside ASCII, which no name has.
        var bytes: [UInt8] = []
        var index = 0
        while index < key.count {
            let byte = key[index]
            index += 1
            guard byte == .backslash else {
                bytes.append(byte)
                continue
            }
            let escaped = key[index]
            index += 1
            switch escaped {
            case UInt8(ascii: "b"): bytes.append(0x08)
            case UInt8(ascii: "f"): bytes.append(0x0C)
            case UInt8(ascii: "n"): bytes.append(0x0A)
            case UInt8(ascii: "r"): bytes.append(0x0D)
            case UInt8(ascii: "t"): bytes.append(0x09)
            case UInt8(ascii: "u"):
                var unit: UInt32 = 0
                for offset in 0..<4 { unit = unit << 4 | (hexDigit(key[index + offset]) ?? 0) }
                index += 4
                bytes.append(unit < 0x80 ? UInt8(unit) : 0xFF)
            default: bytes.append(escaped)  // `"`, `\`, `/`
            }
        }
        return bytes.withUnsafeBufferPointer { contextField(unescaped: $0) }
    }

    private static func contextField(unescaped key: UnsafeBufferPointer<UInt8>) -> ContextField? {
        let field: ContextField
        switch key.count {
        case 6: field = .docID
        case 7: field = .content
        case 5: field = .score
        case 8: field = .metadata
        default: return nil
        }
        return key.elementsEqual(field.rawValue.utf8) ? field : nil
    }

    @inline(__always)
    static func hexDigit(_ byte: UInt8) -> UInt32? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): UInt32(byte - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): UInt32(byte - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): UInt32(byte - UInt8(ascii: "A") + 10)
        default: nil
        }
    }
}

extension UInt8 {
    fileprivate static var quote: UInt8 { 0x22 }
    fileprivate static var backslash: UInt8 { 0x5C }
    fileprivate static var openBrace: UInt8 { 0x7B }
    fileprivate static var closeBrace: UInt8 { 0x7D }
    fileprivate static var openBracket: UInt8 { 0x5B }
    fileprivate static var closeBracket: UInt8 { 0x5D }
    fileprivate static var comma: UInt8 { 0x2C }
    fileprivate static var colon: UInt8 { 0x3A }
    fileprivate static var minus: UInt8 { 0x2D }
    fileprivate static var plus: UInt8 { 0x2B }
    fileprivate static var zero: UInt8 { 0x30 }
}
