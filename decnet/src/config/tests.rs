//! Resolution: precedence, defaults, and errors that name the setting and its line.

use super::*;

fn args() -> RunArgs {
    RunArgs::default()
}

#[test]
fn flags_beat_file_and_defaults_fill_in() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decnet.toml");
    std::fs::write(
        &path,
        "iface = \"eth9\"\ndecoy = [\"10.0.0.5=db\"]\nxdp_mode = \"skb\"\n",
    )
    .unwrap();
    let mut a = args();
    a.config = Some(path.clone());
    let c = RunConfig::resolve(a).unwrap();
    assert_eq!(c.iface, "eth9");
    assert_eq!(c.decoys[0].name, "db");
    assert_eq!(c.xdp_mode, XdpModeChoice::Skb);
    assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));

    let mut a = args();
    a.config = Some(path);
    a.iface = Some("veth1".into());
    a.decoys = vec!["10.0.0.7".parse().unwrap()];
    let c = RunConfig::resolve(a).unwrap();
    assert_eq!(c.iface, "veth1");
    assert_eq!(c.decoys.len(), 1);
    assert_eq!(c.decoys[0].name, "10.0.0.7");
}

#[test]
fn unknown_keys_and_bad_decoys_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "iface = \"x\"\ndecoys = []\n").unwrap();
    let mut a = args();
    a.config = Some(path.clone());
    let e = RunConfig::resolve(a).unwrap_err().to_string();
    assert!(e.contains("decoys") && e.contains("bad.toml"), "{e}");

    assert!(e.contains("line 2"), "{e}");

    std::fs::write(
        &path,
        "iface = \"x\"\ndecoy = [\n  \"10.0.0.1\",\n  \"300.1.1.1\",\n]\n",
    )
    .unwrap();
    let mut a = args();
    a.config = Some(path.clone());
    let e = RunConfig::resolve(a).unwrap_err().to_string();
    assert!(e.contains("300.1.1.1") && e.contains("line 4"), "{e}");

    // A bad listen address: the key and its line.
    std::fs::write(
        &path,
        "iface = \"x\"\ndecoy = [\"10.0.0.1\"]\n\nlisten = \"1.2.3\"\n",
    )
    .unwrap();
    let mut a = args();
    a.config = Some(path.clone());
    let e = RunConfig::resolve(a).unwrap_err().to_string();
    assert!(e.contains("line 4") && e.contains("bad.toml"), "{e}");

    // Overlapping decoys: the same address twice, even in its IPv4-mapped IPv6 form.
    std::fs::write(
        &path,
        "iface = \"x\"\ndecoy = [\"10.0.0.1=a\",\n \"::ffff:10.0.0.1=b\"]\n",
    )
    .unwrap();
    let mut a = args();
    a.config = Some(path.clone());
    let e = RunConfig::resolve(a).unwrap_err().to_string();
    assert!(e.contains("line 3") && e.contains("line 2"), "{e}");

    // A missing interface names where it was set.
    std::fs::write(&path, "decoy = [\"10.0.0.1\"]\niface = \"nosuch0\"\n").unwrap();
    let mut a = args();
    a.config = Some(path);
    let c = RunConfig::resolve(a).unwrap();
    let e = c.check_host().unwrap_err().to_string();
    assert!(e.contains("nosuch0") && e.contains("line 2"), "{e}");
}

#[test]
fn roles_stores_and_sensor_ids() {
    // Split roles need a shared store; the SQLite file is one process's.
    let mut a = args();
    a.role = Some(Role::Analyst);
    assert!(matches!(
        RunConfig::resolve(a.clone()),
        Err(ConfigError::RoleNeedsSharedStore(Role::Analyst))
    ));
    // An analyst or an API needs no interface or decoy.
    a.store = Some("postgres://decnet:s3cret@db.example/decnet".into());
    let c = RunConfig::resolve(a.clone()).unwrap();
    assert_eq!(c.role, Role::Analyst);
    assert!(c.iface.is_empty() && c.decoys.is_empty());
    c.check_host().unwrap();
    assert_eq!(c.store_display(), "postgres://decnet:***@db.example/decnet");
    assert!(!c.describe().contains("s3cret"), "{}", c.describe());
    // A sensor still does.
    a.role = Some(Role::Sensor);
    assert!(matches!(
        RunConfig::resolve(a.clone()),
        Err(ConfigError::NoDecoy)
    ));
    let mut a = args();
    a.iface = Some("lo".into());
    a.decoys = vec!["10.0.0.1".parse().unwrap()];
    a.store = Some("mysql://x/y".into());
    let e = RunConfig::resolve(a.clone()).unwrap_err().to_string();
    assert!(e.contains("--store") && e.contains("postgres://"), "{e}");
    a.store = None;
    a.sensor_id = Some("site a/../b".into());
    let e = RunConfig::resolve(a.clone()).unwrap_err().to_string();
    assert!(
        e.contains("--sensor-id") && e.contains("site a/../b"),
        "{e}"
    );
    a.sensor_id = None;
    let c = RunConfig::resolve(a).unwrap();
    assert_eq!(c.role, Role::All);
    assert_eq!(
        c.store,
        format!(
            "sqlite://{}",
            PathBuf::from(DEFAULT_DATA_DIR).join("decnet.db").display()
        )
    );

    // The sensor id is kept in the data dir: a renamed host keeps its cursor.
    let dir = tempfile::tempdir().unwrap();
    let first = resolve_sensor_id(dir.path(), None).unwrap();
    assert!(valid_sensor_id(&first), "{first}");
    std::fs::write(dir.path().join(SENSOR_ID_FILE), "kept-name\n").unwrap();
    assert_eq!(resolve_sensor_id(dir.path(), None).unwrap(), "kept-name");
    assert_eq!(
        resolve_sensor_id(dir.path(), Some("given")).unwrap(),
        "given"
    );
    std::fs::write(dir.path().join(SENSOR_ID_FILE), "bad id\n").unwrap();
    assert!(resolve_sensor_id(dir.path(), None).is_err());
    assert_eq!(redact_url("postgres://u@h/d"), "postgres://u@h/d");
    assert_eq!(redact_url("sqlite:///x/y.db"), "sqlite:///x/y.db");
    // TLS settings stay readable; a password anywhere does not.
    assert_eq!(
        redact_url("postgres://u:pw@h:5432/d?sslmode=verify-full&sslrootcert=/ca.pem&password=x2"),
        "postgres://u:***@h:5432/d?sslmode=verify-full&sslrootcert=/ca.pem&password=***"
    );
}

