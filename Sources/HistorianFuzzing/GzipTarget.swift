import Gzip

/// Bytes read as a gzip file by the decompressor the archive reader uses: whole, and piece by
/// piece, which must come to the same; what reads to the end is compressed again and must read
/// back the same.
enum GzipTarget {
    static func run(_ input: [UInt8], _ findings: inout FuzzFindings) {
        let whole = decompress([input[...]])
        let pieces = decompress(InputPieces.split(input))
        findings.expect(
            whole.failed == pieces.failed && whole.complete == pieces.complete,
            "read whole: failed \(whole.failed), complete \(whole.complete); "
                + "piece by piece: failed \(pieces.failed), complete \(pieces.complete)"
        )
        // On failure, what came out of the last call before it is not handed out: it varies with
        // where the pieces end.
        guard !whole.failed, !pieces.failed else { return }
        findings.expect(whole.output == pieces.output, "the output read whole differs from that read piece by piece")
        guard whole.complete else { return }
        do {
            let compressor = try GzipCompressor()
            var again: [UInt8] = []
            try compressor.compress(whole.output, into: &again)
            try compressor.finish(into: &again)
            let back = decompress(InputPieces.split(again))
            findings.expect(back.complete && back.output == whole.output, "the output did not survive gzip again")
        } catch {
            findings.expect(false, "the output could not be compressed: \(error)")
        }
    }

    private static func decompress(_ pieces: [ArraySlice<UInt8>]) -> (output: [UInt8], failed: Bool, complete: Bool) {
        var output: [UInt8] = []
        do {
            let decompressor = try GzipDecompressor()
            for piece in pieces {
                try decompressor.decompress(piece) { output.append(contentsOf: $0) }
            }
            do {
                try decompressor.finish()
                return (output, false, true)
            } catch {
                return (output, false, false)
            }
        } catch {
            return (output, true, false)
        }
    }
}
