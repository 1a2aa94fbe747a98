import Foundation

extension HistorianConfiguration {
    /// A URL with any password replaced by `***`: in the user information, and the values of
    /// `password` and `sslpassword` (which unlocks a client key) in a URI's query or a conninfo.
    ///
    /// `historian check` prints the servers' URLs so, and the services' descriptions hold them
    /// so: what would read the original as a password must find `***` in its place.
    public static func redactURL(_ url: String) -> String {
        if let schemeEnd = url.range(of: "://"), let first = url.first, first.isASCII, first.isLetter,
            url[..<schemeEnd.lowerBound].allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "+-.".contains($0)) })
        {
            return redactURI(url, authority: schemeEnd.upperBound)
        }
        return redactConninfo(url)
    }

    /// `keyword=value …` as libpq reads it: blanks allowed around `=`, a value either up to the
    /// next blank or in single quotes, backslashes escaping the next byte in either. Every
    /// `password`'s and `sslpassword`'s value is redacted (libpq reads the last); from a pair
    /// libpq could not read on, everything is, as it might hold a password all the same.
    private static func redactConninfo(_ text: String) -> String {
        let bytes = Array(text.utf8)
        var redacted: [UInt8] = []
        var index = 0
        // C's isspace in the C locale, as libpq tests.
        func isBlank(_ byte: UInt8) -> Bool { byte == 0x20 || (0x09...0x0D).contains(byte) }
        func skipBlanks() {
            while index < bytes.count, isBlank(bytes[index]) { index += 1 }
        }
        while true {
            var start = index
            skipBlanks()
            redacted += bytes[start..<index]
            guard index < bytes.count else { break }
            start = index
            while index < bytes.count, bytes[index] != UInt8(ascii: "="), !isBlank(bytes[index]) { index += 1 }
            let keyword = bytes[start..<index]
            skipBlanks()
            guard index < bytes.count, bytes[index] == UInt8(ascii: "=") else {
                // A database name alone is no pair, and prints as it is.
                redacted += keyword + (index < bytes.count ? Array(" ***".utf8) : [])
                break
            }
            index += 1
            skipBlanks()
            redacted += bytes[start..<index]
            start = index
            let quoted = index < bytes.count && bytes[index] == UInt8(ascii: "'")
            if quoted { index += 1 }
            var closed = !quoted
            while index < bytes.count {
                let byte = bytes[index]
                if byte == UInt8(ascii: "\\") {
                    index = min(index + 2, bytes.count)
                    continue
                }
                if quoted, byte == UInt8(ascii: "'") {
                    index += 1
                    closed = true
                    break
                }
                if !quoted, isBlank(byte) { break }
                index += 1
            }
            guard closed else {
                redacted += Array("***".utf8)
                break
            }
            let isPassword = isSecret(String(decoding: keyword, as: UTF8.self))
            redacted += isPassword ? Array("***".utf8) : Array(bytes[start..<index])
        }
        return String(decoding: redacted, as: UTF8.self)
    }

    /// `scheme://user:password@host…?password=…`, the authority starting at `authority`: the
    /// password of the user information, and every `password` or `sslpassword` query parameter
    /// (libpq reads the last of them, its name percent-decoded).
    ///
    /// The user information ends at an `@` before the first `/`: libpq takes the first, Redis'
    /// parsers the last (so that a password may hold one), and redacting up to the last covers
    /// the password either reads. (Redis' parsers also end the authority at a `?`, libpq does not.)
    private static func redactURI(_ url: String, authority start: String.Index) -> String {
        let rest = url[start...]
        var redacted = String(url[..<start])
        var tail = rest
        let beforePath = rest[..<(rest.firstIndex(of: "/") ?? rest.endIndex)]
        if let at = beforePath.lastIndex(of: "@") {
            let userInformation = rest[..<at]
            if let colon = userInformation.firstIndex(of: ":") {
                redacted += rest[...colon] + "***"
            } else {
                redacted += userInformation
            }
            tail = rest[at...]
        }
        guard let question = tail.firstIndex(of: "?") else { return redacted + tail }
        redacted += tail[...question]
        let parameters = tail[tail.index(after: question)...].split(separator: "&", omittingEmptySubsequences: false)
        redacted += parameters.map { parameter in
            guard let equals = parameter.firstIndex(of: "=") else { return String(parameter) }
            let name = String(parameter[..<equals])
            // A name that does not decode is no name libpq reads, but it may be a password's.
            guard isSecret(name.removingPercentEncoding ?? "password") else {
                return String(parameter)
            }
            return String(parameter[...equals]) + "***"
        }
        .joined(separator: "&")
        return redacted
    }

    /// Whether a conninfo keyword or URI parameter holds a secret: `password`, or `sslpassword`,
    /// which unlocks an encrypted client key.
    private static func isSecret(_ keyword: String) -> Bool {
        ["password", "sslpassword"].contains(keyword.lowercased())
    }
}
