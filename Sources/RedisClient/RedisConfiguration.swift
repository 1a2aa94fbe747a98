/// Where and how to connect to Redis.
public struct RedisConfiguration: Sendable {
    /// The address of the server.
    public enum Endpoint: Sendable, Hashable, CustomStringConvertible {
        /// A TCP host (name or address) and port.
        case tcp(host: String, port: Int)
        /// A Unix domain socket.
        case unix(path: String)

        /// `host:port` (IPv6 hosts bracketed) or `unix:PATH`; used in logs as `redis.endpoint`.
        public var description: String {
            switch self {
            case .tcp(let host, let port):
                return host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
            case .unix(let path):
                return "unix:\(path)"
            }
        }
    }

    /// The address of the server.
    public var endpoint: Endpoint
    /// The ACL user to authenticate as (Redis 6+); `nil` authenticates as the default user.
    public var username: String?
    /// The password sent with `AUTH`; never printed, `description` shows `***`. `nil` skips `AUTH`.
    public var password: String?
    /// The logical database selected after connecting (`SELECT` is only sent when it is not 0).
    public var database: Int
    /// How long establishing the connection may take.
    public var connectTimeout: Duration
    /// How long any single read or write of a command may block, unless a call overrides it.
    public var commandTimeout: Duration

    /// A configuration with the given values; defaults to the local server on port 6379.
    public init(
        endpoint: Endpoint = .tcp(host: "127.0.0.1", port: 6379),
        username: String? = nil,
        password: String? = nil,
        database: Int = 0,
        connectTimeout: Duration = .seconds(5),
        commandTimeout: Duration = .seconds(10)
    ) {
        self.endpoint = endpoint
        self.username = username
        self.password = password
        self.database = database
        self.connectTimeout = connectTimeout
        self.commandTimeout = commandTimeout
    }

    /// Parses `redis://[user:password@]host:port[/db]` or `unix://[user:password@]/path/to/socket[?db=N]`.
    ///
    /// User and password are percent-decoded; the host defaults to 127.0.0.1 and the port to 6379. Timeouts take
    /// their defaults. Throws ``RedisError`` with code ``RedisError/Code/invalidURL``; its message names what is
    /// wrong but never quotes any part of the URL, so a password cannot leak through it. A `rediss://` URL throws
    /// ``RedisError/Code/invalidConfiguration``: this client has no TLS.
    public init(url: String) throws {
        self = try URLParser.parse(url)
    }
}

extension RedisConfiguration: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// A summary with the password shown as `***`.
    public var description: String {
        "RedisConfiguration(endpoint: \(endpoint), username: \(username ?? "nil"), "
            + "password: \(password == nil ? "nil" : "***"), database: \(database), "
            + "connectTimeout: \(connectTimeout), commandTimeout: \(commandTimeout))"
    }

    /// Same as ``description``: the password is shown as `***`.
    public var debugDescription: String {
        description
    }

    /// A mirror with the password redacted, so `dump` and debuggers do not reveal it either.
    public var customMirror: Mirror {
        Mirror(
            self,
            children: [
                "endpoint": endpoint,
                "username": username as Any,
                "password": (password == nil ? nil : "***") as Any,
                "database": database,
                "connectTimeout": connectTimeout,
                "commandTimeout": commandTimeout,
            ],
            displayStyle: .struct
        )
    }
}

extension RedisError {
    /// A `rediss://` URL: this client, over hiredis 0.14, has no TLS.
    static let tlsNotSupported = RedisError(
        code: .invalidConfiguration,
        message: "TLS (rediss://) is not supported by this build: its hiredis (0.14) has no TLS; connect through "
            + "a local TLS tunnel such as stunnel and use redis://127.0.0.1:<tunnel port> (see docs/tls.md)"
    )
}

/// Parses Redis URLs by hand (no Foundation); every error message is generic about the offending text.
private enum URLParser {
    static func parse(_ url: String) throws(RedisError) -> RedisConfiguration {
        guard let schemeEnd = url.firstRange(of: "://") else {
            throw invalid("expected redis://host:port[/db] or unix:///path")
        }
        let scheme = url[..<schemeEnd.lowerBound].lowercased()
        let rest = url[schemeEnd.upperBound...]
        if rest.contains("#") {
            throw invalid("fragments are not allowed (percent-encode '#' in a password as %23)")
        }
        switch scheme {
        case "redis":
            return try parseTCP(rest)
        case "unix":
            return try parseUnix(rest)
        case "rediss":
            throw RedisError.tlsNotSupported
        default:
            throw invalid("unsupported scheme; expected redis:// or unix://")
        }
    }

