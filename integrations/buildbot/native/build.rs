//! Puts the component into the Python package, so that a wheel (`pip install`) carries
//! `buildbot_status_push/status-push.wasm`. `scripts/setup.sh` (`cargo xtask wasm`) builds
//! it first; without it the package falls back to `$STATUS_PUSH_WASM` at run time.

use std::path::Path;

fn main() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let built = here.join("../../../target/status-push.wasm");
    let bundled = here.join("../buildbot_status_push/status-push.wasm");
    println!("cargo::rerun-if-changed={}", built.display());
    match std::fs::read(&built) {
        Ok(wasm) => {
            if std::fs::read(&bundled).ok().as_deref() != Some(wasm.as_slice()) {
                if let Err(e) = std::fs::write(&bundled, wasm) {
                    println!("cargo::warning=cannot copy {}: {e}", built.display());
                }
            }
        }
        Err(_) => println!(
            "cargo::warning={} is missing: run scripts/setup.sh first to ship it in the package",
            built.display()
        ),
    }
}
