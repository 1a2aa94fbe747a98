import Foundation
import Testing

@testable import Historian
import HistorianFuzzing

/// The single-pass JSON checks: the grammar corner by corner, the verdicts of `metadata` and
/// `contexts` with their details, and a differential run against the Foundation parsers they
/// replace (kept below as `FoundationValidation`).
struct JSONCheckTests {
    static let shape = "contexts is not an array of {doc_id, content, score, metadata} objects"
    static let notAnArray = "contexts is not a JSON array"
    static let escapedNUL = "contexts contains \\u0000, which PostgreSQL cannot store"

    // MARK: - The grammar

    @Test(arguments: [
        // Literals and whitespace.
        ("{}", true), ("[]", true), ("true", true), ("false", true), ("null", true), (#""""#, true),
        (" \t\r\n{} \t\r\n", true), ("[ 1 , 2 ]", true), ("{ \"a\" : 1 , \"b\" : [ ] }", true),
        ("", false), (" ", false), ("\r\n", false), ("tru", false), ("True", false), ("nul", false),
        ("nulll", false), ("falsey", false), ("NaN", false), ("Infinity", false), ("-Infinity", false),
        ("\u{FEFF}{}", false), ("\u{0C}{}", false), ("\u{0B}{}", false), ("\u{A0}{}", false), ("{}\u{A0}", false),
        ("/*c*/{}", false), ("{}//c", false), ("{} {}", false), ("{}x", false), ("[],", false), ("1 2", false),
        // Numbers.
        ("0", true), ("-0", true), ("-0.0", true), ("1", true), ("-1", true), ("10", true), ("1.5", true),
        ("0.25", true), ("1e5", true), ("1E5", true), ("1e+5", true), ("1e-5", true), ("1.5e-10", true),
        ("0e0", true), ("-0E-0", true), ("123456789012345678901234567890", true), ("1e400", true),
        ("1e-400", true), ("1e999999999999999999999", true),
        ("01", false), ("-01", false), ("00", false), ("1.", false), (".5", false), ("-.5", false), ("1e", false),
        ("1e+", false), ("1E-", false), ("+1", false), ("-", false), ("--1", false), ("1.2.3", false),
        ("1e5e5", false), ("1.e5", false), ("0x10", false), ("1_000", false), ("1-2", false), ("[01]", false),
        ("{\"a\":-}", false),
        // Strings and escapes.
        (#""\" \\ \/ \b \f \n \r \t""#, true), (#""\u0041\u00e9\u20AC\uFFFF""#, true), (#""\uD83D\uDE00""#, true),
        (#""\ud83d\ude00""#, true), (#""\uDBFF\uDFFF""#, true), (#""\uD800\uDC00""#, true), ("\"é日本😀\"", true),
        ("\"\u{7F}\"", true), (#""\\u0000""#, true), (#""\\ud800""#, true), (#""\u0001""#, true),
        (#""abc"#, false), (#"""#, false), (#""\"#, false), (#""\""#, false), (#""\q""#, false), (#""\U0041""#, false),
        (#""\x41""#, false), (#""\'""#, false), (#""\u12""#, false), (#""\u12G4""#, false), (#""\u""#, false),
        (#""\u0000""#, false), (#""a\u0000b""#, false), (#""\ud800""#, false), (#""\ud800x""#, false),
        (#""\ud800\u0041""#, false), (#""\ud800\ud800""#, false), (#""\udc00""#, false), (#""\udc00\ud800""#, false),
        (#""\uDFFF""#, false), (#""\ud800\\udc00""#, false), (#""\ud800\n""#, false), (#""\ud800\u""#, false),
        ("\"a\tb\"", false), ("\"a\nb\"", false), ("\"a\rb\"", false), ("\"a\u{01}b\"", false), ("\"\u{1F}\"", false),
        ("\"\u{0}\"", false),
        // Structure.
        (#"{"a":[1,{"b":null}],"c":"d"}"#, true), (#"{"a":1,"a":2}"#, true), (#"[[[]],[{}]]"#, true),
        ("[1,]", false), (#"{"a":1,}"#, false), ("[,1]", false), ("[1,,2]", false), ("[,]", false),
        (#"{,"a":1}"#, false),
        (#"{"a" 1}"#, false), (#"{"a"}"#, false), (#"{"a":}"#, false), (#"{"a":1:}"#, false), ("{a:1}", false),
        ("{'a':1}", false), ("{1:2}", false), (#"{"a":1 "b":2}"#, false), ("[1 2]", false), (#"["a":1]"#, false),
        ("[}", false), ("{]", false), ("[", false), ("]", false), ("{", false), ("}", false), ("[[]", false),
        ("[]]", false),
    ])
    func grammar(_ text: String, _ valid: Bool) {
        #expect(JSONCheck.isValid(utf8(text)) == valid)
        // The same text inside an array and as an object's value: valid there exactly when valid
        // alone (but for whitespace alone, which an empty array may hold).
        if text.utf8.contains(where: { ![0x20, 0x09, 0x0A, 0x0D].contains($0) }) {
            #expect(JSONCheck.isValid(utf8("[" + text + "]")) == valid)
            #expect(JSONCheck.isValid(utf8("{\"k\":" + text + "}")) == valid)
        }
    }

    /// Special bytes at every offset of strings of every length up to 40, over ASCII and
    /// non-ASCII text: the eight-bytes-at-a-time scan must see each of them.
    @Test func stringsAreScannedAtEveryOffset() {
        let specials: [(insert: [UInt8], valid: Bool)] = [
            (utf8("\\n"), true), (utf8("\\\""), true), (utf8("\\u00e9"), true), (utf8("\\ud83d\\ude00"), true),
            (utf8("\\u0000"), false), (utf8("\\ud800"), false), (utf8("\\q"), false), ([0x09], false), ([0x01], false),
            ([0x1F], false), ([0x22], false), (utf8("é"), true), ([0x7F], true), ([0x20], true),
        ]
        var mismatches: [String] = []
        for background in [utf8("a"), utf8("é")] {
            for length in 0...40 {
                for position in 0...length {
                    for (insert, valid) in specials {
                        var content = Array([[UInt8]](repeating: background, count: length).joined())
                        content.insert(contentsOf: insert, at: position * background.count)
                        let text = utf8("{\"k\":\"") + content + utf8("\"}")
                        if JSONCheck.isJSONObject(text) != valid {
                            mismatches.append(String(decoding: text, as: UTF8.self))
                        }
                    }
                }
            }
        }
        #expect(mismatches.isEmpty, "\(mismatches.prefix(5))")
    }

    @Test func nestingIsLimitedTo512WithoutRecursion() {
        func arrays(_ depth: Int) -> [UInt8] {
            [UInt8](repeating: 0x5B, count: depth) + [UInt8](repeating: 0x5D, count: depth)
        }
        func objects(_ depth: Int) -> [UInt8] {
            utf8(String(repeating: #"{"a":"#, count: depth - 1) + "{}" + String(repeating: "}", count: depth - 1))
        }
        #expect(JSONCheck.isValid(arrays(512)))
        #expect(!JSONCheck.isValid(arrays(513)))
        #expect(JSONCheck.isJSONObject(objects(512)))
        #expect(!JSONCheck.isJSONObject(objects(513)))
        #expect(JSONCheck.isJSONObject(utf8(#"{"a":"#) + arrays(511) + utf8("}")))
        #expect(!JSONCheck.isJSONObject(utf8(#"{"a":"#) + arrays(512) + utf8("}")))
        // Far deeper, open or closed, is refused (the stack holds 512 and no more).
        #expect(!JSONCheck.isValid(arrays(100_000)))
        #expect(!JSONCheck.isValid([UInt8](repeating: 0x5B, count: 100_000)))
        #expect(!JSONCheck.isJSONObject(objects(100_000)))
        // In contexts: the array, its element and 510 more levels pass; one more does not.
        #expect(Self.contexts(utf8(#"[{"x":"#) + arrays(510) + utf8("}]")) == nil)
        #expect(Self.contexts(utf8(#"[{"x":"#) + arrays(511) + utf8("}]")) == Self.shape)
        #expect(Self.contexts(arrays(512)) == "contexts[0] has the wrong type")
        #expect(Self.contexts(arrays(513)) == Self.shape)
        #expect(Self.contexts(arrays(100_000)) == Self.shape)
        // Containers closed and reopened reuse the stack.
        let wide = utf8("[") + Array(repeating: arrays(500) + utf8(","), count: 200).joined() + utf8("1]")
        #expect(JSONCheck.isValid(wide))
    }

    // MARK: - metadata

    @Test(arguments: [
        ("{}", true), (#"{"model":"m-1","temperature":0.7,"tags":["a","b"]}"#, true), (#"{"k":[1,{"x":null}]}"#, true),
        (#" {"a":{"b":{"c":[true,false,null]}}} "#, true), (#"{"path":"C:\\u0000"}"#, true), (#"{"é":"日本"}"#, true),
        ("[]", false), ("[1,2]", false), (#""x""#, false), ("1", false), ("null", false), ("true", false), ("", false),
        (#"{"a":"#, false), (#"{"a":"\u0000"}"#, false), (#"{"\u0000":1}"#, false), (#"{"a":"\ud800"}"#, false),
        (#"{"a":1,}"#, false), ("\u{FEFF}{}", false), (#"{"a":01}"#, false),
        // Numbers must be finite as a Double, as JSONSerialization had them; underflow passes.
        (#"{"a":1e400}"#, false), (#"{"a":-1e400}"#, false), (#"{"a":[1e999999999999999999]}"#, false),
        (#"{"a":1.7976931348623157e308}"#, true), (#"{"a":1.7976931348623159e308}"#, false),
        (#"{"a":-1.7976931348623158e308}"#, true), (#"{"a":1e-400}"#, true), (#"{"a":2e-324}"#, true),
        (#"{"a":0e999999}"#, true), (#"{"a":123456789012345678901234567890}"#, true),
        ("{\"a\":" + String(repeating: "9", count: 308) + "}", true),
        ("{\"a\":" + String(repeating: "9", count: 309) + "}", false),
        ("{\"a\":0." + String(repeating: "0", count: 400) + "1}", true),
        // Also where a later value of the key replaces it (JSONSerialization never converted those).
        (#"{"a":1e400,"a":1}"#, false),
    ])
    func metadata(_ text: String, _ object: Bool) {
        #expect(JSONCheck.isJSONObject(utf8(text)) == object)
        #expect(EntryValidator.isJSONObject(utf8(text)) == object)
    }

    // MARK: - contexts

    static func contexts(_ raw: [UInt8]) -> String? {
        do {
            try EntryValidator.checkContexts(raw)
            return nil
        } catch {
            #expect(error.reason == .invalidJSON)
            return error.detail
        }
    }

    @Test(
        arguments: [
            ("[]", nil), (" [ ] ", nil), ("[{}]", nil), ("[{},{}]", nil),
            (#"[{"doc_id":"d","content":"c","score":0.5,"metadata":{"p":1}},{"doc_id":null}]"#, nil),
            (#"[{"doc_id":null,"content":null,"score":null,"metadata":null,"other":[1,{"x":"y"}]}]"#, nil),
            (#"[{"score":1},{"score":-0},{"score":1E+2},{"score":0e-400},{"score":4.9e-324}]"#, nil),
            (#"[{"score":1.7976931348623157e308},{"score":123456789012345678901234567890}]"#, nil),
            (#"[{"x":1e400},{"metadata":{"a":1e400}}]"#, nil),  // only the score must be a Double
            (#"[{"path":"C:\\u0000"}]"#, nil), (#"[{"doc_id":"\ud83d\ude00 é"}]"#, nil),
            // The top level.
            ("{}", notAnArray), ("null", notAnArray), (#""x""#, notAnArray), ("1", notAnArray), ("true", notAnArray),
            (#"{"a":[1,2]}"#, notAnArray),
            // Elements and fields, in the order of decoding.
            ("[1]", "contexts[0] has the wrong type"), ("[null]", "contexts[0] has the wrong type"),
            (#"["x"]"#, "contexts[0] has the wrong type"), ("[[]]", "contexts[0] has the wrong type"),
            ("[{},[]]", "contexts[1] has the wrong type"),
            (#"[{"doc_id":5}]"#, "contexts[0].doc_id has the wrong type"),
            (#"[{"doc_id":true}]"#, "contexts[0].doc_id has the wrong type"),
            (#"[{"content":{}}]"#, "contexts[0].content has the wrong type"),
            (#"[{"score":"high"}]"#, "contexts[0].score has the wrong type"),
            (#"[{"score":true}]"#, "contexts[0].score has the wrong type"),
            (#"[{"score":[1]}]"#, "contexts[0].score has the wrong type"),
            (#"[{"metadata":[1]}]"#, "contexts[0].metadata has the wrong type"),
            (#"[{"metadata":"x"}]"#, "contexts[0].metadata has the wrong type"),
            (#"[{},{"doc_id":1}]"#, "contexts[1].doc_id has the wrong type"),
            (#"[{"score":"x","doc_id":1}]"#, "contexts[0].doc_id has the wrong type"),
            (#"[{"metadata":1,"content":1}]"#, "contexts[0].content has the wrong type"),
            (#"[{"doc_id":1},{"content":1}]"#, "contexts[0].doc_id has the wrong type"),
            (#"[{"doc_id":1},2]"#, "contexts[0].doc_id has the wrong type"),
            (#"[{"doc\u005fid":1}]"#, "contexts[0].doc_id has the wrong type"),
            (#"[{"\u0073core":"x"}]"#, "contexts[0].score has the wrong type"),
            (#"[{"doc_id ":1,"Doc_id":1,"docid":1}]"#, nil),
            // A score that is no finite Double, or a nonzero one that rounds to zero, in the same order.
            (#"[{"score":1e400}]"#, shape), (#"[{"score":-1e400}]"#, shape), (#"[{"score":2e-324}]"#, shape),
            (#"[{"score":1e-400}]"#, shape), (#"[{"score":1.7976931348623159e308}]"#, shape),
            (#"[{"score":1e400,"doc_id":1}]"#, "contexts[0].doc_id has the wrong type"),
            (#"[{"score":1e400},{"score":"x"}]"#, shape),
            (#"[{"score":"x"},{"score":1e400}]"#, "contexts[0].score has the wrong type"),
            // A key given twice: every value is checked (PostgreSQL keeps the last, JSONDecoder read the first).
            (#"[{"score":"x","score":1}]"#, "contexts[0].score has the wrong type"),
            (#"[{"score":1,"score":"x"}]"#, "contexts[0].score has the wrong type"),
            (#"[{"doc_id":"a","doc\u005fid":1}]"#, "contexts[0].doc_id has the wrong type"),
            (#"[{"score":1,"score":1e400}]"#, shape),
            // Not valid JSON: the general detail, whatever came before.
            ("", shape), (" ", shape), ("[", shape), ("[{}", shape), (#"[{"doc_id":1},{"a" 1}]"#, shape),
            ("[1,]", shape),
            ("[{},]", shape), (#"[{"doc_id":"a",}]"#, shape), ("\u{FEFF}[]", shape), (#"[{"x":"\q"}]"#, shape),
            (#"[{"x":"\ud800"}]"#, shape), (#"[{"x":"\udc00"}]"#, shape), ("[{\"x\":\"a\tb\"}]", shape),
            (#"[{"x":01}]"#, shape),
            (#"[{"x":1.}]"#, shape), (#"[{"x":-}]"#, shape), (#"[{"metadata":{"a":"\q"}}]"#, shape),
            (#"{"a":01}"#, shape),
            (#"[{"score":01}]"#, shape), (#"[{"score":.5}]"#, shape), (#"[{"score":-}]"#, shape), ("[]x", shape),
            ("[][]", shape),
            // \u0000 anywhere comes first, in valid JSON or not.
            (#"{"a":"\u0000"}"#, escapedNUL), (#"[{"content":"a\u0000b"}]"#, escapedNUL),
            (#"[{"\u0000":1}]"#, escapedNUL),
            (#"[{"doc_id":1,"x":"\u0000"}]"#, escapedNUL), (#"[1,"\u0000""#, escapedNUL), (#"[\u0000]"#, escapedNUL),
            (#"[{"a" 1},"\u0000"]"#, escapedNUL),
        ] as [(String, String?)]
    )
    func contexts(_ text: String, _ detail: String?) {
        #expect(Self.contexts(utf8(text)) == detail)
    }

    // MARK: - Against the Foundation parsers

    /// Mutations of valid documents, through the old implementation and the new one. They must
    /// agree but for the documented differences, which are recognised here independently:
    ///
    /// - Both Foundation parsers accepted a trailing comma (`[1,]`, `{"a":1,}`) and a leading
    ///   byte-order mark, which PostgreSQL's `jsonb` refuses: now `invalid_json`.
    /// - `JSONDecoder` only read what it decoded: in values it skipped (other keys, what a
    ///   `metadata` holds) it let invalid escapes, raw control bytes, unpaired surrogates and
    ///   malformed numbers (`01`, `1.`, `-`) through, which `jsonb` refuses: now the general
    ///   detail, also where a wrong type used to be reported before them.
    /// - A key given twice in a `contexts` element: `JSONDecoder` checked the first value,
    ///   PostgreSQL keeps the last; now every value is checked.
    /// - A key given twice in `metadata`: `JSONSerialization` only converted the value it kept
    ///   (the last), so a number beyond a Double's range was let through before a later value
    ///   of the same key; now every number is checked.
    @Test func agreesWithTheFoundationParsersButForTheDocumentedDifferences() {
        var random = SplitMix64(seed: 0x5EED_0F_1500)
        var stats = (metadata: Tally(), contexts: Tally())
        var unexplained: [String] = []
        for round in 0..<20_000 {
            let forContexts = round % 2 == 1
            let seeds = forContexts ? Self.contextsSeeds : Self.metadataSeeds
            var raw = utf8(seeds[random.below(seeds.count)])
            for _ in 0..<(1 + random.below(3)) {
                raw = Self.mutate(raw, &random)
            }
            // What `text` refuses never reaches the JSON checks.
            guard String(validating: raw, as: UTF8.self) != nil, !raw.contains(0) else {
                if forContexts { stats.contexts.unreachable += 1 } else { stats.metadata.unreachable += 1 }
                continue
            }
            let text = String(decoding: raw, as: UTF8.self)
            if forContexts {
                let old = FoundationValidation.checkContexts(raw)
                let new = Self.contexts(raw)
                if old == new {
                    stats.contexts.agreed(accepted: new == nil)
                    if new?.hasSuffix("has the wrong type") == true { stats.contexts.wrongType += 1 }
                } else if new == Self.shape, Self.foundationLeniency(raw) != nil {
                    stats.contexts.lenient += 1
                } else if Self.repeatsACheckedKey(raw), let new,
                    new == Self.shape || new.hasSuffix("has the wrong type")
                {
                    stats.contexts.duplicates += 1
                } else {
                    unexplained.append("contexts \(text): was \(old ?? "valid"), now \(new ?? "valid")")
                }
            } else {
                let old = FoundationValidation.isJSONObject(raw)
                let new = JSONCheck.isJSONObject(raw)
                if old == new {
                    stats.metadata.agreed(accepted: new)
                } else if old, !new, let leniency = Self.foundationLeniency(raw),
                    leniency == .trailingComma || leniency == .byteOrderMark
                {
                    stats.metadata.lenient += 1
                } else if old, !new, Self.repeatsAKeyBesideAnInfiniteNumber(raw) {
                    stats.metadata.duplicates += 1
                } else {
                    unexplained.append("metadata \(text): was \(old), now \(new)")
                }
            }
        }
        #expect(unexplained.isEmpty, "\(unexplained.count): \(unexplained.prefix(8))")
        // Enough of each kind of case was compared for the run to mean something.
        for tally in [stats.metadata, stats.contexts] {
            #expect(tally.bothAccepted >= 500 && tally.bothRejected >= 5000 && tally.lenient >= 5, "\(stats)")
        }
        #expect(
            stats.contexts.wrongType >= 300 && stats.contexts.lenient >= 100 && stats.contexts.duplicates >= 100,
            "\(stats)"
        )
    }

    struct Tally: CustomStringConvertible {
        var bothAccepted = 0, bothRejected = 0, wrongType = 0, lenient = 0, duplicates = 0, unreachable = 0

        mutating func agreed(accepted: Bool) {
            if accepted { bothAccepted += 1 } else { bothRejected += 1 }
        }

        var description: String {
            "accepted \(bothAccepted), rejected \(bothRejected) (\(wrongType) as a wrong type), lenient \(lenient), duplicates \(duplicates), unreachable \(unreachable)"
        }
    }

    static let metadataSeeds = [
        "{}", #"{"model":"m-1","temperature":0.7,"tags":["a","b"]}"#, #"{"k":[1,{"x":null}],"t":true,"f":false}"#,
        #"{ "a" : { "b" : [ 1 , -2.5e-3 , 0 , -0 ] } , "c" : "d\n\t\"\\\/\b\f\r" }"#,
        #"{"é":"日本 😀","u":"\u00e9\ud83d\ude00"}"#,
        #"{"big":1.7976931348623157e308,"small":4.9e-324,"n":123456789012345678901234567890,"z":0E+0}"#,
        #"{"path":"C:\\u0000","esc":"\\ud800"}"#, #"{"a":[[[[{"b":[[]]}]]]]}"#, #"{"a":"x","a":"y"}"#,
        "{\"s\":\"\u{7F}\",\r\n\"l\":[\r\n]}",
    ]

    static let contextsSeeds = [
        "[]", "[{}]", #"[{"doc_id":"d","content":"c","score":0.5,"metadata":{"p":1}},{"doc_id":null}]"#,
        #"[{"doc_id":"d-1","content":"Vacation policy: 25 days.","score":0.83,"metadata":{"source":"hr","page":3}}]"#,
        #"[{"doc_id":null,"content":null,"score":null,"metadata":null,"extra":[1,"two",{"three":3e0}]}]"#,
        #"[ { "score" : -1.5E-7 } , { "content" : "é日本😀\u00e9\ud83d\ude00\"\\" } ]"#,
        #"[{"score":1},{"score":-0},{"score":4.9e-324},{"score":1.7976931348623157e308},{"x":1e400}]"#,
        #"[{"score":"x","score":1},{"doc_id":"a","doc_id":"b"},{"metadata":{},"metadata":null}]"#,
        #"[{"score":1,"score":2},{"content":"c","cont\u0065nt":"d"}]"#, #"[{"doc\u005fid":"d"}]"#,
        #"[{"path":"C:\\u0000"},{"metadata":{"k":[{"deep":[[]]}]}}]"#,
        #"[{"doc_id":"d","score":0.5,"score":"high"}]"#,
        #"[{"metadata":null,"metadata":1},{"content":"c","content":true}]"#,
        #"[{"score":1,"score":1e400},{"doc_id":"a","doc\u005fid":2}]"#,
    ]

    /// Pieces that mutations insert: grammar corners, the keys that are checked, escapes.
    static let pieces: [String] = [
        "{", "}", "[", "]", ",", ":", "\"", "\\", " ", "\t", "\n", "\r", "\u{0C}", "\u{01}", "\u{1F}", "\u{7F}", "é",
        "😀",
        "\u{FEFF}", "0", "1", "9", "-", "+", ".", "e", "E", "x", "u", "a", "f", "t", "n", "null", "true", "false", "01",
        "-0", "1.", ".5", "1e400", "-1e400", "2e-324", "1e-400", "4.9e-324", "1.7976931348623159e308", "\\u0000",
        "\\ud800", "\\udc00", "\\ud83d\\ude00", "\\u005f", "\\u00", "\\q", "\\n", "\\\"", "\\\\", "\"doc_id\"",
        "\"content\"", "\"score\"", "\"metadata\"", "\"doc_id\":1,", "\"score\":\"x\",", "\"score\":1,",
        "{\"score\":1}",
        "\"metadata\":[],", "{}", "[]", ",]", ",}", "\"x\":",
    ]

    /// Values that replace others: of every type, and the numbers and strings at the edges.
    static let values: [String] = [
        "1", "-0", "0.5", "1E+2", "1e400", "2e-324", "4.9e-324", "01", "1.", "\"s\"", "\"\"", "\"\\u0000\"",
        "\"\\ud800\"", "\"\\q\"", "\"a\tb\"", "null", "true", "false", "{}", "[]", "{\"a\":1}", "[1,]",
        "{\"a\":\"\\q\"}",
        " null ", "\"é\"",
    ]

    static func mutate(_ raw: [UInt8], _ random: inout SplitMix64) -> [UInt8] {
        var raw = raw
        let position = random.below(raw.count + 1)
        switch random.below(8) {
        case 6, 7:  // replace the value after a colon (up to the next `,`, `}` or `]`) with another
            let colons = raw.indices.filter { raw[$0] == 0x3A }
            guard !colons.isEmpty else { return raw }
            let start = colons[random.below(colons.count)] + 1
            let end = raw[start...].firstIndex { [0x2C, 0x7D, 0x5D].contains($0) } ?? raw.count
            raw.replaceSubrange(start..<end, with: utf8(values[random.below(values.count)]))
        case 0:  // truncate
            raw.removeSubrange(position...)
        case 1:  // delete one to three bytes
            raw.removeSubrange(position..<min(raw.count, position + 1 + random.below(3)))
        case 2, 3:  // insert a piece
            raw.insert(contentsOf: utf8(pieces[random.below(pieces.count)]), at: position)
        case 4:  // replace a byte with a piece
            if position < raw.count { raw.remove(at: position) }
            raw.insert(contentsOf: utf8(pieces[random.below(pieces.count)]), at: position)
        default:  // repeat a slice
            let end = min(raw.count, position + 1 + random.below(12))
            raw.insert(contentsOf: raw[position..<end], at: end)
        }
        return raw
    }

    enum Leniency {
        case trailingComma, byteOrderMark, badString, badNumber
    }

    /// Where the string that starts at `start` (a quote) ends (its closing quote), read as the
    /// Foundation scanners skip strings: a backslash takes the next byte with it, `\u` four
    /// more. In valid JSON this is exact; nil if the string is not closed.
    static func stringEnd(_ raw: [UInt8], _ start: Int) -> Int? {
        var end = start + 1
        while end < raw.count, raw[end] != 0x22 {
            if raw[end] == 0x5C { end += end + 1 < raw.count && raw[end + 1] == UInt8(ascii: "u") ? 5 : 1 }
            end += 1
        }
        return end < raw.count ? end : nil
    }

    /// The number tokens outside strings: runs of `0-9 + - . e E` from a `-` or a digit.
    static func numberTokens(_ raw: [UInt8]) -> [String] {
        var tokens: [String] = []
        var index = 0
        while index < raw.count {
            switch raw[index] {
            case 0x22:
                guard let end = stringEnd(raw, index) else { return tokens }
                index = end + 1
            case 0x2D, 0x30...0x39:
                var end = index
                while end < raw.count, "0123456789+-.eE".utf8.contains(raw[end]) { end += 1 }
                tokens.append(String(decoding: raw[index..<end], as: UTF8.self))
                index = end
            default:
                index += 1
            }
        }
        return tokens
    }

    /// What makes the text invalid JSON although a Foundation parser may have let it through:
    /// found by a plain tokenizer of its own, outside the code under test. (In valid JSON the
    /// tokenizer is exact, so whatever it finds makes the text invalid.)
    static func foundationLeniency(_ raw: [UInt8]) -> Leniency? {
        if raw.starts(with: [0xEF, 0xBB, 0xBF]) { return .byteOrderMark }
        let number = try! Regex(#"^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$"#)
        if numberTokens(raw).contains(where: { $0.wholeMatch(of: number) == nil }) { return .badNumber }
        var index = 0
        var previous: UInt8 = 0  // the last byte outside strings that is not whitespace
        while index < raw.count {
            let byte = raw[index]
            switch byte {
            case 0x22:
                guard let end = stringEnd(raw, index) else { return nil }  // not closed: refused by both
                // The string with its quotes, as JSONSerialization reads it alone.
                let string = Array(raw[index...end])
                if string.contains(where: { $0 < 0x20 })
                    || (try? JSONSerialization.jsonObject(with: Data(string), options: .fragmentsAllowed)) == nil
                {
                    return .badString
                }
                index = end + 1
                previous = byte
            case 0x5D, 0x7D:
                if previous == 0x2C { return .trailingComma }
                previous = byte
                index += 1
            case 0x20, 0x09, 0x0A, 0x0D:
                index += 1
            default:
                previous = byte
                index += 1
            }
        }
        return nil
    }

    /// Whether an object names a key twice, counting the keys for which `counts` holds (`open`
    /// the opening bytes of the containers around the key; keys compared unescaped, through
    /// JSONSerialization).
    static func repeatsAKey(_ raw: [UInt8], _ counts: (_ open: [UInt8], _ key: String) -> Bool) -> Bool {
        var open: [UInt8] = []
        var keys: [[String]] = []
        var index = 0
        while index < raw.count {
            let byte = raw[index]
            switch byte {
            case 0x22:
                guard let end = stringEnd(raw, index) else { return false }
                let colon = raw[(end + 1)...].first(where: { ![0x20, 0x09, 0x0A, 0x0D].contains($0) }) == 0x3A
                if open.last == 0x7B, colon,
                    let key = try? JSONSerialization.jsonObject(
                        with: Data(raw[index...end]),
                        options: .fragmentsAllowed
                    ) as? String,
                    counts(open, key)
                {
                    if keys[keys.count - 1].contains(key) { return true }
                    keys[keys.count - 1].append(key)
                }
                index = end + 1
            case 0x5B, 0x7B:
                open.append(byte)
                keys.append([])
                index += 1
            case 0x5D, 0x7D:
                _ = open.popLast()
                _ = keys.popLast()
                index += 1
            default:
                index += 1
            }
        }
        return false
    }

    /// Whether a `contexts` element names a checked key twice.
    static func repeatsACheckedKey(_ raw: [UInt8]) -> Bool {
        repeatsAKey(raw) { open, key in
            open == [0x5B, 0x7B] && ["doc_id", "content", "score", "metadata"].contains(key)
        }
    }

    /// Whether some object names a key twice, and some number is beyond a Double's range.
    static func repeatsAKeyBesideAnInfiniteNumber(_ raw: [UInt8]) -> Bool {
        numberTokens(raw).contains { Double($0)?.isInfinite == true } && repeatsAKey(raw) { _, _ in true }
    }
}

/// A deterministic generator (SplitMix64), so every run sees the same cases.
struct SplitMix64 {
    var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A number in 0..<bound (bound above zero).
    mutating func below(_ bound: Int) -> Int {
        Int(next() % UInt64(bound))
    }
}

/// The validation this replaces, as it was: Foundation's parsers behind an escaped-NUL scan.
enum FoundationValidation {
    static func containsEscapedNUL(_ raw: [UInt8]) -> Bool {
        let digits = Array("u0000".utf8)
        var index = 0
        while index < raw.count {
            guard raw[index] == 0x5C else {
                index += 1
                continue
            }
            if index + digits.count < raw.count, raw[(index + 1)...(index + digits.count)].elementsEqual(digits) {
                return true
            }
            index += 2
        }
        return false
    }

    static func isJSONObject(_ raw: [UInt8]) -> Bool {
        guard !containsEscapedNUL(raw) else { return false }
        return (try? JSONSerialization.jsonObject(with: Data(raw))) is [String: Any]
    }

    /// The detail of the rejection, nil if accepted.
    static func checkContexts(_ raw: [UInt8]) -> String? {
        guard !containsEscapedNUL(raw) else {
            return "contexts contains \\u0000, which PostgreSQL cannot store"
        }
        do {
            _ = try JSONDecoder().decode([ReferenceJSON.Context].self, from: Data(raw))
            return nil
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context) {
            guard !context.codingPath.isEmpty else { return "contexts is not a JSON array" }
            let path = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
            return "contexts\(path) has the wrong type"
        } catch {
            return "contexts is not an array of {doc_id, content, score, metadata} objects"
        }
    }
}

/// The bytes of a text.
private func utf8(_ text: String) -> [UInt8] { Array(text.utf8) }
