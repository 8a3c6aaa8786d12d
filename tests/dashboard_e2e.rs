//! The dashboard in a real headless Chromium (driven through chromedriver), fed by the real
//! daemon watching a decoy in its own namespace.

use std::time::{Duration, Instant};

use decnet_tests::{API_TOKEN, Daemon, Lab, require_root, require_tool, webdriver::Browser};

#[test]
fn dashboard_shows_live_probes_as_text() {
    if !require_root() {
        return;
    }
    require_tool("chromium");
    require_tool("chromedriver");
    let lab = Lab::new(16);
    // A listener, so the probe's payload follows a completed handshake.
    let listener =
        std::net::TcpListener::bind((lab.decoy.as_str(), 8080)).expect("listener on the decoy");
    let dir = std::env::temp_dir().join(format!("decnet-e2e-dashboard-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let daemon = Daemon::start(&lab.host_if, &[format!("{}=web", lab.decoy)], &dir);
    let b = Browser::start();
    b.goto(&format!("http://{}/#token={API_TOKEN}", daemon.api));
    b.wait_for(
        "return document.getElementById('status').textContent === 'live'",
        Duration::from_secs(10),
    )
    .expect("the dashboard never went live");

    // A hostile payload: markup that would run if the page ever parsed it as HTML.
    let sent = Instant::now();
    lab.exec(
        &[
            "bash",
            "-c",
            &format!(
                "printf 'GET /<script>window.__pwned=1</script> HTTP/1.1\\r\\nHost: x\\r\\nUser-Agent: <img src=x onerror=window.__pwned=2>\\r\\n\\r\\n' > /dev/tcp/{}/8080",
                lab.decoy
            ),
        ],
        10,
    );
    let attacker = lab.attacker.clone();
    b.wait_for(
        &format!("return document.getElementById('feed').textContent.includes('{attacker}')"),
        Duration::from_secs(5),
    )
    .expect("the probe never reached the live feed");
    let latency = sent.elapsed();
    eprintln!("probe -> live feed: {latency:?}");
    assert!(
        latency <= Duration::from_secs(2),
        "the probe took {latency:?} to reach the live feed"
    );
    // The payload shows as text, and nothing in it ran.
    b.wait_for(
        "return document.getElementById('feed').textContent.includes('<script>window.__pwned=1</script>')",
        Duration::from_secs(5),
    )
    .expect("the payload text is not in the feed");
    assert_eq!(
        b.eval("return document.querySelectorAll('#feed script, #feed img').length"),
        0
    );
    assert_eq!(b.eval("return typeof window.__pwned"), "undefined");

    // The attacker's row, with its class; then its detail view.
    let row = format!("document.querySelector('#attackers tr[data-ip=\"{attacker}\"]')");
    b.wait_for(
        &format!("const r = {row}; return !!r && r.cells[2].textContent.length > 0"),
        Duration::from_secs(10),
    )
    .expect("no attacker row");
    let class = b.eval(&format!("return {row}.cells[2].textContent"));
    let classes = [
        "scanning",
        "slow_scan",
        "brute_force",
        "beaconing",
        "interactive",
        "mixed",
        "unknown",
    ];
    assert!(
        classes.contains(&class.as_str().unwrap_or("")),
        "class {class}"
    );
    b.eval(&format!("{row}.click(); return true"));
    b.wait_for(
        "return document.getElementById('detail').textContent.includes('<script>window.__pwned=1</script>')",
        Duration::from_secs(5),
    )
    .expect("the command is not in the detail view");
    assert_eq!(
        b.eval("return document.querySelectorAll('#detail script, #detail img, #timeline script').length"),
        0
    );
    assert_eq!(b.eval("return typeof window.__pwned"), "undefined");

    // No console errors (CSP violations included) anywhere along the way.
    let errors: Vec<_> = b
        .console()
        .into_iter()
        .filter(|e| e["level"] == "SEVERE")
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:?}");

    let shot = b.screenshot();
    assert!(shot.starts_with(b"\x89PNG"), "not a PNG");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&out).expect("artifact dir");
    std::fs::write(out.join("dashboard.png"), &shot).expect("screenshot");
    drop(listener);
}
