//! Files the host opens on someone else's word (a component path, a CA file, a log's
//! `content_file`, the CLI's `--config` and `--build`): only a regular file, checked
//! before it is opened (opening a FIFO blocks; `/dev/zero` never ends), and never more
//! than a size cap. The one place that rule is written.

/// The largest `caFile` read; a bundle of every public CA is about 250 KiB. A client
/// certificate or key file (`clientCertFile`, `clientKeyFile`) has the same cap. Here,
/// beside the rule it caps, so the policy that checks the files and the client that
/// reads them share it without importing each other.
pub(crate) const MAX_CA_FILE_BYTES: u64 = 1 << 20;

use std::io::Read;
use std::path::Path;

/// Why a file was not used. Each message reads after the file's name.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// It could not be opened (or its metadata read).
    #[error("cannot open: {0}")]
    Open(std::io::Error),
    /// A FIFO, socket, device or directory.
    #[error("is {0}, not a regular file; only a regular file is accepted")]
    NotRegular(&'static str),
    /// Larger than the cap.
    #[error("larger than the limit of {} (the file is read whole)", human(*.limit))]
    TooLarge {
        /// The cap, in bytes.
        limit: u64,
    },
    /// Reading failed part way.
    #[error("cannot read: {0}")]
    Read(std::io::Error),
    /// Text was expected.
    #[error("not UTF-8 text (invalid byte at offset {0})")]
    NotUtf8(usize),
}

/// Refuses `path` unless it is a regular file of at most `limit` bytes (if given).
pub fn check_regular(path: &Path, limit: Option<u64>) -> Result<std::fs::Metadata, FileError> {
    let meta = std::fs::metadata(path).map_err(FileError::Open)?;
    if !meta.is_file() {
        return Err(FileError::NotRegular(kind(&meta)));
    }
    match limit {
        Some(limit) if meta.len() > limit => Err(FileError::TooLarge { limit }),
        _ => Ok(meta),
    }
}

/// Like [`check_regular`], but a path that does not exist yet passes (it will be
/// created: an outbox file).
pub fn check_regular_if_exists(path: &Path) -> Result<(), FileError> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        _ => check_regular(path, None).map(drop),
    }
}

/// The bytes of a regular file of at most `limit` bytes. The cap holds while reading
/// too: a file that grows past it is refused, not read on.
pub fn read_capped(path: &Path, limit: u64) -> Result<Vec<u8>, FileError> {
    let meta = check_regular(path, Some(limit))?;
    let file = std::fs::File::open(path).map_err(FileError::Open)?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(FileError::Read)?;
    if bytes.len() as u64 > limit {
        return Err(FileError::TooLarge { limit });
    }
    Ok(bytes)
}

/// The UTF-8 text of a regular file of at most `limit` bytes.
pub fn read_text(path: &Path, limit: u64) -> Result<String, FileError> {
    String::from_utf8(read_capped(path, limit)?)
        .map_err(|e| FileError::NotUtf8(e.utf8_error().valid_up_to()))
}

/// What a file that is not a regular file is, for the error that refuses it.
fn kind(meta: &std::fs::Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
    }
    if meta.is_dir() {
        "a directory"
    } else {
        "a special file"
    }
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_under_the_cap_are_read() {
        let dir = std::env::temp_dir().join(format!("status-push-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a.txt");
        std::fs::write(&file, "hello").unwrap();
        assert_eq!(read_text(&file, 5).unwrap(), "hello");
        assert!(matches!(
            read_text(&file, 4),
            Err(FileError::TooLarge { limit: 4 })
        ));
        let refused = read_text(&dir, 5).unwrap_err().to_string();
        assert!(
            refused.contains("a directory, not a regular file"),
            "{refused}"
        );
        assert!(matches!(
            read_text(Path::new("/dev/zero"), 5),
            Err(FileError::NotRegular("a device"))
        ));
        std::fs::write(&file, b"\xffx").unwrap();
        assert!(matches!(read_text(&file, 5), Err(FileError::NotUtf8(0))));
        assert!(check_regular_if_exists(&dir.join("new.sqlite")).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
