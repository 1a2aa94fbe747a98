// swift-tools-version:6.0
// The OpenAPI generator, kept out of the main package: scripts/generate-api runs it to write
// Sources/HistoryAPI/Generated from Sources/HistoryAPI/openapi.yaml. Building the generator
// (OpenAPIKit, Yams, the generator core) on every build of Historian would cost minutes for
// code that only changes when the document does.
import PackageDescription

let package = Package(
    name: "openapi-generator",
    dependencies: [
        .package(url: "https://github.com/apple/swift-openapi-generator", from: "1.14.3")
    ]
)
