import Foundation
import Historian

/// A small, fast, seedable generator (SplitMix64), so every run produces the same workload.
struct SplitMix64 {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A number in `range`.
    mutating func next(in range: ClosedRange<Int>) -> Int {
        range.lowerBound + Int(next() % UInt64(range.count))
    }

    /// True with probability `percent` / 100.
    mutating func chance(_ percent: Int) -> Bool {
        next() % 100 < UInt64(percent)
    }
}

/// One conversation of the workload.
struct WorkloadConversation {
    var id: String
    var userID: String
    var deptID: String?
    var sessionID: String
    /// Given in the conversation's first message, for about a fifth of them.
    var title: String?
    var turns = 0
}

/// One message of the workload, as a frontend would send it.
struct WorkloadMessage {
    var id: String
    var conversation: Int
    var role: String
    var content: String
    /// Unix milliseconds.
    var createdAt: Int64
    /// How `created_at` is written in the entry: RFC 3339 or integer milliseconds (both allowed).
    var createdAtAsMilliseconds: Bool
    var title: String?
    var tokensUsed: Int?
    var latencyMS: Int?
    var metadata: String?
    var contexts: [WorkloadContext]

    var contextsJSON: String? {
        contexts.isEmpty ? nil : "[" + contexts.map(\.json).joined(separator: ",") + "]"
    }
}

struct WorkloadContext {
    var docID: String
    var content: String
    var score: Double
    var page: Int

    var json: String {
        #"{"doc_id":"\#(docID)","content":"\#(content)","score":\#(score),"metadata":{"page":\#(page)}}"#
    }
}

/// Realistic chat traffic: many conversations active at once, so consecutive messages mostly
/// belong to different conversations; user and assistant turns alternate; contents from 20 to
/// 2,000 bytes (about 300 on average), some non-ASCII; some messages carry metadata, and some
/// assistant messages the documents they were grounded on.
struct Workload {
    private(set) var conversations: [WorkloadConversation]
    private var random: SplitMix64
    private var clock: Int64
    private var sequence: UInt64 = 0
    /// Distinguishes the message IDs of workloads that share conversations.
    private let stream: UInt64
    /// When set, every message's content is this long instead of 20 to 2,000 bytes: large
    /// entries, as when a frontend sends whole documents.
    var contentBytes: Int?

    /// - Parameters:
    ///   - conversations: how many conversations the messages spread over.
    ///   - seed: the same seed gives the same conversations.
    ///   - stream: workloads over the same conversations with different `stream`s never share a
    ///     message ID.
    init(conversations count: Int, seed: UInt64, stream: UInt64 = 0, startMilliseconds: Int64) {
        var random = SplitMix64(seed: seed)
        conversations = (0..<count).map { index in
            let deptID = random.chance(60) ? "dept-\(random.next(in: 1...40))" : nil
            let title = random.chance(20) ? Self.sentence(&random, words: random.next(in: 2...7)) : nil
            return WorkloadConversation(
                id: Self.uuid(milliseconds: startMilliseconds - 86_400_000 + Int64(index), &random),
                userID: "user-\(random.next(in: 1...max(1, count / 3)))",
                deptID: deptID,
                sessionID: "sess-\(index)-\(random.next(in: 1000...9999))",
                title: title
            )
        }
        self.random = SplitMix64(seed: seed ^ (0xA5A5_0000 &+ stream &* 0x1_0001))
        self.clock = startMilliseconds
        self.stream = stream
    }

    /// The next message; `conversations` are picked uniformly, as with many users at once.
    mutating func next() -> WorkloadMessage {
        sequence += 1
        clock += Int64(random.next(in: 0...2))
        let index = random.next(in: 0...(conversations.count - 1))
        let turn = conversations[index].turns
        conversations[index].turns += 1
        let role: String
        if turn % 2 == 0 {
            role = "user"
        } else {
            role = random.chance(3) ? "tool" : "assistant"
        }
        var message = WorkloadMessage(
            id: Self.uuid(milliseconds: clock, &random),
            conversation: index,
            role: role,
            content: contentBytes.map { Self.content(&random, bytes: $0) } ?? Self.content(&random),
            createdAt: clock,
            createdAtAsMilliseconds: random.chance(30),
            title: turn == 0 ? conversations[index].title : nil,
            tokensUsed: nil,
            latencyMS: nil,
            metadata: nil,
            contexts: []
        )
        if role != "user" {
            message.tokensUsed = random.next(in: 5...900)
            message.latencyMS = random.next(in: 80...4000)
            if random.chance(15) {
                message.contexts = (0..<random.next(in: 1...3)).map { _ in
                    WorkloadContext(
                        docID: "doc-\(random.next(in: 1...50_000))",
                        content: Self.sentence(&random, words: random.next(in: 8...20)),
                        score: Double(random.next(in: 300...999)) / 1000,
                        page: random.next(in: 1...300)
                    )
                }
            }
        }
        if random.chance(20) {
            let locale = ["de-DE", "en-US", "ja-JP", "fr-FR"][random.next(in: 0...3)]
            message.metadata = #"{"client":"web","locale":"\#(locale)","request":\#(random.next(in: 1...1_000_000))}"#
        }
        return message
    }

