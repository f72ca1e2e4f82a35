//! A throwaway PostgreSQL server for one test: `initdb` into a temporary directory, a free
//! loopback port and a private socket directory, password authentication over TCP, and
//! `pg_ctl stop` when dropped. Never a system service. The server binaries come from
//! `$STATUS_PUSH_PG_BIN`, or the newest `/usr/lib/postgresql/*/bin` (Debian's layout;
//! `scripts/test.sh` installs them where they are missing).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The superuser's password: the tests' wrong-credentials case uses another.
pub const PASSWORD: &str = "status-push-test";

/// A running server; stopped (immediately, it holds nothing of value) when dropped.
pub struct Postgres {
    bin: PathBuf,
    dir: PathBuf,
    /// Its loopback port.
    pub port: u16,
}

fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STATUS_PUSH_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| dirs.flatten().map(|d| d.path().join("bin")).collect())
        .unwrap_or_default();
    found.retain(|d| d.join("initdb").exists());
    // Highest major version last.
    found.sort_by_key(|d| {
        d.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop().expect(
        "PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin; \
         install them (scripts/test.sh does: apt-get install postgresql) or set STATUS_PUSH_PG_BIN",
    )
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// `program args…`, as the `postgres` user when this is root (initdb refuses root).
fn as_server_user(bin: &Path, program: &str) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command
            .args(["-u", "postgres", "--"])
            .arg(bin.join(program));
        command
    } else {
        Command::new(bin.join(program))
    }
}

fn run(mut command: Command, what: &str) {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Postgres {
    /// Starts a fresh server with `fsync` off: these tests kill workers, not the server.
    pub fn start(name: &str) -> Postgres {
        Postgres::start_with(name, false, None)
    }

    /// Starts a fresh server that flushes its commits, as a production one does.
    pub fn start_durable(name: &str) -> Postgres {
        Postgres::start_with(name, true, None)
    }

    /// Starts a fresh server that also accepts TLS, with this certificate and key (PEM).
    pub fn start_tls(name: &str, cert: &str, key: &str) -> Postgres {
        Postgres::start_with(name, false, Some((cert, key)))
    }

    fn start_with(name: &str, fsync: bool, tls: Option<(&str, &str)>) -> Postgres {
        let bin = bin_dir();
        let dir = std::env::temp_dir().join(format!(
            "status-push-postgres-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("socket")).unwrap();
        std::fs::write(dir.join("pwfile"), PASSWORD).unwrap();
        let mut options = String::new();
        if let Some((cert, key)) = tls {
            std::fs::write(dir.join("server.crt"), cert).unwrap();
            std::fs::write(dir.join("server.key"), key).unwrap();
            // The server refuses a key others can read.
            std::fs::set_permissions(
                dir.join("server.key"),
                std::os::unix::fs::PermissionsExt::from_mode(0o600),
            )
            .unwrap();
            options = format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                dir.join("server.crt").display(),
                dir.join("server.key").display()
            );
        }
        if is_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.args(["-R", "postgres:"]).arg(&dir);
                    c
                },
                "chown",
            );
        }
        let mut initdb = as_server_user(&bin, "initdb");
        initdb
            .arg("-D")
            .arg(dir.join("data"))
            .args([
                "-U",
                "postgres",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ])
            .arg(format!("--pwfile={}", dir.join("pwfile").display()));
        run(initdb, "initdb");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // pg_stat_statements: tests count what the server planned and ran.
        let mut start = as_server_user(&bin, "pg_ctl");
        start
            .arg("-D")
            .arg(dir.join("data"))
            .arg("-l")
            .arg(dir.join("server.log"))
            .arg("-o")
            .arg(format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync={} -c max_connections=200 \
                 -c shared_preload_libraries=pg_stat_statements \
                 -c pg_stat_statements.track_planning=on{options}",
                dir.join("socket").display(),
                if fsync { "on" } else { "off" }
            ))
            .args(["-w", "-t", "60", "start"]);
        run(start, "pg_ctl start");
        Postgres { bin, dir, port }
    }

    /// `postgresql://postgres:PASSWORD@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        self.url_of("postgres")
    }

    /// The URL of database `db` on this server.
    pub fn url_of(&self, db: &str) -> String {
        format!(
            "postgresql://postgres:{PASSWORD}@127.0.0.1:{}/{db}",
            self.port
        )
    }

    /// `psql` running `sql` over the private socket, unaligned.
    fn psql(&self, sql: &str) -> Command {
        let mut psql = Command::new(self.bin.join("psql"));
        psql.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-U", "postgres"])
            .arg("-h")
            .arg(self.dir.join("socket"))
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-d", "postgres", "-c", sql])
            .stdin(Stdio::null());
        psql
    }

    /// Runs SQL through `psql` and returns its unaligned output.
    pub fn sql(&self, sql: &str) -> String {
        let output = self.psql(sql).output().expect("psql runs");
        assert!(
            output.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }
}

/// A transaction holding the row locks a statement took, until dropped.
pub struct Held<'a> {
    pg: &'a Postgres,
    psql: std::process::Child,
}

impl Postgres {
    /// Runs `statement` (one that takes row locks) in a transaction that stays open,
    /// holding them, until the returned [`Held`] is dropped.
    pub fn hold(&self, statement: &str) -> Held<'_> {
        let psql = self
            .psql(&format!("BEGIN; {statement}; SELECT pg_sleep(600);"))
            .env("PGAPPNAME", HOLDER)
            .stdout(Stdio::null())
            // Its end, by `Held`'s drop, is no error to show.
            .stderr(Stdio::null())
            .spawn()
            .expect("psql runs");
        // Its first row lock gives the transaction an id, which it then holds as a lock.
        let locked = format!(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
             WHERE a.application_name = '{HOLDER}' AND l.locktype = 'transactionid'"
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while self.sql(&locked) == "0" {
            assert!(std::time::Instant::now() < deadline, "{statement}: no lock");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Held { pg: self, psql }
    }
}

const HOLDER: &str = "status-push-test-holder";

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.pg.sql(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name = '{HOLDER}'"
        ));
        let _ = self.psql.wait();
    }
}

impl Postgres {
    /// `pg_dump` of the whole database `postgres` (schema and data), as bytes.
    pub fn dump(&self) -> Vec<u8> {
        let output = Command::new(self.bin.join("pg_dump"))
            .args(["-U", "postgres"])
            .arg("-h")
            .arg(self.dir.join("socket"))
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-d", "postgres"])
            .stdin(Stdio::null())
            .output()
            .expect("pg_dump runs");
        assert!(
            output.status.success(),
            "pg_dump: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let mut stop = as_server_user(&self.bin, "pg_ctl");
        stop.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let _ = stop.status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
