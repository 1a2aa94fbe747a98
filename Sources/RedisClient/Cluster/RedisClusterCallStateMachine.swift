/// The decisions of one call through ``RedisClusterClient``, one command or a pipeline: where each command goes
/// next, what its reply means, when the slot map must be relearnt, how long to back off, when the call is done.
///
/// No I/O here: the client runs the ``Action`` that ``nextAction(map:now:)`` returns, hands every reply of a round
/// back through ``received(_:forCommand:now:)``, and asks again. Each command moves on its own: one that meets
/// `MOVED` is resent to the node named (and the map relearnt), one that meets `ASK` is resent once with `ASKING`
/// to the importing node, one that meets `TRYAGAIN` or `CLUSTERDOWN` waits a little and starts again from the
/// slot's master. Those replies mean the command did not run, so resending is safe. Any other reply, error
/// replies included, is the command's result.
struct RedisClusterCallStateMachine {
    /// Where a command goes next.
    enum Target: Hashable {
        /// The master the slot map names for the command's slot.
        case slotOwner
        /// A node a `MOVED` named.
        case node(RedisConfiguration.Endpoint)
        /// The importing node an `ASK` named: `ASKING` goes first.
        case asking(RedisConfiguration.Endpoint)
    }

    /// One command of a node's share of a round.
    struct Entry: Hashable {
        /// The command's position in the call.
        var index: Int
        /// Whether `ASKING` goes right before it.
        var asking: Bool
    }

    /// One node's share of a round: its commands, in the caller's order, sent there as one pipeline.
    struct Dispatch: Hashable {
        var endpoint: RedisConfiguration.Endpoint
        var entries: [Entry]
    }

    /// What the client does next.
    enum Action: Hashable {
        /// Relearn the slot map (`CLUSTER SLOTS`), then ask again.
        case learnSlotMap
        /// Send each node its share, one pipeline per node, then hand every reply back.
        case send([Dispatch])
        /// Nothing to send before this instant (commands backing off): sleep, then ask again.
        case wait(until: ContinuousClock.Instant)
        /// Every command has its result: the call returns these, in the caller's order.
        case finish([RESPValue])
    }

    private enum CommandState {
        case ready(Target)
        case sent(to: RedisConfiguration.Endpoint)
        case backingOff(until: ContinuousClock.Instant)
        case done(RESPValue)
    }

    private struct Command {
        let slot: RedisHashSlot
        var state: CommandState
        var redirects = 0
        var retries = 0
    }

    /// The reply Redis itself gives for a slot no master serves, given to a command whose slot has none in the map
    /// until the call's deadline.
    static let slotNotServedReply = RESPValue.error("CLUSTERDOWN Hash slot not served")
    /// The first back-off after `TRYAGAIN`/`CLUSTERDOWN`; each retry doubles it up to `longestBackoff`.
    static let firstBackoff = Duration.milliseconds(10)
    static let longestBackoff = Duration.milliseconds(250)

    private var commands: [Command]
    private let deadline: ContinuousClock.Instant
    private let maxRedirects: Int
    private var needsSlotMap = false

    /// A call of commands for these slots; retries stop at `deadline`, redirects after `maxRedirects` per command.
    init(slots: [RedisHashSlot], deadline: ContinuousClock.Instant, maxRedirects: Int) {
        self.commands = slots.map { Command(slot: $0, state: .ready(.slotOwner)) }
        self.deadline = deadline
        self.maxRedirects = maxRedirects
    }

