//! A minimal W3C WebDriver client for chromedriver, over the blocking HTTP helper: enough to
//! open a page in headless Chromium, run scripts in it, read its console and screenshot it.

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::{free_port, http_request};

pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and a headless Chromium session.
    pub fn start() -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning chromedriver");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let deadline = Instant::now() + Duration::from_secs(20);
        while http_request(addr, "GET", "/status", None).is_none() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1500,1000"]
            },
            "goog:loggingPrefs": {"browser": "ALL"}
        }}});
        let (code, body) =
            http_request(addr, "POST", "/session", Some(&caps.to_string())).expect("new session");
        let v: Value = serde_json::from_str(&body).expect("session JSON");
        assert_eq!(code, 200, "new session: {v}");
        let session = v["value"]["sessionId"]
            .as_str()
            .expect("session id")
            .to_owned();
        Browser {
            driver,
            addr,
            session,
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let (code, text) = http_request(
            self.addr,
            method,
            &path,
            body.map(|b| b.to_string()).as_deref(),
        )
        .unwrap_or_else(|| panic!("{method} {path}: no answer"));
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert_eq!(code, 200, "{method} {path}: {text}");
        v["value"].clone()
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    /// Runs `script` (a function body; `return` a value) in the page.
    pub fn eval(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    /// Polls `script` every 50 ms until it returns true; the time it took.
    pub fn wait_for(&self, script: &str, limit: Duration) -> Option<Duration> {
        let t = Instant::now();
        while t.elapsed() < limit {
            if self.eval(script) == Value::Bool(true) {
                return Some(t.elapsed());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Console entries since the last call (chromedriver's log endpoint).
    pub fn console(&self) -> Vec<Value> {
        self.call("POST", "/se/log", Some(json!({ "type": "browser" })))
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// A PNG screenshot.
    pub fn screenshot(&self) -> Vec<u8> {
        let b64 = self.call("GET", "/screenshot", None);
        decode_base64(b64.as_str().unwrap_or(""))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = http_request(
            self.addr,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn decode_base64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}
