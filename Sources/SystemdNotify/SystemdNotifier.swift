#if canImport(Glibc)
import Glibc
#endif
import Historian
import Logging
import ServiceLifecycle

/// Speaks systemd's notify protocol for `historian run`: readiness, status, watchdog pings and
/// stopping, as `NotifyStateMachine` decides from the daemon's health.
///
/// Made only when `$NOTIFY_SOCKET` is set (a `Type=notify` unit); without it nothing changes.
public struct SystemdNotifier: Service, CustomStringConvertible {
    let socket: NotifySocket
    let health: DaemonHealth
    let watchdogInterval: Duration?
    let logger: Logger

    /// `nil` when `$NOTIFY_SOCKET` is not set. Throws when it is set but cannot be used.
    public init?(environment: [String: String], health: DaemonHealth, logger: Logger) throws {
        guard let name = environment["NOTIFY_SOCKET"], !name.isEmpty else { return nil }
        socket = try NotifySocket(name)
        self.health = health
        self.watchdogInterval = Self.watchdogInterval(environment)
        self.logger = logger
    }

    public var description: String {
        "SystemdNotifier(watchdog: \(watchdogInterval.map { "\($0)" } ?? "off"))"
    }

    /// `$WATCHDOG_USEC`, when it is meant for this process (`$WATCHDOG_PID` unset or ours).
    public static func watchdogInterval(_ environment: [String: String]) -> Duration? {
        if let pid = environment["WATCHDOG_PID"], pid != String(getpid()) { return nil }
        guard let text = environment["WATCHDOG_USEC"], let microseconds = Int64(text), microseconds > 0 else {
            return nil
        }
        return .microseconds(microseconds)
    }

    public func run() async throws {
        try? await cancelWhenGracefulShutdown { [self] in
            var machine = NotifyStateMachine(watchdogInterval: watchdogInterval)
            while !Task.isCancelled {
                let action = machine.tick(at: .now, health.snapshot())
                if let message = action.message { send(message) }
                try await Task.sleep(until: action.next, clock: .continuous)
            }
        }
        send(NotifyStateMachine.stopping)
    }

    private func send(_ message: String) {
        do {
            try socket.send(message)
            logger.trace("told systemd", metadata: ["systemd.notify": "\(message)"])
        } catch {
            logger.warning("could not tell systemd", metadata: ["error": "\(error)"])
        }
    }
}