    private static func parseTCP(_ rest: Substring) throws(RedisError) -> RedisConfiguration {
        let (beforeQuery, query) = splitOnce(rest, at: "?")
        let (authority, path) = splitAtFirstSlash(beforeQuery)
        let (userinfo, hostPort) = splitUserinfo(authority)
        var configuration = RedisConfiguration()
        (configuration.username, configuration.password) = try parseUserinfo(userinfo)

        let host: String
        var portText: Substring?
        if hostPort.hasPrefix("[") {
            guard let close = hostPort.firstIndex(of: "]") else { throw invalid("unterminated IPv6 address") }
            host = String(hostPort[hostPort.index(after: hostPort.startIndex)..<close])
            let after = hostPort[hostPort.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw invalid("unexpected text after IPv6 address") }
                portText = after.dropFirst()
            }
            guard !host.isEmpty else { throw invalid("empty IPv6 address") }
        } else {
            let parts = hostPort.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            host = parts[0].isEmpty ? "127.0.0.1" : String(parts[0])
            if parts.count == 2 {
                portText = parts[1]
            }
        }
        guard host.allSatisfy({ $0.isASCII && !$0.isWhitespace && !"@/?#[]%".contains($0) }) else {
            throw invalid("host contains characters that are not allowed")
        }
        var port = 6379
        if let portText {
            guard let parsed = parseDecimal(portText), (1...65535).contains(parsed) else {
                throw invalid("port must be a number from 1 to 65535")
            }
            port = parsed
        }
        configuration.endpoint = .tcp(host: host, port: port)

        var database: Int?
        if let path, path != "/" {
            guard let parsed = parseDecimal(path.dropFirst()) else {
                throw invalid("path must be /N with N a database number")
            }
            database = parsed
        }
        if let queryDatabase = try parseQuery(query) {
            guard database == nil || database == queryDatabase else {
                throw invalid("database given twice with different values")
            }
            database = queryDatabase
        }
        configuration.database = database ?? 0
        return configuration
    }

    private static func parseUnix(_ rest: Substring) throws(RedisError) -> RedisConfiguration {
        let (beforeQuery, query) = splitOnce(rest, at: "?")
        let (authority, rawPath) = splitAtFirstSlash(beforeQuery)
        let (userinfo, host) = splitUserinfo(authority)
        guard host.isEmpty else { throw invalid("unix:// URLs take no host; use unix:///path/to/socket") }
        guard let rawPath, rawPath.count > 1 else { throw invalid("missing socket path") }
        guard let path = percentDecode(rawPath) else { throw invalid("socket path has an invalid percent escape") }
        var configuration = RedisConfiguration(endpoint: .unix(path: path))
        (configuration.username, configuration.password) = try parseUserinfo(userinfo)
        configuration.database = try parseQuery(query) ?? 0
        return configuration
    }

    /// Returns the database from `db=N`, the only query parameter understood.
    private static func parseQuery(_ query: Substring?) throws(RedisError) -> Int? {
        guard let query, !query.isEmpty else { return nil }
        var database: Int?
        for pair in query.split(separator: "&") {
            let (key, value) = splitOnce(pair, at: "=")
            guard key == "db" else { throw invalid("unknown query parameter; only db=N is supported") }
            guard let value, let parsed = parseDecimal(value) else { throw invalid("db must be a non-negative number") }
            database = parsed
        }
        return database
    }

    private static func parseUserinfo(_ userinfo: Substring?) throws(RedisError) -> (String?, String?) {
        guard let userinfo else { return (nil, nil) }
        let (rawUser, rawPassword) = splitOnce(userinfo, at: ":")
        guard let user = percentDecode(rawUser), let password = percentDecode(rawPassword ?? "") else {
            throw invalid("user or password has an invalid percent escape or is not UTF-8")
        }
        return (user.isEmpty ? nil : user, password.isEmpty ? nil : password)
    }

    /// Splits `user:password@host` at the last `@` (an unencoded `@` in a password then still parses).
    private static func splitUserinfo(_ authority: Substring) -> (Substring?, Substring) {
        guard let at = authority.lastIndex(of: "@") else { return (nil, authority) }
        return (authority[..<at], authority[authority.index(after: at)...])
    }

    /// Splits into the part before the first `/` and the rest starting with `/` (or `nil` when there is none).
    private static func splitAtFirstSlash(_ text: Substring) -> (Substring, Substring?) {
        guard let slash = text.firstIndex(of: "/") else { return (text, nil) }
        return (text[..<slash], text[slash...])
    }

    private static func splitOnce(_ text: Substring, at separator: Character) -> (Substring, Substring?) {
        guard let index = text.firstIndex(of: separator) else { return (text, nil) }
        return (text[..<index], text[text.index(after: index)...])
    }

    private static func parseDecimal(_ text: Substring) -> Int? {
        guard !text.isEmpty, text.count <= 18, text.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
        return Int(text)
    }

    /// Decodes `%XX` escapes; `nil` for a malformed escape or a result that is not UTF-8.
    static func percentDecode(_ text: Substring) -> String? {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count)
        var iterator = text.utf8.makeIterator()
        while let byte = iterator.next() {
            guard byte == UInt8(ascii: "%") else {
                bytes.append(byte)
                continue
            }
            guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else {
                return nil
            }
            bytes.append(high << 4 | low)
        }
        return String(validating: bytes, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    private static func invalid(_ reason: String) -> RedisError {
        RedisError(code: .invalidURL, message: "invalid Redis URL: \(reason)")
    }
}
