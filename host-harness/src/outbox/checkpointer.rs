//! Checkpoints of the SQLite outbox's write-ahead log, off the commit path. SQLite's own
//! automatic checkpoint runs inside whichever commit crosses 1,000 WAL pages, flushing
//! the log and the database file while that connection holds its lock: a claim or a
//! result behind it waited milliseconds (most of the claim p99). Here a commit that
//! crosses the threshold only wakes a thread of the outbox's own, which checkpoints on a
//! connection of its own (`PASSIVE`: it never blocks a writer, and writers never wait for
//! it).

use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use rusqlite::hooks::Wal;
use rusqlite::wal::CheckpointMode;
use rusqlite::{Connection, OpenFlags};

/// WAL pages after which a commit asks for a checkpoint (SQLite's default threshold).
const WAKE_AT_PAGES: i32 = 1_000;
/// WAL pages after which the committing connection checkpoints itself. The log restarts
/// from its beginning only at a write that finds every frame copied, so under writes
/// without a pause the thread never quite catches up; the commit then waits for the
/// thread's checkpoint, copies what it has not (little) and has the log restart
/// (`RESTART`), so the log stays within about 16 MiB.
const INLINE_AT_PAGES: i32 = 4 * WAKE_AT_PAGES;

/// The longest a commit waits for the thread's checkpoint to end before checkpointing
/// itself.
const INLINE_PATIENCE: Duration = Duration::from_secs(1);

/// Installs the checkpointer for `db` (a connection to `path`): sets the connection's WAL
/// hook, which replaces SQLite's automatic checkpoint, and starts the thread. The thread
/// ends when `db` is closed.
pub(super) fn install(db: &mut Connection, path: &Path) -> rusqlite::Result<()> {
    // One wake-up waiting is enough: the checkpoint takes everything committed by then.
    let (wake, woken) = sync_channel::<()>(1);
    let path = path.to_path_buf();
    let started = std::thread::Builder::new()
        .name("status-push-checkpoint".into())
        .spawn(move || run(&path, &woken));
    let wake = started.is_ok().then_some(wake);
    db.wal_hook(Some(move |wal: &mut Wal, pages: i32| {
        on_commit(wal, pages, wake.as_ref())
    }))
}

/// After each commit: wakes the thread past [`WAKE_AT_PAGES`], checkpoints inline when
/// [`inline`] says so. One checkpoint runs at a time and another is refused at once, so
/// the commit retries while the thread's runs (for [`INLINE_PATIENCE`] at most);
/// `RESTART` then also waits, through the connection's busy handler, for readers of the
/// old log, so that the next write starts the log afresh.
fn on_commit(wal: &mut Wal, pages: i32, wake: Option<&SyncSender<()>>) -> rusqlite::Result<()> {
    if !inline(pages, wake) {
        return Ok(());
    }
    let started = Instant::now();
    while let Err(e) = wal.checkpoint_v2(CheckpointMode::RESTART) {
        // What the commit did is committed whatever comes of this: a checkpoint that
        // fails is tried again after the next commit.
        let busy = e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy);
        if !busy || started.elapsed() >= INLINE_PATIENCE {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// Whether the committing connection must checkpoint itself, having woken the thread if
/// the log is past [`WAKE_AT_PAGES`]: past [`INLINE_AT_PAGES`] (the thread is behind), or
/// past the first threshold with no thread to wake.
fn inline(pages: i32, wake: Option<&SyncSender<()>>) -> bool {
    if pages < WAKE_AT_PAGES {
        return false;
    }
    match wake.map(|w| w.try_send(())) {
        Some(Ok(()) | Err(TrySendError::Full(()))) => pages >= INLINE_AT_PAGES,
        Some(Err(TrySendError::Disconnected(()))) | None => true,
    }
}

/// The thread: a checkpoint per wake-up, until the outbox's connection is closed. It
/// opens the outbox only if it is there: started late, after its outbox was closed and
/// removed, it must not leave an empty database (readable by others, at the default
/// mode) where the outbox was.
fn run(path: &PathBuf, woken: &Receiver<()>) {
    let existing = OpenFlags::default().difference(OpenFlags::SQLITE_OPEN_CREATE);
    let Ok(db) = Connection::open_with_flags(path, existing) else {
        return;
    };
    while woken.recv().is_ok() {
        if let Err(e) = db.execute_batch("PRAGMA wal_checkpoint(PASSIVE)") {
            tracing::debug!("outbox {}: checkpoint: {e}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_wakes_the_thread_and_checkpoints_itself_only_when_it_must() {
        let (wake, woken) = sync_channel::<()>(1);
        assert!(!inline(WAKE_AT_PAGES - 1, Some(&wake)));
        assert!(woken.try_recv().is_err(), "woken below the threshold");
        assert!(!inline(WAKE_AT_PAGES, Some(&wake)));
        // A wake-up already waiting: the thread is on its way.
        assert!(!inline(WAKE_AT_PAGES + 1, Some(&wake)));
        assert!(woken.try_recv().is_ok());
        assert!(inline(INLINE_AT_PAGES, Some(&wake)), "the thread is behind");
        drop(woken);
        assert!(inline(WAKE_AT_PAGES, Some(&wake)), "the thread is gone");
        assert!(inline(WAKE_AT_PAGES, None), "no thread started");
    }

    #[test]
    fn a_thread_started_after_its_outbox_was_removed_creates_nothing() {
        let path = std::env::temp_dir().join(format!("sp-checkpoint-gone-{}", std::process::id()));
        let (wake, woken) = sync_channel::<()>(1);
        wake.try_send(()).unwrap();
        drop(wake);
        run(&path, &woken);
        assert!(!path.exists(), "{} was created", path.display());
    }

    /// Commits without a pause leave a short log: checkpointed by the thread, and by the
    /// commit past [`INLINE_AT_PAGES`] (the connection's hook replaced SQLite's own
    /// automatic checkpoint, so without these the log would hold every commit).
    #[test]
    fn a_long_run_of_commits_leaves_a_short_log() {
        let dir = std::env::temp_dir().join(format!("sp-checkpoint-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("o.sqlite");
        let mut db = Connection::open(&path).unwrap();
        db.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; CREATE TABLE t (x BLOB)",
        )
        .unwrap();
        install(&mut db, &path).unwrap();
        // A frame is a page and its header.
        let frame = 4096 + 24;
        for _ in 0..12_000 {
            db.execute("INSERT INTO t VALUES (zeroblob(3000))", [])
                .unwrap();
        }
        let wal = std::fs::metadata(dir.join("o.sqlite-wal")).unwrap().len();
        assert!(
            // Past the inline threshold by a commit's frames at most.
            wal < (INLINE_AT_PAGES + WAKE_AT_PAGES / 2) as u64 * frame,
            "the log grew to {wal} bytes"
        );
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
