//! The dashboard in a real headless Chromium (driven through chromedriver), fed by the real
//! daemon watching a decoy in its own namespace: live feed, attackers, an attacker's
//! detail with its ports-against-time scatter, the detections view and its filters, the
//! campaigns view, the top services, and the STIX download.

use std::time::{Duration, Instant};

use decnet_tests::{API_TOKEN, Daemon, Lab, require_root, require_tool, webdriver::Browser};

#[test]
fn dashboard_shows_live_probes_as_text() {
    if !require_root() {
        return;
    }
    require_tool("chromium");
    require_tool("chromedriver");
    require_tool("nmap");
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

    // The detail's ports-against-time scatter drew the attacker's probes.
    b.wait_for(
        "const c = document.getElementById('scatter'); return !!c && +c.dataset.points >= 1",
        Duration::from_secs(5),
    )
    .expect("no scatter of ports against time");

    // Two sources of the namespace scan with nmap: detections, and a campaign of the two.
    let second = "10.231.16.3";
    lab.exec(
        &[
            "ip",
            "addr",
            "add",
            &format!("{second}/24"),
            "dev",
            &lab.ns_if,
        ],
        10,
    );
    for src in [attacker.as_str(), second] {
        let out = lab.exec(
            &[
                "nmap", "-sS", "-n", "-Pn", "-p", "1-300", "-S", src, "-e", &lab.ns_if, &lab.decoy,
            ],
            60,
        );
        assert!(out.status.success(), "nmap from {src}: {out:?}");
    }
    let (tab, js_str) = (
        |name: &str| {
            format!(
                "document.querySelector('.tabs button[data-view=\"{name}\"]').click(); return true"
            )
        },
        |s: &str| serde_json::to_string(s).unwrap(),
    );
    // Detections: newest first, with filters the server applies.
    b.eval(&tab("detections"));
    let det_row = format!(
        "return [...document.querySelectorAll('#detections tbody tr')].some(r => r.dataset.ip === {})",
        js_str(&attacker)
    );
    b.wait_for(&det_row, Duration::from_secs(10))
        .expect("the attacker is not in the detections view");
    let set = |id: &str, v: &str| {
        b.eval(&format!(
            "const e = document.getElementById('{id}'); e.value = {}; e.dispatchEvent(new Event('change')); return true",
            js_str(v)
        ));
    };
    set("f-tool", "no-such-tool");
    b.wait_for(
        "return document.querySelectorAll('#detections tbody tr').length === 0 &&          document.getElementById('detections-empty').style.display !== 'none'",
        Duration::from_secs(5),
    )
    .expect("a tool filter matching nothing still shows rows");
    set("f-tool", "nmap");
    b.wait_for(&det_row, Duration::from_secs(5))
        .expect("the tool filter hides the nmap source");
    let tools = b.eval(
        "return [...document.querySelectorAll('#detections tbody tr')].every(r => r.cells[5].textContent.includes('nmap'))",
    );
    assert_eq!(tools, true, "a row without nmap passed the filter");
    let shot = b.screenshot();
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&out).expect("artifact dir");
    std::fs::write(out.join("dashboard-detections.png"), &shot).expect("screenshot");

    // Campaigns: the two nmap sources share tool, fingerprint and targets.
    b.eval(&tab("campaigns"));
    b.wait_for(
        "return document.querySelectorAll('#campaigns tbody tr').length > 0",
        Duration::from_secs(15),
    )
    .expect("no campaign row");
    b.eval("document.querySelector('#campaigns tbody tr').click(); return true");
    b.wait_for(
        &format!(
            "const t = document.getElementById('campaign-detail').textContent; return t.includes({}) && t.includes({})",
            js_str(&attacker),
            js_str(second)
        ),
        Duration::from_secs(5),
    )
    .expect("the campaign does not list both members");

    // Ports and services: the scanned ports, counted.
    b.eval(&tab("services"));
    b.wait_for(
        "return [...document.querySelectorAll('#services tbody tr')].some(r => +r.cells[1].textContent > 0 && +r.cells[3].textContent >= 1)",
        Duration::from_secs(5),
    )
    .expect("no probed service listed");

    // The STIX button fetches the bundle with the token and offers it as a file.
    b.eval("document.getElementById('dl-stix').click(); return true");
    b.wait_for(
        "const a = document.getElementById('last-download'); return !!a && a.download.startsWith('decnet-stix-')",
        Duration::from_secs(5),
    )
    .expect("the STIX download was not offered");
    b.eval(
        // The page's blob itself: the CSP (connect-src 'self') rightly refuses a fetch of
        // a blob: URL.
        "window.__stix = null; lastDownload.text().then(t => { window.__stix = t; }); return true",
    );
    b.wait_for(
        "return typeof window.__stix === 'string'",
        Duration::from_secs(5),
    )
    .expect("the downloaded blob could not be read");
    let bundle: serde_json::Value =
        serde_json::from_str(b.eval("return window.__stix").as_str().unwrap()).unwrap();
    assert_eq!(bundle["type"], "bundle", "{bundle}");

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
