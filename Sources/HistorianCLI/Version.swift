/// Historian's version: what `historian --version` prints, and what `scripts/package` names the
/// Debian package after.
let historianVersion = "0.6.0"