    /// The fields of a message's stream entry, as in the contract.
    func fields(of message: WorkloadMessage) -> [(String, String)] {
        let conversation = conversations[message.conversation]
        var fields = [
            ("message_id", message.id), ("conversation_id", conversation.id), ("user_id", conversation.userID),
            ("role", message.role), ("content", message.content), ("session_id", conversation.sessionID),
            (
                "created_at",
                message.createdAtAsMilliseconds
                    ? String(message.createdAt) : Timestamp(milliseconds: message.createdAt).rfc3339
            ),
        ]
        if let deptID = conversation.deptID { fields.append(("dept_id", deptID)) }
        if let title = message.title { fields.append(("title", title)) }
        if let tokens = message.tokensUsed { fields.append(("tokens_used", String(tokens))) }
        if let latency = message.latencyMS { fields.append(("latency_ms", String(latency))) }
        if let metadata = message.metadata { fields.append(("metadata", metadata)) }
        if let contexts = message.contextsJSON { fields.append(("contexts", contexts)) }
        return fields
    }

    // MARK: - Text

    private static let words = [
        "the", "request", "vacation", "policy", "please", "could", "you", "explain", "how", "this", "works",
        "in", "our", "department", "deadline", "report", "summary", "and", "with", "for", "budget", "meeting",
        "schedule", "thanks", "answer", "document", "section", "page", "approval", "manager", "team", "week",
    ]
    private static let foreign = [
        "Grüße", "naïve", "café", "déjà", "München", "日本語", "よろしく", "お願いします", "Ελληνικά", "русский",
        "😀", "🚀", "∑", "€", "ñandú", "smörgåsbord",
    ]

    private static func sentence(_ random: inout SplitMix64, words count: Int) -> String {
        (0..<count).map { _ in words[random.next(in: 0...(words.count - 1))] }.joined(separator: " ")
    }

    /// 20 to 2,000 bytes: mostly short, some paragraphs, a few long answers; about 300 on
    /// average. About one in seven is partly non-ASCII.
    private static func content(_ random: inout SplitMix64) -> String {
        let roll = random.next(in: 0...99)
        let target: Int
        switch roll {
        case 0..<65: target = random.next(in: 20...200)
        case 65..<93: target = random.next(in: 200...700)
        default: target = random.next(in: 700...2000)
        }
        let nonASCII = random.chance(15)
        var text = ""
        var bytes = 0
        while bytes < target {
            let word: String
            if nonASCII, random.chance(25) {
                word = foreign[random.next(in: 0...(foreign.count - 1))]
            } else {
                word = words[random.next(in: 0...(words.count - 1))]
            }
            let separator = bytes == 0 ? "" : (random.chance(4) ? ".\n" : " ")
            if bytes + separator.utf8.count + word.utf8.count > 2000 { break }
            text += separator
            text += word
            bytes += separator.utf8.count + word.utf8.count
        }
        return text
    }

    /// Exactly `bytes` bytes of text: the usual generated paragraphs, repeated (ASCII only, so
    /// it can be cut anywhere).
    private static func content(_ random: inout SplitMix64, bytes: Int) -> String {
        var paragraph = ""
        while paragraph.utf8.count < 1_000 {
            paragraph += sentence(&random, words: random.next(in: 8...30)) + ".\n"
        }
        let whole = String(repeating: paragraph, count: bytes / paragraph.utf8.count + 1)
        return String(whole.utf8.prefix(bytes))!
    }

    /// A version-7 UUID: the time in its first 48 bits, so IDs arrive roughly in index order.
    private static func uuid(milliseconds: Int64, _ random: inout SplitMix64) -> String {
        let high = (UInt64(milliseconds) << 16) | 0x7000 | (random.next() & 0x0FFF)
        let low = (random.next() & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000
        let hex = hex16(high) + hex16(low)
        let characters = Array(hex)
        return String(characters[0..<8]) + "-" + String(characters[8..<12]) + "-" + String(characters[12..<16]) + "-"
            + String(characters[16..<20]) + "-" + String(characters[20..<32])
    }

    private static func hex16(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}
