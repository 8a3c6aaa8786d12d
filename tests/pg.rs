//! A throwaway PostgreSQL cluster for the fleet tests: Debian's server binaries, a data
//! directory and a unix socket of the test's own (no TCP port: nothing outside the test can
//! reach it, and tests in parallel never collide), trust authentication, stopped and
//! removed on drop. Shared by both test crates and a benchmark (`#[path]`), so it depends
//! on std only; each uses part of it.
#![allow(dead_code)]

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct Postgres {
    dir: PathBuf,
    running: bool,
    bin: PathBuf,
    /// Root runs the server as the `postgres` user (initdb refuses root).
    as_postgres: bool,
    settings: Vec<String>,
    /// The server's port: its unix socket's name, and its TCP port when it listens on one.
    port: u16,
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
        let mut pg = Self::init(settings);
        pg.launch();
        pg
    }

    /// [`start`](Self::start) that also listens on 127.0.0.1:`port` with TLS only
    /// (`hostnossl` connections are rejected), serving `cert` and `key` (copied into the
    /// cluster and owned by its user, as PostgreSQL requires of a key).
    pub fn start_tls(port: u16, cert: &std::path::Path, key: &std::path::Path) -> Postgres {
        let mut pg = Self::init(&["fsync=off"]);
        pg.port = port;
        let data = pg.dir.join("data");
        for (from, name) in [(cert, "server.crt"), (key, "server.key")] {
            std::fs::copy(from, data.join(name)).expect("copying the server's TLS files");
            run(Command::new("chmod").arg("0600").arg(data.join(name)));
            if pg.as_postgres {
                run(Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(data.join(name)));
            }
        }
        // TLS over TCP only: a plain TCP connection is refused.
        let hba = data.join("pg_hba.conf");
        let mut text = std::fs::read_to_string(&hba).expect("pg_hba.conf");
        text = format!(
            "hostnossl all all 127.0.0.1/32 reject\nhostssl all all 127.0.0.1/32 trust\n{text}"
        );
        std::fs::write(&hba, text).expect("pg_hba.conf");
        pg.settings.extend([
            "listen_addresses=127.0.0.1".to_owned(),
            format!("port={port}"),
            "ssl=on".to_owned(),
        ]);
        pg.launch();
        pg
    }

    /// A new cluster, not yet started.
    fn init(settings: &[&str]) -> Postgres {
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
        let pg = Postgres {
            dir,
            running: false,
            bin,
            as_postgres,
            settings: settings.iter().map(|s| s.to_string()).collect(),
            port: 5432,
        };
        let data = pg.dir.join("data");
        run(pg
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "decnet", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .stdout(Stdio::null()));
        pg
    }

    /// Starts the server on the cluster (pg_ctl: it runs detached from the test, and is
    /// stopped by pg_ctl whatever user it runs as) and waits until it accepts connections.
    fn launch(&mut self) {
        let mut opts = format!(
            "-k {} -c listen_addresses= -c max_connections=200",
            self.dir.display()
        );
        for s in &self.settings {
            opts.push_str(&format!(" -c {s}"));
        }
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .args(["-o", &opts, "-w", "-t", "30", "start"])
            .stdout(Stdio::null())
            .output()
            .expect("pg_ctl start");
        assert!(
            out.status.success(),
            "postgres did not start: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
        );
        self.running = true;
    }

    /// Stops the server (fast shutdown: clients are disconnected), keeping the cluster.
    pub fn stop(&mut self) {
        if std::mem::take(&mut self.running) {
            let _ = self
                .command("pg_ctl")
                .arg("-D")
                .arg(self.dir.join("data"))
                .args(["-m", "fast", "-w", "-t", "30", "stop"])
                .stdout(Stdio::null())
                .status();
        }
    }

    /// Starts the stopped server again.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
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
            .args(["-p", &self.port.to_string()])
            .args(["-U", "decnet", name]));
        self.url(name)
    }

    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://decnet@localhost:{}/{db}?host={}",
            self.port,
            self.dir.display()
        )
    }

    /// Runs SQL through psql and returns its unaligned, tuples-only output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = self
            .command("psql")
            .arg("-h")
            .arg(&self.dir)
            .args(["-p", &self.port.to_string()])
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
        self.stop();
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
}
