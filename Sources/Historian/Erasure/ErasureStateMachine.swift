/// The steps of an erasure, in the order they run. The journal row records the last one done,
/// in the same transaction as the step's counts, so a rerun goes on from the next one.
enum ErasureStep: String, Sendable, Hashable, CaseIterable {
    /// The journal row is open: the erasure has started, nothing is removed yet.
    case opened = "opened"
    /// One transaction locked `conversations` and `archived_conversations`, deleted the rows and
    /// wrote the plan (what the next steps need) into the journal.
    case rowsDeleted = "rows_deleted"
    /// The Redis keys are removed and the recent lists tombstoned, right after the commit.
    case keysRemoved = "keys_removed"
    /// The archive files (and their `.sha256`) are removed.
    case filesRemoved = "files_removed"
    /// The dead letters are removed, once the pipeline has settled.
    case deadLettersRemoved = "dead_letters_removed"
    /// The Redis keys are removed once more: a batch committed just before the erasure may
    /// have touched its sessions just after the first pass.
    case keysRemovedAgain = "keys_removed_again"

    /// Where a test may kill the process, right after this step is recorded.
    var crashPoint: CrashPoint {
        switch self {
        case .opened: .erasureOpened
        case .rowsDeleted: .erasureRowsDeleted
        case .keysRemoved: .erasureKeysRemoved
        case .filesRemoved: .erasureFilesRemoved
        case .deadLettersRemoved: .erasureDeadLettersRemoved
        case .keysRemovedAgain: .erasureKeysRemovedAgain
        }
    }
}

/// An erasure's decisions, apart from its I/O: which step comes next, whether to wait for the
/// pipeline to settle first, and where a rerun goes on from. `Erasure` carries out each action
/// and reports back; every step is recorded in the journal before the next begins, and every
/// step is safe to run again, so a step cut short by a crash is simply run again.
///
/// The order: rows first, so that nothing can restore, export or serve the subject from
/// PostgreSQL once the erasure has begun removing; what the other steps need is in the journal
/// by then. Redis next, because frontends read it: the recent lists go, and a tombstone on each
/// list's version key keeps a batch committed just before the erasure from writing them back.
/// Then the files. Then, once `settle` has passed since the rows were deleted, the dead letters
/// (a batch judged while the erasure began has put its own there by then) and the keys once more
/// (its session touches). Then the row is closed.
struct ErasureStateMachine: Sendable {
    enum Action: Sendable, Hashable {
        /// Open the journal row, or find the open one of an interrupted run.
        case open
        case deleteRows
        /// Remove the keys of the plan's conversations and sessions (a second time, with `again`).
        case removeKeys(ErasurePlan, again: Bool)
        case removeFiles(ErasurePlan)
        /// Nothing to do until then: the pipeline settles.
        case wait(until: ContinuousClock.Instant)
        case removeDeadLetters
        /// Close the journal row: the finish time, the plan cleared.
        case close
        case done
    }

    /// How long after the rows' commit the dead letters and the second pass over the keys wait.
    let settle: Duration
    /// The last step recorded; `nil` before the journal row is open.
    private(set) var step: ErasureStep?
    /// The step an interrupted run had recorded, when this run resumes it.
    private(set) var resumedAfter: ErasureStep?
    private(set) var plan = ErasurePlan()
    /// What the erasure removed so far, over all its runs, as the journal holds it.
    private(set) var removed = ErasureCounts()
    private var rowsDeletedAt: ContinuousClock.Instant?
    private var isClosed = false

    init(settle: Duration) {
        self.settle = settle
    }

    func nextAction(now: ContinuousClock.Instant) -> Action {
        if isClosed { return .done }
        guard let step else { return .open }
        switch step {
        case .opened:
            return .deleteRows
        case .rowsDeleted:
            return .removeKeys(plan, again: false)
        case .keysRemoved:
            return .removeFiles(plan)
        case .filesRemoved:
            let settled = (rowsDeletedAt ?? now) + settle
            return now < settled ? .wait(until: settled) : .removeDeadLetters
        case .deadLettersRemoved:
            return .removeKeys(plan, again: true)
        case .keysRemovedAgain:
            return .close
        }
    }

    /// The journal row is open: a new one (`resumed` false), or the one an interrupted run left,
    /// with its step, its plan (once the rows are deleted), its counts, and how long ago its rows
    /// were deleted.
    mutating func opened(
        at recorded: ErasureStep,
        resumed: Bool,
        plan: ErasurePlan?,
        removed: ErasureCounts,
        sinceRowsDeleted: Duration?,
        now: ContinuousClock.Instant
    ) {
        step = recorded
        if resumed { resumedAfter = recorded }
        if let plan { self.plan = plan }
        self.removed = removed
        // A resumed erasure whose rows went long ago does not wait again; one whose time is
        // unknown waits the whole time, to be safe.
        if recorded != .opened { rowsDeletedAt = now - (sinceRowsDeleted ?? .zero) }
    }

    /// The rows are deleted and recorded, with `plan`; `removed` is the journal's new total.
    mutating func rowsDeleted(_ plan: ErasurePlan, removed: ErasureCounts, now: ContinuousClock.Instant) {
        self.plan = plan
        self.removed = removed
        rowsDeletedAt = now
        step = .rowsDeleted
    }

    /// A later step is done and recorded; `removed` is the journal's new total.
    mutating func recorded(_ done: ErasureStep, removed: ErasureCounts) {
        self.removed = removed
        step = done
    }

    mutating func closed() {
        isClosed = true
    }
}
