//! The files the CLI reads, read safely: only a regular file is accepted, checked before
//! it is opened (opening a FIFO blocks; `/dev/zero` never ends), and at most a limit is
//! read. Each error is one line naming the flag and the path.

use std::io::Read;
use std::path::Path;

/// The largest `--config` file read.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// The largest `--build` file read; the component's own memory (128 MiB) must hold it
/// parsed, next to the payload built from it.
pub const MAX_BUILD_BYTES: u64 = 32 << 20;

/// Why a file was not read.
#[derive(Debug)]
pub struct InputFileError(pub String);

impl std::fmt::Display for InputFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InputFileError {}

/// Reads `path`, given as `flag`, as UTF-8 text of at most `limit` bytes.
pub fn read_text(flag: &str, path: &Path, limit: u64) -> Result<String, InputFileError> {
    let fail = |why: String| InputFileError(format!("{flag} {}: {why}", path.display()));
    check_regular(path).map_err(&fail)?;
    let file = std::fs::File::open(path).map_err(|e| fail(format!("cannot open: {e}")))?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    if bytes.len() as u64 > limit {
        return Err(fail(format!(
            "larger than the limit of {} (the file is read whole)",
            human(limit)
        )));
    }
    String::from_utf8(bytes).map_err(|e| {
        fail(format!(
            "not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ))
    })
}

/// Refuses an existing `path` that is not a regular file (a missing one is fine: it will
/// be created). For `--outbox`.
pub fn check_regular_if_exists(flag: &str, path: &Path) -> Result<(), InputFileError> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        _ => check_regular(path)
            .map_err(|why| InputFileError(format!("{flag} {}: {why}", path.display()))),
    }
}

fn check_regular(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot open: {e}"))?;
    if meta.is_file() {
        return Ok(());
    }
    Err(format!(
        "is {}; only a regular file is accepted",
        status_push_host::file_kind(&meta)
    ))
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}
