import Foundation
import Prometheus

/// The registry's metrics written to a file in the text format that `/metrics` serves: the
/// final figures of a run that ends (`run --once`), for node_exporter's textfile collector or
/// the benchmark to read afterwards.
public enum MetricsFile {
    /// Writes to a file beside `path` and renames it into place, so a reader never sees half of it.
    public static func write(_ registry: PrometheusCollectorRegistry, to path: String) throws {
        try Data(registry.emitToBuffer()).write(to: URL(fileURLWithPath: path), options: .atomic)
    }
}
