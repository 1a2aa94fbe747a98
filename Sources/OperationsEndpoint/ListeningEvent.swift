import Synchronization

/// Happens once: the endpoint listens, or fails to. Waiters before and after get the same
/// outcome; a waiter whose task is cancelled stops waiting with `CancellationError`.
final class ListeningEvent: Sendable {
    private struct Waiting {
        var waiters: [Int: CheckedContinuation<Void, any Error>] = [:]
        var cancelled: Set<Int> = []
        var nextID = 0
    }

    private enum State {
        case waiting(Waiting)
        case happened(Result<Void, any Error>)
    }

    private let state = Mutex(State.waiting(Waiting()))

    /// Whether it happened, successfully.
    var succeeded: Bool {
        state.withLock { state in
            if case .happened(.success) = state { return true }
            return false
        }
    }

    /// Records the outcome and wakes the waiters; only the first call counts.
    func finish(_ outcome: Result<Void, any Error>) {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, any Error>] in
            guard case .waiting(let waiting) = state else { return [] }
            state = .happened(outcome)
            return Array(waiting.waiters.values)
        }
        for waiter in waiters { waiter.resume(with: outcome) }
    }

    func wait() async throws {
        let id = state.withLock { state -> Int? in
            guard case .waiting(var waiting) = state else { return nil }
            let id = waiting.nextID
            waiting.nextID += 1
            state = .waiting(waiting)
            return id
        }
        guard let id else { return try outcome!.get() }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let resumeNow = state.withLock { state -> Result<Void, any Error>? in
                    switch state {
                    case .happened(let outcome):
                        return outcome
                    case .waiting(var waiting):
                        if waiting.cancelled.remove(id) != nil { return .failure(CancellationError()) }
                        waiting.waiters[id] = continuation
                        state = .waiting(waiting)
                        return nil
                    }
                }
                if let resumeNow { continuation.resume(with: resumeNow) }
            }
        } onCancel: {
            let waiter = state.withLock { state -> CheckedContinuation<Void, any Error>? in
                guard case .waiting(var waiting) = state else { return nil }
                let waiter = waiting.waiters.removeValue(forKey: id)
                // Cancelled before its continuation was stored: it must not wait at all.
                if waiter == nil { waiting.cancelled.insert(id) }
                state = .waiting(waiting)
                return waiter
            }
            waiter?.resume(throwing: CancellationError())
        }
    }

    private var outcome: Result<Void, any Error>? {
        state.withLock { state in
            if case .happened(let outcome) = state { return outcome }
            return nil
        }
    }
}
