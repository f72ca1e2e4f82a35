//! The files the CLI reads, through the host library's one rule for files
//! (`status_push_host::files`: a regular file, checked before it is opened, and at most
//! a limit); each error is one line naming the flag and the path.

use std::path::{Path, PathBuf};

use status_push_host::files::{self, FileError};

/// The largest `--config` file read.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// The largest `--build` file read; the component's own memory (128 MiB) must hold it
/// parsed, next to the payload built from it.
pub const MAX_BUILD_BYTES: u64 = 32 << 20;

/// Why a file given as a flag was not read.
#[derive(Debug, thiserror::Error)]
#[error("{flag} {}: {error}", path.display())]
pub struct InputFileError {
    flag: &'static str,
    path: PathBuf,
    error: FileError,
}

/// Reads `path`, given as `flag`, as UTF-8 text of at most `limit` bytes.
pub fn read_text(flag: &'static str, path: &Path, limit: u64) -> Result<String, InputFileError> {
    files::read_text(path, limit).map_err(|error| InputFileError {
        flag,
        path: path.to_path_buf(),
        error,
    })
}

/// Refuses an existing `path` that is not a regular file (a missing one is fine: it will
/// be created). For `--outbox`.
pub fn check_regular_if_exists(flag: &'static str, path: &Path) -> Result<(), InputFileError> {
    files::check_regular_if_exists(path).map_err(|error| InputFileError {
        flag,
        path: path.to_path_buf(),
        error,
    })
}
