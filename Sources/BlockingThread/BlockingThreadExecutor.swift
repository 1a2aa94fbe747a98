internal import Dispatch
internal import Foundation
internal import Synchronization

#if canImport(Glibc)
internal import Glibc
#elseif canImport(Musl)
internal import Musl
#elseif canImport(Darwin)
internal import Darwin
#endif

/// A task executor that runs its jobs on one thread of its own, a thread on which blocking calls may run.
///
/// The Redis and PostgreSQL clients block in C (hiredis, libpq). Called from Swift's cooperative pool, they
/// hop onto a dispatch queue for each call and back, which costs two thread wake-ups per call. A task that
/// prefers this executor (`withTaskExecutorPreference`, `addTask(executorPreference:)`) runs on this thread
/// instead, and there the clients make their calls in place (``BlockingThread/isCurrent``): one thread,
/// no hand-offs, and the caller's data stays in one core's caches.
///
/// Jobs run one at a time, in the order they were enqueued. Call ``shutdown()`` when no task prefers the
/// executor any more: the thread then finishes what is queued and exits; a job enqueued after that runs on
/// the global concurrent executor.
public final class BlockingThreadExecutor: TaskExecutor, Sendable {
    private struct Jobs: ~Copyable {
        /// Rarely more than one or two: the continuations of the one task that prefers the executor.
        var queue: [UnownedJob] = []
        var stopping = false
    }

    private let jobs = Mutex(Jobs())
    /// Signalled once per job and once by `shutdown()`.
    private let wakeup = DispatchSemaphore(value: 0)

    /// Starts the thread; `name` shows in `top -H`, `/proc` and debuggers (Linux takes names of up to 15 bytes).
    public init(name: String) {
        let thread = Thread { [self] in
            nameCurrentThread(name)
            self.runJobs()
        }
        thread.start()
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let accepted = jobs.withLock { jobs in
            if jobs.stopping { return false }
            jobs.queue.append(job)
            return true
        }
        if accepted {
            wakeup.signal()
        } else {
            globalConcurrentExecutor.enqueue(job)
        }
    }

    /// Lets the thread exit once the jobs already queued have run.
    public func shutdown() {
        let first = jobs.withLock { jobs in
            defer { jobs.stopping = true }
            return !jobs.stopping
        }
        if first { wakeup.signal() }
    }

    private func runJobs() {
        BlockingThread.markCurrent()
        let executor = asUnownedTaskExecutor()
        while true {
            wakeup.wait()
            let (job, stopping) = jobs.withLock { jobs in
                (jobs.queue.isEmpty ? nil : jobs.queue.removeFirst(), jobs.stopping)
            }
            if let job {
                job.runSynchronously(on: executor)
            } else if stopping {
                return
            }
        }
    }
}

/// Gives the current thread its name in the system (`Thread.name` may not: set from the new thread before
/// `start()` has returned in the old one, Foundation keeps it to itself).
private func nameCurrentThread(_ name: String) {
    #if os(Linux)
    // glibc's pthread_setname_np is not visible to Swift; this is what it does for the calling thread.
    let fd = open("/proc/thread-self/comm", O_WRONLY | O_CLOEXEC)
    guard fd >= 0 else { return }
    defer { close(fd) }
    let bytes = Array(name.utf8.prefix(15))
    _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    #elseif canImport(Darwin)
    _ = pthread_setname_np(name)
    #endif
}

/// Whether the current thread may block: true on the thread of a ``BlockingThreadExecutor``.
public enum BlockingThread {
    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        precondition(pthread_key_create(&key, nil) == 0, "pthread_key_create failed")
        return key
    }()

    /// True on a thread that exists to make blocking calls; Swift's cooperative pool is never such a thread.
    public static var isCurrent: Bool {
        pthread_getspecific(key) != nil
    }

    static func markCurrent() {
        pthread_setspecific(key, UnsafeRawPointer(bitPattern: 1))
    }
}
