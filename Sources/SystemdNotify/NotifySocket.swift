#if canImport(Glibc)
import Glibc
#endif

/// systemd's notification socket, `$NOTIFY_SOCKET`: an `AF_UNIX` datagram socket to which a
/// service sends `READY=1`, `STATUS=…`, `WATCHDOG=1` and `STOPPING=1`, newline-separated, one
/// datagram per message (sd_notify(3); written here directly, without libsystemd).
///
/// A name that starts with `@` is in the abstract namespace: the `@` becomes a NUL byte.
public final class NotifySocket: Sendable {
    private let descriptor: Int32
    /// The `sockaddr_un` to send to, as bytes, and its length.
    private let address: [UInt8]

    /// What went wrong opening or writing the socket; `errno`'s text, never a message's content.
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// Opens a datagram socket for `$NOTIFY_SOCKET`'s value: a path, or `@` and an abstract name.
    public init(_ name: String) throws {
        address = try Self.address(of: name)
        let descriptor = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else { throw Failure(description: "socket(AF_UNIX): \(Self.errnoText())") }
        self.descriptor = descriptor
    }

    deinit {
        close(descriptor)
    }

    /// Sends one message. It never blocks: if systemd's queue is full, the message is lost and
    /// this throws (a later one says the same again).
    public func send(_ message: String) throws {
        var bytes = Array(message.utf8)
        let sent = bytes.withUnsafeMutableBytes { payload in
            address.withUnsafeBytes { raw in
                sendto(
                    descriptor,
                    payload.baseAddress,
                    payload.count,
                    Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT),
                    raw.baseAddress!.assumingMemoryBound(to: sockaddr.self),
                    socklen_t(raw.count)
                )
            }
        }
        guard sent == bytes.count else { throw Failure(description: "sendto: \(Self.errnoText())") }
    }

    /// The `sockaddr_un` for `name`: the family, then the path, or a NUL and the abstract name.
    static func address(of name: String) throws -> [UInt8] {
        var path = Array(name.utf8)
        guard path.first == UInt8(ascii: "/") || path.first == UInt8(ascii: "@") else {
            throw Failure(description: "NOTIFY_SOCKET must be an absolute path or an abstract name starting with @")
        }
        if path[0] == UInt8(ascii: "@") { path[0] = 0 }
        let pathOffset = MemoryLayout<sockaddr_un>.offset(of: \sockaddr_un.sun_path)!
        let capacity = MemoryLayout<sockaddr_un>.size - pathOffset
        // A path needs room for its NUL terminator; an abstract name is counted by length.
        guard path.count < capacity || (path[0] == 0 && path.count <= capacity) else {
            throw Failure(description: "NOTIFY_SOCKET is longer than a socket address can hold")
        }
        var family = sa_family_t(AF_UNIX)
        var bytes = withUnsafeBytes(of: &family) { Array($0) }
        bytes += [UInt8](repeating: 0, count: pathOffset - bytes.count)
        bytes += path
        // A path's length includes its NUL; an abstract name's does not (its bytes are the name).
        if path[0] != 0 { bytes.append(0) }
        return bytes
    }

    private static func errnoText() -> String {
        String(cString: strerror(errno))
    }
}
