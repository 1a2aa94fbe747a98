/// How much an erasure removed, by kind; the `erasures` row's columns have the same names.
public struct ErasureCounts: Sendable, Hashable, Codable {
    /// Rows of `conversations`.
    public var conversations = 0
    /// Rows of `messages` (deleted with their conversations).
    public var messages = 0
    /// Rows of `message_contexts` (deleted with their messages).
    public var contexts = 0
    /// Rows of `archived_conversations`.
    public var archivedConversations = 0
    /// Files removed from the archive: an archive and its `.sha256` are two (and a temporary
    /// file an interrupted pass left, one more).
    public var archiveFiles = 0
    /// Redis keys removed: recent lists, their version keys, LangChain lists, session hashes, the
    /// user's session set. A version key replaced by a tombstone counts; a tombstone does not.
    public var redisKeys = 0
    /// Entries removed from the dead-letter stream.
    public var deadLetters = 0

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case conversations, messages, contexts
        case archivedConversations = "archived_conversations"
        case archiveFiles = "archive_files"
        case redisKeys = "redis_keys"
        case deadLetters = "dead_letters"
    }

    /// The counts in `CodingKeys` order, which is the journal's column order.
    var values: [Int] {
        get { [conversations, messages, contexts, archivedConversations, archiveFiles, redisKeys, deadLetters] }
        set {
            (conversations, messages, contexts, archivedConversations) = (
                newValue[0], newValue[1], newValue[2], newValue[3]
            )
            (archiveFiles, redisKeys, deadLetters) = (newValue[4], newValue[5], newValue[6])
        }
    }

    /// The journal's column names, in order.
    static var columns: [String] { CodingKeys.allCases.map(\.rawValue) }

    /// Counts read back from text columns, in `columns` order.
    init?(texts: some Collection<String?>) {
        let numbers = texts.compactMap { $0.flatMap { Int($0) } }
        guard numbers.count == Self.columns.count, texts.count == Self.columns.count else { return nil }
        values = numbers
    }

    public static func + (lhs: ErasureCounts, rhs: ErasureCounts) -> ErasureCounts {
        var sum = ErasureCounts()
        sum.values = zip(lhs.values, rhs.values).map { $0 + $1 }
        return sum
    }

    /// `3 conversations, 30 messages, …`: every kind, zeros included.
    public var summary: String {
        [
            (conversations, "conversations"), (messages, "messages"), (contexts, "contexts"),
            (archivedConversations, "archived conversations"), (archiveFiles, "archive files"),
            (redisKeys, "Redis keys"), (deadLetters, "dead letters"),
        ].map { "\($0.0) \($0.1)" }.joined(separator: ", ")
    }
}

/// What an erasure did: the answer of `historian forget --json` and of the API's `DELETE`s.
/// It names the subject only by its SHA-256, as the audit row does.
public struct ErasureReport: Sendable, Hashable, Codable {
    /// The `erasures` row; `nil` for a dry run, which records nothing.
    public var erasureID: Int64?
    public var scope: ErasureSubject.Scope
    public var subjectSHA256: String
    public var dryRun: Bool
    /// Whether this run finished an erasure that an earlier, interrupted run had started.
    public var resumed: Bool
    /// RFC 3339 UTC, from PostgreSQL's clock; `nil` for a dry run.
    public var startedAt: String?
    public var finishedAt: String?
    /// What the erasure removed, over every run of it (a resumed one included); for a dry run,
    /// what it would remove now.
    public var removed: ErasureCounts

    public init(
        erasureID: Int64?,
        scope: ErasureSubject.Scope,
        subjectSHA256: String,
        dryRun: Bool,
        resumed: Bool,
        startedAt: String?,
        finishedAt: String?,
        removed: ErasureCounts
    ) {
        self.erasureID = erasureID
        self.scope = scope
        self.subjectSHA256 = subjectSHA256
        self.dryRun = dryRun
        self.resumed = resumed
        self.startedAt = startedAt
        self.finishedAt = finishedAt
        self.removed = removed
    }

    enum CodingKeys: String, CodingKey {
        case erasureID = "erasure_id"
        case scope
        case subjectSHA256 = "subject_sha256"
        case dryRun = "dry_run"
        case resumed
        case startedAt = "started_at"
        case finishedAt = "finished_at"
        case removed
    }
}
