/// What a cluster-specific error reply asks the client to do: go elsewhere (`MOVED`, `ASK`) or come back later
/// (`TRYAGAIN`, `CLUSTERDOWN`).
///
/// The one place these replies are recognised. A command that got any of them was not executed, so it may be sent
/// again; every other error reply is the command's result.
enum RedisClusterRedirection: Sendable, Hashable {
    /// The slot now belongs to another master (`MOVED slot host:port`): the client's map is out of date.
    /// `nil` when the server does not know the new master's endpoint (`?`).
    case moved(slot: Int, to: RedisConfiguration.Endpoint?)
    /// The slot is being migrated and this key may already be at the importing node (`ASK slot host:port`): send
    /// `ASKING` and the command there, once, without changing the map.
    case ask(slot: Int, to: RedisConfiguration.Endpoint?)
    /// A multi-key command met a slot being migrated with only some of its keys present (`TRYAGAIN`).
    case tryAgain
    /// The cluster cannot serve the slot now, e.g. during a failover (`CLUSTERDOWN`).
    case clusterDown

    /// Classifies an error reply's text; `nil` when it is not one of the four.
    ///
    /// `replyingHost` is the host of the node that replied: Redis 7 leaves the host out (`MOVED 3999 :6381`) when
    /// it is the same as the one the client reached.
    init?(errorReply text: String, replyingHost: String) {
        let words = text.split(separator: " ", maxSplits: 3, omittingEmptySubsequences: true)
        guard let kind = words.first else { return nil }
        switch kind {
        case "MOVED", "ASK":
            guard words.count >= 3, let slot = Int(words[1]), (0..<RedisHashSlot.count).contains(slot) else {
                return nil
            }
            let endpoint = Self.endpoint(words[2], replyingHost: replyingHost)
            self = kind == "MOVED" ? .moved(slot: slot, to: endpoint) : .ask(slot: slot, to: endpoint)
        case "TRYAGAIN":
            self = .tryAgain
        case "CLUSTERDOWN":
            self = .clusterDown
        default:
            return nil
        }
    }

    /// `host:port`, the host possibly an unbracketed IPv6 address (split at the last colon), empty (the replying
    /// host) or `?` (unknown: `nil`).
    private static func endpoint(_ text: Substring, replyingHost: String) -> RedisConfiguration.Endpoint? {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (1...65535).contains(port)
        else { return nil }
        var host = text[..<colon]
        if host.hasPrefix("["), host.hasSuffix("]") {
            host = host.dropFirst().dropLast()
        }
        guard host != "?" else { return nil }
        return .tcp(host: host.isEmpty ? replyingHost : String(host), port: port)
    }
}

extension RedisConfiguration.Endpoint {
    /// The host that a cluster reply leaving its host out (`MOVED 3999 :6381`, an empty IP in `CLUSTER SLOTS`)
    /// means: this node's, or loopback for a Unix socket.
    var hostForClusterReplies: String {
        switch self {
        case .tcp(let host, _): host
        case .unix: "127.0.0.1"
        }
    }
}
