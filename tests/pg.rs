//! A throwaway PostgreSQL cluster for the fleet tests: Debian's server binaries, a data
//! directory and a unix socket of the test's own (no TCP port: nothing outside the test can
//! reach it, and tests in parallel never collide), trust authentication, stopped and
//! removed on drop. Shared by both test crates and a benchmark (`#[path]`), so it depends
//! on std only; each uses part of it.
#![allow(dead_code)]

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct Postgres {
    dir: PathBuf,
    server: Option<Child>,
    bin: PathBuf,
    /// Root runs the server as the `postgres` user (initdb refuses root).
    as_postgres: bool,
}

/// The newest `/usr/lib/postgresql/<version>/bin`.
fn server_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b)
}

impl Postgres {
    /// Starts a cluster for tests (panics with the install hint when PostgreSQL is missing:
    /// CI installs it, `cargo xtask test` does as root). Tests kill decnet, not the
    /// database: its durability is not under test, so it runs with fsync off.
    pub fn start() -> Postgres {
        Self::start_with(&["fsync=off"])
    }

    /// Starts a cluster with these `-c` settings on top of PostgreSQL's defaults (a
    /// benchmark passes none: durable commits, as deployed).
    pub fn start_with(settings: &[&str]) -> Postgres {
        let bin = server_bin().expect(
            "PostgreSQL server binaries missing under /usr/lib/postgresql: \
             `apt-get install postgresql` (cargo xtask test does it as root)",
        );
        // SAFETY: geteuid has no preconditions.
        let as_postgres = unsafe { geteuid() } == 0;
        let dir = std::env::temp_dir().join(format!(
            "dnpg-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("pg dir");
        // The daemon under test drops to `nobody`: it must reach the socket directory.
        run(Command::new("chmod").arg("0755").arg(&dir));
        if as_postgres {
            run(Command::new("chown").arg("postgres:postgres").arg(&dir));
        }
        let mut pg = Postgres {
            dir,
            server: None,
            bin,
            as_postgres,
        };
        let data = pg.dir.join("data");
        run(pg
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "decnet", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .stdout(Stdio::null()));
        let log = std::fs::File::create(pg.dir.join("server.log")).expect("pg log");
        if pg.as_postgres {
            run(Command::new("chown")
                .arg("postgres:postgres")
                .arg(pg.dir.join("server.log")));
        }
        let server = pg
            .command("postgres")
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(&pg.dir)
            .args(["-c", "listen_addresses=", "-c", "max_connections=200"])
            .args(settings.iter().flat_map(|s| ["-c", s]))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting postgres");
        pg.server = Some(server);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = pg
                .command("pg_isready")
                .arg("-h")
                .arg(&pg.dir)
                .args(["-U", "decnet", "-d", "postgres"])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not start in 30 s:\n{}",
                std::fs::read_to_string(pg.dir.join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        pg
    }

    fn command(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    /// Creates database `name` and returns its URL (over the unix socket).
    pub fn create_db(&self, name: &str) -> String {
        run(self
            .command("createdb")
            .arg("-h")
            .arg(&self.dir)
            .args(["-U", "decnet", name]));
        self.url(name)
    }

    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://decnet@localhost/{db}?host={}",
            self.dir.display()
        )
    }

    /// Runs SQL through psql and returns its unaligned, tuples-only output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = self
            .command("psql")
            .arg("-h")
            .arg(&self.dir)
            .args(["-U", "decnet", "-d", db, "-At", "-c", sql])
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut s) = self.server.take() {
            // SIGINT: fast shutdown (disconnects clients, no waiting for them).
            // SAFETY: kill(2) on our own child.
            unsafe { kill(s.id() as i32, 2) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while s.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = s.kill();
            let _ = s.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

unsafe extern "C" {
    fn geteuid() -> u32;
    fn kill(pid: i32, sig: i32) -> i32;
}
