import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Points at which a test can make the process die as a crash would: with
/// `HISTORIAN_TEST_CRASH_AT=<point>` in its environment, the process kills itself with SIGKILL
/// when it gets there. The integration tests hold the archive's crash-safety to the real binary
/// this way, at exact places no outside timing could hit. Without the variable a point costs a
/// comparison; it is never set in production.
enum CrashPoint: String, Sendable {
    /// An archive file's bytes are written aside under its temporary name, not yet synced.
    case archiveWritten = "archive-written"
    /// The file is synced and renamed into place; its `.sha256` is not written yet.
    case archiveRenamed = "archive-renamed"
    /// The file and its `.sha256` are read back and verified; no row is deleted yet.
    case archiveVerified = "archive-verified"
    /// The rows are deleted and the archive recorded; the Redis keys are not removed yet.
    case archiveDeleted = "archive-deleted"

    // An erasure's steps (`ErasureStep`), each right after the journal recorded it done.
    /// The journal row is open; nothing is removed yet.
    case erasureOpened = "erasure-opened"
    /// The rows are deleted and what the rest needs is in the journal; files, keys and dead
    /// letters are all still there.
    case erasureRowsDeleted = "erasure-rows-deleted"
    /// The Redis keys are removed (first pass) and the lists tombstoned.
    case erasureKeysRemoved = "erasure-keys-removed"
    /// The archive files are removed.
    case erasureFilesRemoved = "erasure-files-removed"
    /// The dead letters are removed.
    case erasureDeadLettersRemoved = "erasure-dead-letters-removed"
    /// The second pass over the Redis keys is done; the journal row is not closed yet.
    case erasureKeysRemovedAgain = "erasure-keys-removed-again"

    /// The point this process was told to die at, if any.
    static let armed = ProcessInfo.processInfo.environment["HISTORIAN_TEST_CRASH_AT"].flatMap(CrashPoint.init)

    /// Dies here if this is the armed point.
    static func reached(_ point: CrashPoint) {
        if armed == point { kill(getpid(), SIGKILL) }
    }
}