#[test]
fn missing_pieces_are_errors() {
    assert!(matches!(
        RunConfig::resolve(args()),
        Err(ConfigError::NoDecoy)
    ));
    let mut a = args();
    a.decoys = vec!["10.0.0.1".parse().unwrap()];
    assert!(matches!(
        RunConfig::resolve(a.clone()),
        Err(ConfigError::NoIface)
    ));
    a.iface = Some("lo".into());
    a.decoys.push("10.0.0.1=again".parse().unwrap());
    assert!(matches!(
        RunConfig::resolve(a),
        Err(ConfigError::DuplicateDecoy { .. })
    ));
}

#[test]
fn check_config_shows_every_key_in_table_order() {
    let mut a = args();
    a.iface = Some("lo".into());
    a.decoys = vec!["10.0.0.7".parse().unwrap()];
    let shown = RunConfig::resolve(a).unwrap().describe();
    let keys: Vec<&str> = shown
        .lines()
        .map(|l| l.split(" = ").next().unwrap())
        .collect();
    let want: Vec<&str> = KEYS.iter().map(|k| k.toml).collect();
    assert_eq!(keys, want);
    assert!(!shown.contains(UNSHOWN), "{shown}");
}

#[test]
fn sinks_and_alert_rules_are_checked_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alerts.toml");
    let resolve = |text: &str| {
        std::fs::write(&path, text).unwrap();
        let mut a = args();
        a.config = Some(path.clone());
        a.iface = Some("lo".into());
        a.decoys = vec!["10.0.0.7".parse().unwrap()];
        RunConfig::resolve(a)
    };
    let good = "\
[[sink]]
name = \"soc\"
webhook = \"https://hooks.example/services/SECRET\"
[[sink]]
name = \"siem\"
syslog = \"udp://127.0.0.1:514\"
[[alert]]
name = \"targeted\"
min_risk = 50
sinks = [\"soc\", \"siem\"]
";
    let c = resolve(good).unwrap();
    assert_eq!(c.alerts.sinks.len(), 2);
    assert_eq!(c.alerts.rules_for("siem").len(), 1);
    let shown = c.describe();
    assert!(
        shown.contains("sink soc = webhook https://hooks.example/***"),
        "{shown}"
    );
    assert!(!shown.contains("SECRET"), "{shown}");
    assert!(
        shown.contains("alert targeted = min_risk 50 -> soc, siem"),
        "{shown}"
    );

    // A rule naming a sink nobody defined: the rule's line.
    let e = resolve(&good.replace("[\"soc\", \"siem\"]", "[\"soc\", \"pager\"]"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("line 7") && e.contains("sink `pager` is not defined"),
        "{e}"
    );
    // An unknown key inside a table: named, with its line.
    let e = resolve(&good.replace("min_risk = 50", "min_risc = 50"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("min_risc") && e.contains("line 9"), "{e}");
    let e = resolve(&good.replace("syslog = \"udp://127.0.0.1:514\"", "syslog = \"smtp://x\""))
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 4") && e.contains("scheme `smtp`"), "{e}");
    // A secret in a webhook URL of the wrong scheme does not show in the error.
    let e = resolve(&good.replace("https://hooks.example", "ftp://u:pw@hooks.example"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("line 1") && e.contains("ftp://u:***@hooks.example/***"),
        "{e}"
    );
    // Look for the password where it would sit: the temp dir's random name
    // may itself contain "pw".
    assert!(!e.contains("SECRET") && !e.contains(":pw@"), "{e}");
}
