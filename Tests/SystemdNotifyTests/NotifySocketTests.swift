import Foundation
import Historian
import Logging
import Testing

@testable import SystemdNotify

#if canImport(Glibc)
import Glibc
#endif

/// The datagrams themselves, received on a real socket bound the way systemd binds it.
@Suite struct NotifySocketTests {
    /// A bound AF_UNIX datagram socket, like systemd's, at `name` (`@` for the abstract namespace).
    final class Receiver {
        let descriptor: Int32
        let path: String?

        init(_ name: String) throws {
            descriptor = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
            path = name.hasPrefix("@") ? nil : name
            let address = try NotifySocket.address(of: name)
            let bound = address.withUnsafeBytes {
                bind(descriptor, $0.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t($0.count))
            }
            guard bound == 0 else { throw NotifySocket.Failure(description: "bind: \(String(cString: strerror(errno)))") }
            var timeout = timeval(tv_sec: 5, tv_usec: 0)
            setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        }

        deinit {
            close(descriptor)
            if let path { unlink(path) }
        }

        func receive() -> String? {
            var buffer = [UInt8](repeating: 0, count: 4096)
            let count = recv(descriptor, &buffer, buffer.count, 0)
            return count < 0 ? nil : String(decoding: buffer[..<count], as: UTF8.self)
        }
    }

    @Test("messages reach a socket in the abstract namespace and one at a path, one datagram each")
    func delivery() throws {
        let abstract = "@historian-test-\(UUID().uuidString)"
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("notify-\(UUID().uuidString)").path
        for name in [abstract, path] {
            let receiver = try Receiver(name)
            let socket = try NotifySocket(name)
            try socket.send("READY=1\nSTATUS=consuming")
            try socket.send("WATCHDOG=1")
            #expect(receiver.receive() == "READY=1\nSTATUS=consuming")
            #expect(receiver.receive() == "WATCHDOG=1")
        }
    }

    @Test("the address: a path with its NUL, an abstract name without; other names refused")
    func addresses() throws {
        let offset = MemoryLayout<sockaddr_un>.offset(of: \sockaddr_un.sun_path)!
        let path = try NotifySocket.address(of: "/run/systemd/notify")
        #expect(path.count == offset + "/run/systemd/notify".utf8.count + 1)
        #expect(Array(path[offset...]) == Array("/run/systemd/notify".utf8) + [0])
        let abstract = try NotifySocket.address(of: "@sd-notify")
        #expect(Array(abstract[offset...]) == [0] + Array("sd-notify".utf8))
        #expect(throws: NotifySocket.Failure.self) { try NotifySocket.address(of: "relative/path") }
        #expect(throws: NotifySocket.Failure.self) { try NotifySocket.address(of: "/" + String(repeating: "x", count: 200)) }
    }

    @Test("no socket, no notifier: without NOTIFY_SOCKET nothing changes")
    func absent() throws {
        #expect(try SystemdNotifier(environment: [:], health: DaemonHealth(), logger: Logger(label: "test")) == nil)
    }

    @Test("a send to a socket nobody listens on fails with errno's text, and does not block")
    func unreachable() throws {
        let socket = try NotifySocket("@historian-nobody-\(UUID().uuidString)")
        #expect(throws: NotifySocket.Failure.self) { try socket.send("WATCHDOG=1") }
    }
}
