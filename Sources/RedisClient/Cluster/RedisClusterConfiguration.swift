/// Where a Redis Cluster can be found, and how to talk to its nodes.
///
/// The seeds are only where the client first learns the slot map (`CLUSTER SLOTS`); after that it connects to the
/// masters the map names, with the first seed's credentials and timeouts. A cluster has database 0 only, so any
/// other database is refused rather than silently ignored.
public struct RedisClusterConfiguration: Sendable, CustomStringConvertible {
    /// Nodes to learn the slot map from, tried in order; the first one's credentials and timeouts are used for
    /// every node.
    public var seeds: [RedisConfiguration]
    /// How many `MOVED`/`ASK` redirects one command may follow before its last redirect reply becomes its result.
    public var maxRedirects: Int

    /// A configuration with these seeds.
    ///
    /// Throws ``RedisError`` with code ``RedisError/Code/invalidConfiguration`` when there is no seed or a seed
    /// selects a database other than 0.
    public init(seeds: [RedisConfiguration], maxRedirects: Int = 5) throws {
        self.seeds = seeds
        self.maxRedirects = maxRedirects
        try validate()
    }

    /// Parses `redis://[user:password@]host:port,host:port,…[/0]`: the URL of ``RedisConfiguration/init(url:)``
    /// with a comma-separated list of `host:port` seeds as its host part.
    ///
    /// Credentials, database and timeouts are as that parser has them, shared by every seed. Throws ``RedisError``
    /// with code ``RedisError/Code/invalidURL``, whose message never quotes the URL, also when the database is not
    /// 0: a cluster has no other.
    public init(url: String, maxRedirects: Int = 5) throws {
        self.seeds = try Self.parseSeeds(url)
        self.maxRedirects = maxRedirects
        if seeds.contains(where: { $0.database != 0 }) {
            throw RedisError(code: .invalidURL, message: "invalid Redis URL: a Redis Cluster has database 0 only")
        }
        try validate()
    }

    /// Checks what ``RedisClusterClient`` relies on; see ``init(seeds:maxRedirects:)``.
    func validate() throws(RedisError) {
        guard !seeds.isEmpty else {
            throw RedisError(code: .invalidConfiguration, message: "a Redis Cluster needs at least one seed node")
        }
        if seeds.contains(where: { $0.database != 0 }) {
            throw RedisError(
                code: .invalidConfiguration,
                message: "a Redis Cluster has database 0 only; remove the database from the configuration"
            )
        }
        guard maxRedirects >= 0 else {
            throw RedisError(code: .invalidConfiguration, message: "maxRedirects must not be negative")
        }
    }

    /// The configuration for connecting to `endpoint`: the first seed's, with that endpoint.
    func node(_ endpoint: RedisConfiguration.Endpoint) -> RedisConfiguration {
        var configuration = seeds[0]
        configuration.endpoint = endpoint
        return configuration
    }

    /// The seeds, passwords shown as `***` (see ``RedisConfiguration/description``).
    public var description: String {
        "RedisClusterConfiguration(seeds: \(seeds.map(\.endpoint)), first seed: \(seeds.first?.description ?? "none"), "
            + "maxRedirects: \(maxRedirects))"
    }

    /// Splits the host list and parses one single-host URL per seed with ``RedisConfiguration/init(url:)``, so
    /// credentials, database and query mean exactly what they mean there.
    private static func parseSeeds(_ url: String) throws -> [RedisConfiguration] {
        guard let schemeEnd = url.firstRange(of: "://") else {
            throw invalid("expected redis://host:port,host:port[/0]")
        }
        let scheme = url[..<schemeEnd.lowerBound].lowercased()
        if scheme == "rediss" {
            throw RedisError.tlsNotSupported
        }
        guard scheme == "redis" else {
            throw invalid("a Redis Cluster URL must use redis://")
        }
        let rest = url[schemeEnd.upperBound...]
        // As RedisConfiguration's parser does: the authority ends at the first '/' or '?', the user information at
        // the last '@' within it.
        let authorityEnd = rest.firstIndex { $0 == "/" || $0 == "?" } ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        let tail = rest[authorityEnd...]
        var userinfo: Substring?
        var hostList = authority
        if let at = authority.lastIndex(of: "@") {
            userinfo = authority[..<at]
            hostList = authority[authority.index(after: at)...]
        }
        let hosts = hostList.split(separator: ",", omittingEmptySubsequences: false)
        // A lone empty host is the single-node parser's default host; an empty entry in a list is a typo.
        guard hosts.count == 1 || !hosts.contains(where: \.isEmpty) else {
            throw invalid("the host list has an empty entry; expected host:port,host:port")
        }
        return try hosts.map { host in
            let single = "redis://" + (userinfo.map { $0 + "@" } ?? "") + host + tail
            return try RedisConfiguration(url: single)
        }
    }

    private static func invalid(_ reason: String) -> RedisError {
        RedisError(code: .invalidURL, message: "invalid Redis URL: \(reason)")
    }
}
