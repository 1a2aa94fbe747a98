import Synchronization

/// Which of a process's workers waits on the stream for new entries: one at a time, in turn.
///
/// Redis serves a client blocked in `XREADGROUP` as soon as an entry is added, before it runs
/// the next command. When every idle worker blocks, a burst of entries (a producer's pipeline,
/// a busy millisecond) is dealt out one entry per worker, and each worker pays a whole batch's
/// round trips for one or two messages. With the turn, one worker blocks; the first entry wakes
/// it, its read without waiting (the linger's last) collects what arrived meanwhile, and only
/// then does it pass the turn on.
///
/// A worker holds the turn only while it reads, never while it stores, so a busy worker never
/// keeps the others from reading. Waiters are served first come, first served.
final class ReadTurn: Sendable {
    private struct State {
        var taken = false
        var waiters: [(id: UInt64, continuation: CheckedContinuation<Void, any Error>)] = []
        var lastID: UInt64 = 0
    }

    private let state = Mutex(State())

    init() {}

    /// How many workers are waiting for the turn.
    var waiting: Int { state.withLock { $0.waiters.count } }

    /// Runs `body` holding the turn, waiting for it first.
    /// - Throws: `CancellationError` when the task is cancelled while waiting; then `body` does not run.
    func withTurn<T>(_ body: () async throws -> T) async throws -> T {
        try await take()
        defer { release() }
        return try await body()
    }

    private func take() async throws {
        let id = state.withLock { state in
            state.lastID += 1
            return state.lastID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let now: Result<Void, any Error>? = state.withLock { state in
                    // Checked under the lock: a cancellation handler that ran before this found
                    // no waiter to remove, and one that runs after finds this one queued.
                    if Task.isCancelled { return .failure(CancellationError()) }
                    if !state.taken {
                        state.taken = true
                        return .success(())
                    }
                    state.waiters.append((id, continuation))
                    return nil
                }
                if let now { continuation.resume(with: now) }
            }
        } onCancel: {
            let waiter = state.withLock { state -> CheckedContinuation<Void, any Error>? in
                guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return state.waiters.remove(at: index).continuation
            }
            waiter?.resume(throwing: CancellationError())
        }
    }

    /// Passes the turn to the longest waiter, or frees it.
    private func release() {
        let next = state.withLock { state -> CheckedContinuation<Void, any Error>? in
            guard !state.waiters.isEmpty else {
                state.taken = false
                return nil
            }
            return state.waiters.removeFirst().continuation
        }
        next?.resume()
    }
}