    /// What to do next, routing by `map`.
    mutating func nextAction(map: RedisClusterSlotMap, now: ContinuousClock.Instant) -> Action {
        if let replies = finalReplies() {
            return .finish(replies)
        }
        if needsSlotMap {
            needsSlotMap = false
            return .learnSlotMap
        }

        var dispatches: [Dispatch] = []
        var dispatchIndex: [RedisConfiguration.Endpoint: Int] = [:]
        for index in commands.indices {
            if case .backingOff(let until) = commands[index].state, until <= now {
                commands[index].state = .ready(.slotOwner)
            }
            guard case .ready(let target) = commands[index].state else { continue }
            let endpoint: RedisConfiguration.Endpoint
            let asking: Bool
            switch target {
            case .slotOwner:
                guard let master = map.master(serving: commands[index].slot) else {
                    slotNotServed(index, now: now)
                    continue
                }
                (endpoint, asking) = (master.endpoint, false)
            case .node(let node):
                (endpoint, asking) = (node, false)
            case .asking(let node):
                (endpoint, asking) = (node, true)
            }
            commands[index].state = .sent(to: endpoint)
            if let existing = dispatchIndex[endpoint] {
                dispatches[existing].entries.append(Entry(index: index, asking: asking))
            } else {
                dispatchIndex[endpoint] = dispatches.count
                dispatches.append(Dispatch(endpoint: endpoint, entries: [Entry(index: index, asking: asking)]))
            }
        }

        if !dispatches.isEmpty {
            return .send(dispatches)
        }
        if let replies = finalReplies() {
            return .finish(replies)
        }
        if needsSlotMap {
            needsSlotMap = false
            return .learnSlotMap
        }
        let wakeUp = commands.compactMap { command -> ContinuousClock.Instant? in
            if case .backingOff(let until) = command.state { return until }
            return nil
        }.min()
        // Every command is done, sent or backing off, and none was sent: one is backing off.
        return .wait(until: wakeUp ?? now)
    }

    /// Takes the reply of command `index`, sent in the last round.
    mutating func received(_ reply: RESPValue, forCommand index: Int, now: ContinuousClock.Instant) {
        guard case .sent(let endpoint) = commands[index].state else {
            preconditionFailure("a reply for command \(index), which was not sent")
        }
        guard case .error(let text) = reply,
            let redirection = RedisClusterRedirection(errorReply: text, replyingHost: endpoint.hostForClusterReplies)
        else {
            commands[index].state = .done(reply)
            return
        }
        switch redirection {
        case .moved(_, let destination):
            guard redirect(index, finalReply: reply) else { return }
            commands[index].state = .ready(destination.map { .node($0) } ?? .slotOwner)
            needsSlotMap = true
        case .ask(_, let destination):
            guard redirect(index, finalReply: reply) else { return }
            if let destination {
                commands[index].state = .ready(.asking(destination))
            } else {
                commands[index].state = .ready(.slotOwner)
                needsSlotMap = true
            }
        case .tryAgain:
            backOff(index, now: now, finalReply: reply)
        case .clusterDown:
            backOff(index, now: now, finalReply: reply)
            needsSlotMap = true
        }
    }

    /// Counts a redirect; past the limit the redirect reply becomes the command's result and this returns false.
    private mutating func redirect(_ index: Int, finalReply: RESPValue) -> Bool {
        commands[index].redirects += 1
        guard commands[index].redirects <= maxRedirects else {
            commands[index].state = .done(finalReply)
            return false
        }
        return true
    }

    /// Waits before the command starts again from its slot's master; a wait that would end past the deadline makes
    /// `finalReply` the command's result instead.
    private mutating func backOff(_ index: Int, now: ContinuousClock.Instant, finalReply: RESPValue) {
        let delay = Self.backoff(afterRetries: commands[index].retries)
        commands[index].retries += 1
        if now + delay >= deadline {
            commands[index].state = .done(finalReply)
        } else {
            commands[index].state = .backingOff(until: now + delay)
        }
    }

    /// No master serves the slot in this map: back off and relearn it, as for `CLUSTERDOWN`.
    private mutating func slotNotServed(_ index: Int, now: ContinuousClock.Instant) {
        backOff(index, now: now, finalReply: Self.slotNotServedReply)
        needsSlotMap = true
    }

    /// `firstBackoff` doubled once per earlier retry, at most `longestBackoff`.
    static func backoff(afterRetries retries: Int) -> Duration {
        var delay = firstBackoff
        for _ in 0..<min(retries, 16) where delay < longestBackoff {
            delay *= 2
        }
        return min(delay, longestBackoff)
    }

    /// Every command's result, once all have one.
    private func finalReplies() -> [RESPValue]? {
        var replies: [RESPValue] = []
        replies.reserveCapacity(commands.count)
        for command in commands {
            guard case .done(let reply) = command.state else { return nil }
            replies.append(reply)
        }
        return replies
    }
}
