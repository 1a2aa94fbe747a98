/// openapi.yaml, the document the server's code is generated from, embedded in the binary when
/// it is built (SwiftPM's `embedInCode`): served at `GET /v1/openapi.yaml` as it is, byte for
/// byte, with no resource bundle to install beside the binary.
enum OpenAPIDocument {
    static var bytes: [UInt8] { PackageResources.openapi_yaml }
}
