import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A stand-in for systemd's notify socket: an `AF_UNIX` datagram socket in the abstract
/// namespace that records every datagram it receives, with the time it came.
final class NotifyReceiver: Sendable {
    struct Message: Sendable {
        var at: ContinuousClock.Instant
        var text: String
        /// The `KEY=VALUE` assignments, one per line.
        var lines: [String] { text.split(separator: "\n").map(String.init) }
    }

    /// What goes in `NOTIFY_SOCKET`: `@` and the abstract name.
    let name = "@historian-notify-\(UUID().uuidString)"
    private let descriptor: Int32
    private let received = Mutex<[Message]>([])
    private let stopped = Atomic<Bool>(false)
    private let done = Mutex<Bool>(false)

    init() throws {
        descriptor = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = [UInt8(0)] + Array(name.utf8.dropFirst())
        withUnsafeMutableBytes(of: &address.sun_path) { path in
            for (index, byte) in bytes.enumerated() { path[index] = byte }
        }
        let length = socklen_t(MemoryLayout<sockaddr_un>.offset(of: \sockaddr_un.sun_path)! + bytes.count)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, length) }
        }
        guard bound == 0 else { throw TimedOut(what: "binding the notify socket: errno \(errno)") }
        var timeout = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let thread = Thread { [self] in receiveUntilStopped() }
        thread.name = "notify-receiver"
        thread.start()
    }

    deinit {
        close(descriptor)
    }

    private func receiveUntilStopped() {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while !stopped.load(ordering: .relaxed) {
            let count = recv(descriptor, &buffer, buffer.count, 0)
            guard count > 0 else { continue }
            let message = Message(at: .now, text: String(decoding: buffer[..<count], as: UTF8.self))
            received.withLock { $0.append(message) }
        }
        done.withLock { $0 = true }
    }

    /// Stops receiving; call before the receiver goes away.
    func stop() {
        stopped.store(true, ordering: .relaxed)
        while !done.withLock({ $0 }) { usleep(50_000) }
    }

    var messages: [Message] { received.withLock { $0 } }

    /// The instants at which a message held `line` (e.g. `WATCHDOG=1`).
    func times(of line: String) -> [ContinuousClock.Instant] {
        messages.filter { $0.lines.contains(line) }.map(\.at)
    }

    /// Every `STATUS=` value so far, in order.
    var statuses: [String] {
        messages.flatMap(\.lines).filter { $0.hasPrefix("STATUS=") }.map { String($0.dropFirst("STATUS=".count)) }
    }
}
