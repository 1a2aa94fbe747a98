/// How many entries a worker asks Redis for, so that a batch stays within `batch_bytes` as well
/// as `batch_size`.
///
/// `XREADGROUP` counts entries, not bytes, and a batch is held several times over while it is
/// stored (the entries, the validated messages, the parameters, the cache elements), so large
/// entries in batches of 500 would take hundreds of MiB. So each read asks for as many
/// entries as the batch's bytes left allow, assuming every entry weighs `entryBytes`: as much as
/// the largest entry of the latest read that returned any. The first read of all assumes the
/// largest content the validator accepts.
///
/// The estimate is a guess about entries not yet seen. When large entries follow small ones, one
/// read can still bring in `batch_size` of them; the next read shrinks at once.
struct ReadBudget: Sendable {
    let batchSize: Int
    let batchBytes: Int
    /// What each entry of the next read is assumed to weigh, in bytes of field names and values.
    private(set) var entryBytes: Int

    /// No estimate goes below this, so that a stream of tiny entries does not divide by zero.
    static let smallestEntryBytes = 64

    init(batchSize: Int, batchBytes: Int, firstEntryBytes: Int) {
        self.batchSize = max(1, batchSize)
        self.batchBytes = max(1, batchBytes)
        entryBytes = max(Self.smallestEntryBytes, firstEntryBytes)
    }

    /// How many entries to ask for when the batch so far holds `entries` entries of `bytes`
    /// bytes: at least one for an empty batch, so that an entry larger than the budget is still
    /// read (alone); zero when the batch is full.
    func count(entries: Int = 0, bytes: Int = 0) -> Int {
        let room = batchSize - entries
        guard room > 0 else { return 0 }
        let fitting = max(0, batchBytes - bytes) / entryBytes
        return entries == 0 ? max(1, min(room, fitting)) : min(room, fitting)
    }

    /// Updates the estimate from a read's largest entry; an empty read says nothing.
    mutating func observe(largestEntryBytes: Int) {
        guard largestEntryBytes > 0 else { return }
        entryBytes = max(Self.smallestEntryBytes, largestEntryBytes)
    }
}
