//! The API over TLS: curl with the CA works and plain HTTP does not; the CLI speaks TLS with
//! `--ca`; an address beyond loopback is refused without TLS unless `--insecure-http`; a
//! certificate that does not load is named; SIGHUP swaps the certificate for new
//! connections while an open stream goes on.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use decnet_tests::{
    API_TOKEN, Daemon, Lab, certs::Pki, decnet_bin, free_port, require_root, require_tool,
};

/// The serial of the certificate the server at `port` presents.
fn served_serial(port: u16) -> String {
    let s = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("openssl s_client");
    let mut x = Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    x.stdin.take().unwrap().write_all(&s.stdout).unwrap();
    let out = x.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn file_serial(cert: &std::path::Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(cert)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn curl(args: &[&str]) -> std::process::Output {
    Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "5",
            "-H",
            &format!("Authorization: Bearer {API_TOKEN}"),
        ])
        .args(args)
        .output()
        .expect("curl")
}

#[test]
fn the_api_over_tls() {
    if !require_root() {
        return;
    }
    for t in ["curl", "openssl"] {
        require_tool(t);
    }
    let lab = Lab::new(48);
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let first = pki.server("api1");
    let second = pki.server("api2");
    // The daemon reloads on SIGHUP as its own user (nobody): the files it reads must let it.
    let (cert, key) = (
        dir.path().join("pki/api.pem"),
        dir.path().join("pki/api.key"),
    );
    std::fs::copy(&first.cert, &cert).unwrap();
    std::fs::copy(&first.key, &key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let data = dir.path().join("data");
    let decoys = [format!("{}=web", lab.decoy)];
    let (cert_s, key_s) = (cert.to_str().unwrap(), key.to_str().unwrap());

    // check-config: beyond loopback needs TLS or --insecure-http; a bad key is named.
    let check = |extra: &[&str]| {
        Command::new(decnet_bin())
            .args([
                "check-config",
                "--iface",
                &lab.host_if,
                "--decoy",
                &decoys[0],
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    let exposed = check(&["--listen", "0.0.0.0:8470"]);
    assert!(!exposed.status.success());
    let err = String::from_utf8_lossy(&exposed.stderr);
    assert!(
        err.contains("beyond loopback") && err.contains("--insecure-http"),
        "{err}"
    );
    assert!(
        check(&["--listen", "0.0.0.0:8470", "--insecure-http"])
            .status
            .success()
    );
    assert!(
        check(&[
            "--listen",
            "0.0.0.0:8470",
            "--tls-cert",
            cert_s,
            "--tls-key",
            key_s
        ])
        .status
        .success()
    );
    let bad = check(&["--tls-cert", cert_s, "--tls-key", cert_s]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && err.contains("TLS key") && err.contains(cert_s),
        "{err}"
    );
    let half = check(&["--tls-cert", cert_s]);
    assert!(String::from_utf8_lossy(&half.stderr).contains("--tls-cert needs --tls-key"));

    let port = free_port();
    let api = format!("127.0.0.1:{port}").parse().unwrap();
    let daemon = Daemon::start_at(
        &decnet_bin(),
        &lab.host_if,
        &decoys,
        &data,
        &[("DECNET_TLS_CERT", cert_s), ("DECNET_TLS_KEY", key_s)],
        api,
    );
    let ca = pki.ca.to_str().unwrap();
    let url = format!("https://127.0.0.1:{port}/api/v1/health");
    // curl with the CA: the API answers.
    let ok = curl(&["--cacert", ca, &url]);
    let body = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success() && body.contains("\"status\":\"ok\""),
        "{body}"
    );
    // Without it, curl refuses the certificate; plain HTTP gets no API.
    assert!(!curl(&[&url]).status.success());
    let plain = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://127.0.0.1:{port}/api/v1/health"),
    ]);
    assert_ne!(String::from_utf8_lossy(&plain.stdout), "200");
    // The CLI speaks TLS with --ca (and only then).
    let cli = |extra: &[&str]| {
        Command::new(decnet_bin())
            .args([
                "stats",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(&data)
            .args(extra)
            .env("DECNET_API_TOKEN", API_TOKEN)
            .output()
            .unwrap()
    };
    let out = cli(&["--ca", ca]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"kernel\""));
    assert!(!cli(&[]).status.success());

    // A stream stays open across a certificate reload; new connections get the new one.
    assert_eq!(served_serial(port), file_serial(&first.cert));
    let stream_out = dir.path().join("stream.txt");
    let mut stream = Command::new("curl")
        .args([
            "-sN",
            "--cacert",
            ca,
            "-H",
            &format!("Authorization: Bearer {API_TOKEN}"),
        ])
        .arg(format!("https://127.0.0.1:{port}/api/v1/stream"))
        .stdout(std::fs::File::create(&stream_out).unwrap())
        .spawn()
        .unwrap();
    let stats_events = || {
        std::fs::read_to_string(&stream_out)
            .unwrap_or_default()
            .matches("event: stats")
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats_events() < 2 {
        assert!(Instant::now() < deadline, "no stream");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::copy(&second.cert, &cert).unwrap();
    std::fs::copy(&second.key, &key).unwrap();
    // (copy gives the key the source's 0600 again)
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    // SAFETY: kill has no memory preconditions.
    unsafe { libc::kill(daemon.pid(), libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while served_serial(port) != file_serial(&second.cert) {
        assert!(
            Instant::now() < deadline,
            "certificate not reloaded:\n{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        daemon
            .log_text()
            .contains("SIGHUP: TLS certificate reloaded")
    );
    let before = stats_events();
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        stream.try_wait().unwrap().is_none(),
        "the stream was dropped by the reload"
    );
    assert!(
        stats_events() > before,
        "the open stream stopped after the reload"
    );
    // A broken replacement keeps the certificate in force.
    std::fs::write(&cert, "not a certificate\n").unwrap();
    // SAFETY: kill has no memory preconditions.
    unsafe { libc::kill(daemon.pid(), libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !daemon.log_text().contains("TLS certificate not reloaded") {
        assert!(Instant::now() < deadline, "{}", daemon.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(served_serial(port), file_serial(&second.cert));
    let _ = stream.kill();
    let _ = stream.wait();
    drop(daemon);
}

#[test]
fn the_token_rotates_without_a_restart() {
    if !require_root() {
        return;
    }
    require_tool("curl");
    let lab = Lab::new(49);
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = dir.path().join("data");
    let decoys = [format!("{}=web", lab.decoy)];
    let port = free_port();
    // No DECNET_API_TOKEN: the daemon keeps its token in DATA_DIR/api-token.
    let daemon = Daemon::start_at(
        &decnet_bin(),
        &lab.host_if,
        &decoys,
        &data,
        &[("DECNET_API_TOKEN", "")],
        format!("127.0.0.1:{port}").parse().unwrap(),
    );
    let token_file = data.join("api-token");
    let old = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    let get = |token: &str| {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
            .arg(format!("Authorization: Bearer {token}"))
            .arg(format!("http://127.0.0.1:{port}/api/v1/stats"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(get(&old), "200");
    // A stream opened with the old token.
    let stream_out = dir.path().join("stream.txt");
    let mut stream = Command::new("curl")
        .args(["-sN", "-H", &format!("Authorization: Bearer {old}")])
        .arg(format!("http://127.0.0.1:{port}/api/v1/stream"))
        .stdout(std::fs::File::create(&stream_out).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&stream_out)
        .unwrap_or_default()
        .contains("event: stats")
    {
        assert!(Instant::now() < deadline, "no stream");
        std::thread::sleep(Duration::from_millis(100));
    }
    let rotate = Command::new(decnet_bin())
        .args([
            "token",
            "rotate",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(&data)
        .env_remove("DECNET_API_TOKEN")
        .output()
        .unwrap();
    assert!(
        rotate.status.success(),
        "{}",
        String::from_utf8_lossy(&rotate.stderr)
    );
    assert!(String::from_utf8_lossy(&rotate.stderr).contains("token rotated"));
    let new = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    assert_ne!(new, old);
    assert_eq!(get(&old), "401");
    assert_eq!(get(&new), "200");
    // The stream ended with a reset saying why.
    let deadline = Instant::now() + Duration::from_secs(10);
    while stream.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the old stream did not end");
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = std::fs::read_to_string(&stream_out).unwrap();
    assert!(
        text.contains("event: reset") && text.contains("API token rotated"),
        "{text}"
    );
    drop(daemon);

    // A token from DECNET_API_TOKEN is its owner's to change: rotation says so.
    let port = free_port();
    let daemon = Daemon::start_at(
        &decnet_bin(),
        &lab.host_if,
        &decoys,
        &dir.path().join("data2"),
        &[],
        format!("127.0.0.1:{port}").parse().unwrap(),
    );
    let refused = Command::new(decnet_bin())
        .args(["token", "rotate", "--listen", &format!("127.0.0.1:{port}")])
        .env("DECNET_API_TOKEN", API_TOKEN)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("DECNET_API_TOKEN"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    drop(daemon);
}

#[test]
fn a_fleet_reaches_postgres_over_tls() {
    if !require_root() {
        return;
    }
    require_tool("openssl");
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let server = pki.server("postgres");
    let other = Pki::new(&dir.path().join("other-ca"));
    let port = free_port();
    // TCP connections must be TLS (pg_hba rejects the rest).
    let pg = decnet_tests::pg::Postgres::start_tls(port, &server.cert, &server.key);
    pg.create_db("fleet");
    let url = |ca: &std::path::Path| {
        format!(
            "postgres://decnet:not-a-real-secret@127.0.0.1:{port}/fleet?sslmode=verify-full&sslrootcert={}",
            ca.display()
        )
    };
    // check-config shows the TLS settings and hides the password.
    let shown = Command::new(decnet_bin())
        .args([
            "check-config",
            "--role",
            "analyst",
            "--store",
            &url(&pki.ca),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.status.success(),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    assert!(
        text.contains("decnet:***@127.0.0.1") && text.contains("sslmode=verify-full"),
        "{text}"
    );
    assert!(!text.contains("not-a-real-secret"));

    // An analyst over TLS: its connections are encrypted.
    let data = dir.path().join("analyst");
    let args: Vec<String> = [
        "run",
        "--role",
        "analyst",
        "--store",
        &url(&pki.ca),
        "--data-dir",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([data.display().to_string()])
    .collect();
    let mut analyst = decnet_tests::Proc::spawn(&args, &[], &data.with_extension("log"));
    analyst.wait_log("store open", 1, Duration::from_secs(20));
    let deadline = Instant::now() + Duration::from_secs(10);
    let ssl = loop {
        let ssl = pg.psql(
            "fleet",
            "SELECT string_agg(s.ssl::text, ',') FROM pg_stat_ssl s \
             JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'decnet'",
        );
        if !ssl.is_empty() || Instant::now() > deadline {
            break ssl;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        !ssl.is_empty() && ssl.split(',').all(|s| s == "true"),
        "pg_stat_ssl: {ssl:?}"
    );
    assert!(!analyst.log_text().contains("not-a-real-secret"));
    drop(analyst);

    // A server certificate from a CA the URL does not trust is refused, and said so.
    std::fs::create_dir(dir.path().join("ingest")).unwrap();
    let refused = Command::new(decnet_bin())
        .args(["ingest", "--once", "--data-dir"])
        .arg(dir.path().join("ingest"))
        .args(["--store", &url(&other.ca)])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    eprintln!(
        "untrusted server certificate: {}",
        err.lines().next().unwrap_or("")
    );
    assert!(!refused.status.success());
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert!(!err.contains("not-a-real-secret"), "{err}");
}
