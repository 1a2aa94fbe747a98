import RedisClient
import Testing

@Suite("RedisError")
struct RedisErrorTests {
    @Test(
        "server errors are transient exactly for the retryable prefixes",
        arguments: [
            ("LOADING Redis is loading the dataset in memory", true),
            ("BUSY Redis is busy running a script.", true),
            ("TRYAGAIN Multiple keys request during rehashing of slot", true),
            ("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.", true),
            ("CLUSTERDOWN The cluster is down", true),
            ("READONLY You can't write against a read only replica.", true),
            ("NOREPLICAS Not enough good replicas to write.", true),
            ("OOM command not allowed when used memory > 'maxmemory'.", true),
            ("NOGROUP No such key 'events' or consumer group 'historian' in XREADGROUP with GROUP option", false),
            ("BUSYGROUP Consumer Group name already exists", false),
            ("BUSYKEY Target key name already exists.", false),
            ("ERR unknown command 'FOO'", false),
            ("WRONGTYPE Operation against a key holding the wrong kind of value", false),
            ("NOAUTH Authentication required.", false),
            ("LOADINGX not a real prefix", false),
            ("", false),
        ]
    )
    func serverTransience(message: String, transient: Bool) {
        let error = RedisError(serverReply: message)
        #expect(error.code == .server)
        #expect(error.isTransient == transient)
    }

    @Test(
        "non-server codes are transient exactly for connection-level failures",
        arguments: [
            (RedisError.Code.connectionFailed, true),
            (.connectionClosed, true),
            (.timeout, true),
            (.io, true),
            (.protocolError, false),
            (.invalidURL, false),
            (.authenticationFailed, false),
        ]
    )
    func codeTransience(code: RedisError.Code, transient: Bool) {
        // The message looks like a transient server error, to prove only the code decides here.
        let error = RedisError(code: code, message: "LOADING whatever")
        #expect(error.isTransient == transient)
        #expect(error.serverErrorPrefix == nil)
    }

    @Test("serverErrorPrefix is the first word of the reply")
    func prefix() {
        #expect(RedisError(serverReply: "NOGROUP No such key").serverErrorPrefix == "NOGROUP")
        #expect(
            RedisError(serverReply: "BUSYGROUP Consumer Group name already exists").serverErrorPrefix == "BUSYGROUP"
        )
        #expect(RedisError(serverReply: "ERR").serverErrorPrefix == "ERR")
        #expect(RedisError(serverReply: "").serverErrorPrefix == nil)
    }

    @Test("echoed command arguments are cut from server errors")
    func redactsEchoedArguments() {
        let error = RedisError(
            serverReply: "ERR unknown command 'XADDD', with args beginning with: 'events' '*' 'body' 'secret text' "
        )
        #expect(error.message.hasPrefix("ERR unknown command 'XADDD'"))
        #expect(!error.message.contains("secret"))
        #expect(!error.description.contains("secret"))
        #expect(error.serverErrorPrefix == "ERR")
    }

    @Test("codes have stable names")
    func codeNames() {
        #expect(RedisError.Code.timeout.description == "timeout")
        #expect(RedisError.Code.server.description == "server")
        #expect(RedisError(code: .io, message: "x").description.contains("io"))
        #expect(RedisError.Code.timeout != RedisError.Code.io)
    }
}
