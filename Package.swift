// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "historian",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "historian", targets: ["HistorianCLI"]),
        .executable(name: "historian-benchmark", targets: ["HistorianBenchmark"]),
        .library(name: "Historian", targets: ["Historian"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(
            url: "https://github.com/apple/swift-configuration",
            from: "1.4.0",
            traits: [.defaults, "YAML"]
        ),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-openapi-runtime", from: "1.13.4"),
        .package(url: "https://github.com/hummingbird-project/swift-openapi-hummingbird", from: "2.1.0"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
    ],
    targets: [
        // C libraries, through Debian's -dev packages.
        // No pkgConfig here: hiredis.pc adds -D_FILE_OFFSET_BITS=64, which SwiftPM refuses with a
        // warning on every build; the header is found as <hiredis/hiredis.h> all the same.
        .systemLibrary(name: "CMalloc"),
        .systemLibrary(
            name: "CHiredis",
            providers: [.apt(["libhiredis-dev"])]
        ),
        .systemLibrary(
            name: "CLibpq",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]
        ),
        .systemLibrary(
            name: "CZlib",
            pkgConfig: "zlib",
            providers: [.apt(["zlib1g-dev"])]
        ),
        .systemLibrary(
            name: "CSQLite",
            pkgConfig: "sqlite3",
            providers: [.apt(["libsqlite3-dev"])]
        ),

        // gzip streams over zlib, for the archive files.
        .target(name: "Gzip", dependencies: ["CZlib"]),

        // SQLite files, read for `historian import sqlite` (and written by tests, for fixtures).
        .target(name: "SQLiteReader", dependencies: ["CSQLite"]),

        // A task executor with a thread of its own, on which the clients' blocking calls run in place.
        .target(name: "BlockingThread"),

        // Thin Swift clients; their blocking calls run on threads of their own.
        .target(
            name: "RedisClient",
            dependencies: [
                "CHiredis",
                "BlockingThread",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "PostgresClient",
            dependencies: [
                "CLibpq",
                "BlockingThread",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),

        // The daemon: configuration, validation, the ingest pipeline, schema, archive, commands.
        .target(
            name: "Historian",
            dependencies: [
                "BlockingThread",
                "RedisClient",
                "PostgresClient",
                "Gzip",
                "SQLiteReader",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),

        // The operations endpoint: /metrics (a Prometheus registry behind swift-metrics), /healthz
        // and /readyz, served over HTTP.
        .target(
            name: "OperationsEndpoint",
            dependencies: [
                "Historian",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),

        // The history API (contract §7): served from openapi.yaml, whose server code
        // scripts/generate-api writes into Generated/ with swift-openapi-generator (pinned in
        // Tools/openapi-generator, outside this package so builds do not compile it); the
        // document itself is embedded to be served as it is.
        .target(
            name: "HistoryAPI",
            dependencies: [
                "Historian",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "OpenAPIHummingbird", package: "swift-openapi-hummingbird"),
                .product(name: "OpenAPIRuntime", package: "swift-openapi-runtime"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            exclude: ["openapi-generator-config.yaml"],
            resources: [.embedInCode("openapi.yaml")]
        ),

        // systemd's notify protocol, spoken directly over $NOTIFY_SOCKET: readiness, status,
        // watchdog pings, stopping.
        .target(
            name: "SystemdNotify",
            dependencies: [
                "Historian",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .executableTarget(
            name: "HistorianCLI",
            dependencies: [
                "Historian",
                "OperationsEndpoint",
                "HistoryAPI",
                "SystemdNotify",
                .target(name: "CMalloc", condition: .when(platforms: [.linux])),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),

        // Measures drain, latency and memory against a COPY ceiling (see README, "Benchmark").
        .executableTarget(
            name: "HistorianBenchmark",
            dependencies: [
                "Historian", "LocalServers", "RedisClient", "PostgresClient",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),

        // Starts throwaway redis-server and PostgreSQL instances for tests and benchmarks.
        .target(name: "LocalServers"),

        // Fuzz targets over what reads outside input (docs/fuzzing.md): the tests replay their
        // corpus; scripts/fuzz builds the executable with libFuzzer (`-D FUZZING`), which is
        // otherwise a replayer of inputs.
        .target(
            name: "HistorianFuzzing",
            dependencies: [
                "Historian", "RedisClient", "PostgresClient", "Gzip",
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .executableTarget(name: "HistorianFuzz", dependencies: ["HistorianFuzzing"]),

        .testTarget(name: "BlockingThreadTests", dependencies: ["BlockingThread"]),
        .testTarget(name: "RedisClientTests", dependencies: ["RedisClient", "LocalServers", "BlockingThread"]),
        .testTarget(name: "PostgresClientTests", dependencies: ["PostgresClient", "LocalServers", "BlockingThread"]),
        .testTarget(
            name: "HistorianTests",
            dependencies: [
                "Historian", "Gzip", "RedisClient", "PostgresClient", "SQLiteReader", "HistorianFuzzing",
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
            ]
        ),
        .testTarget(name: "SQLiteReaderTests", dependencies: ["SQLiteReader"]),
        .testTarget(name: "HistorianFuzzingTests", dependencies: ["HistorianFuzzing"]),
        .testTarget(name: "SystemdNotifyTests", dependencies: ["SystemdNotify", "Historian"]),
        .testTarget(name: "HistorianBenchmarkTests", dependencies: ["HistorianBenchmark"]),
        .testTarget(
            name: "OperationsEndpointTests",
            dependencies: [
                "OperationsEndpoint", "Historian",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        .testTarget(
            name: "HistoryAPITests",
            dependencies: [
                "HistoryAPI", "Historian", "LocalServers", "RedisClient", "PostgresClient",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
            ]
        ),
        .testTarget(
            name: "HistorianIntegrationTests",
            dependencies: [
                "Historian", "HistorianCLI", "LocalServers", "RedisClient", "PostgresClient", "SQLiteReader",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ]
        ),
    ]
)
