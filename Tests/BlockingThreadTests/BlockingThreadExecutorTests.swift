import BlockingThread
import Foundation
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

@Suite("BlockingThreadExecutor")
struct BlockingThreadExecutorTests {
    @Test("a task that prefers the executor stays on its one thread across suspensions; the pool is never a blocking thread")
    func staysOnItsThread() async throws {
        let executor = BlockingThreadExecutor(name: "test-thread")
        defer { executor.shutdown() }
        #expect(!BlockingThread.isCurrent)

        let seen = try await withTaskExecutorPreference(executor) { () async throws -> [(UInt, Bool)] in
            var seen = [(UInt(pthread_self()), BlockingThread.isCurrent)]
            try await Task.sleep(for: .milliseconds(5))
            seen.append((UInt(pthread_self()), BlockingThread.isCurrent))
            await Task.yield()
            seen.append((UInt(pthread_self()), BlockingThread.isCurrent))
            // Resumed from another thread: a continuation completed on the pool.
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                Task.detached { continuation.resume() }
            }
            seen.append((UInt(pthread_self()), BlockingThread.isCurrent))
            return seen
        }
        #expect(seen.count == 4)
        #expect(seen.allSatisfy { $0.1 }, "every step ran on a blocking thread")
        #expect(Set(seen.map(\.0)).count == 1, "every step ran on the same thread")

        let onPool = await Task.detached { (UInt(pthread_self()), BlockingThread.isCurrent) }.value
        #expect(!onPool.1)
        #expect(onPool.0 != seen[0].0)
    }

    #if os(Linux)
    @Test("each thread carries its name in the system, for top -H and /proc")
    func threadsAreNamed() async throws {
        for index in 0..<20 {
            let executor = BlockingThreadExecutor(name: "named-\(index)")
            defer { executor.shutdown() }
            let name = try await withTaskExecutorPreference(executor) {
                try String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)
            }
            #expect(name == "named-\(index)\n")
        }
    }
    #endif

    @Test("jobs run one at a time, in the order they were enqueued")
    func runsJobsInOrderOneAtATime() async {
        let executor = BlockingThreadExecutor(name: "test-thread")
        defer { executor.shutdown() }
        let log = JobLog()
        await withDiscardingTaskGroup { group in
            for index in 0..<200 {
                group.addTask(executorPreference: executor) {
                    log.state.withLock {
                        $0.running += 1
                        $0.mostAtOnce = max($0.mostAtOnce, $0.running)
                    }
                    // Blocks the thread for a moment: any other job would have to run beside it to overlap.
                    if index % 20 == 0 { usleep(1_000) }
                    log.state.withLock {
                        $0.order.append(index)
                        $0.running -= 1
                    }
                }
            }
        }
        let result = log.state.withLock { $0 }
        #expect(result.order == Array(0..<200))
        #expect(result.mostAtOnce == 1)
    }

    @Test("after shutdown the thread exits, and a task that still prefers the executor runs on the global one")
    func afterShutdown() async {
        let executor = BlockingThreadExecutor(name: "test-thread")
        let before = await withTaskExecutorPreference(executor) { BlockingThread.isCurrent }
        #expect(before)
        executor.shutdown()
        executor.shutdown()
        let after = await withTaskExecutorPreference(executor) { () async -> (Bool, Int) in
            await Task.yield()
            return (BlockingThread.isCurrent, 42)
        }
        #expect(after == (false, 42))
    }
}

private struct JobRecord {
    var order: [Int] = []
    var running = 0
    var mostAtOnce = 0
}

private final class JobLog: Sendable {
    let state = Mutex(JobRecord())
}
