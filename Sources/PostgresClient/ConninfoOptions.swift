internal import CLibpq

/// libpq's own reading of a connection string (a `postgresql://` URI or `keyword=value` pairs).
package enum ConninfoOptions {
    /// The options `conninfo` sets, by keyword, as libpq reads them.
    /// - Returns: `.failure` with libpq's message (which may quote the string) when libpq cannot
    ///   read it.
    package static func parse(_ conninfo: String) -> Result<[String: String], ConninfoSyntaxError> {
        var errorMessage: UnsafeMutablePointer<CChar>?
        guard let options = PQconninfoParse(conninfo, &errorMessage) else {
            var message = "invalid connection string"
            if let errorMessage {
                message = String(cString: errorMessage)
                PQfreemem(errorMessage)
            }
            return .failure(ConninfoSyntaxError(message: message))
        }
        defer { PQconninfoFree(options) }
        var found: [String: String] = [:]
        var option = options
        while let keyword = option.pointee.keyword {
            if let value = option.pointee.val {
                found[String(cString: keyword)] = String(cString: value)
            }
            option += 1
        }
        return .success(found)
    }
}

/// A connection string libpq cannot read, with its message.
package struct ConninfoSyntaxError: Error, Sendable {
    /// libpq's message; it may quote pieces of the string, which may be a password.
    package var message: String
}
