//! The `[[sink]]` and `[[alert]]` tables of the config file: where alerts go and which
//! detections become alerts. Read as written ([`SinkFile`], [`RuleFile`]; unknown keys are
//! refused by the TOML reader), then checked into a [`Plan`] whose errors name the table's
//! line.

use std::{collections::BTreeMap, path::PathBuf};

use serde::Deserialize;

use super::target;
pub use super::target::{SyslogProto, Target, redact_webhook};

/// `[[sink]]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinkFile {
    pub name: String,
    pub webhook: Option<String>,
    pub syslog: Option<String>,
    pub file: Option<PathBuf>,
    pub format: Option<String>,
    /// PEM file of the CA(s) a `https://` webhook or `tls://` syslog server is checked
    /// against, instead of the system's store.
    pub ca: Option<PathBuf>,
    /// Extra HTTP headers of a webhook (an `Authorization` for Splunk HEC, ...).
    pub headers: BTreeMap<String, String>,
    /// Syslog facility name (`local0`..`local7`, `security`, `authpriv`, ...).
    pub facility: Option<String>,
    /// Detections the sink may fall behind by before the oldest are skipped (and counted).
    pub max_backlog: Option<u64>,
    /// A webhook's messages per POST: above 1, a backlog goes out as NDJSON bodies of up
    /// to this many (for HTTP inputs that take several events: Splunk HEC, Vector,
    /// Fluent Bit, Logstash's `json_lines`).
    pub batch: Option<u64>,
}

/// `[[alert]]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuleFile {
    pub name: String,
    pub min_risk: Option<i64>,
    pub on: Option<Vec<String>>,
    pub classification: Option<Vec<String>>,
    pub tools: Option<Vec<String>>,
    pub deckies: Option<Vec<String>>,
    pub sinks: Vec<String>,
    pub rearm_minutes: Option<i64>,
    pub digest_minutes: Option<i64>,
}

/// What a rule may fire on: the changes a detection lists, and a source's first one.
pub const ON: &[&str] = &[
    "new_source",
    "class",
    "tools",
    "campaign",
    "risk_band",
    "classification",
];

use crate::profile::classify::CLASSIFICATIONS;

/// The default backlog bound of a sink, in detections.
pub const DEFAULT_MAX_BACKLOG: u64 = 10_000;
/// The most messages one webhook POST may carry.
pub const MAX_BATCH: u64 = 1000;
/// The default re-arm window of a rule.
pub const DEFAULT_REARM_MINUTES: i64 = 60;

/// How a message is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// decnet's own alert object.
    Json,
    /// A Slack (or Mattermost, ...) incoming-webhook payload: `{"text": ...}`.
    Slack,
    /// Elastic Common Schema, for Filebeat, Elastic Agent and other ECS readers.
    Ecs,
}

/// A checked sink.
#[derive(Debug, Clone, PartialEq)]
pub struct Sink {
    pub name: String,
    pub target: Target,
    pub format: Format,
    pub ca: Option<PathBuf>,
    pub max_backlog: u64,
    /// Messages per webhook POST (1 for every other sink).
    pub batch: usize,
}

impl Sink {
    /// `webhook`, `syslog` or `file`.
    /// Where it delivers, with every secret replaced by `***` (logs, check-config, API).
    pub fn display_target(&self) -> String {
        self.target.display()
    }

    pub fn kind(&self) -> &'static str {
        match self.target {
            Target::Webhook { .. } => "webhook",
            Target::Syslog { .. } => "syslog",
            Target::File { .. } => "file",
        }
    }
}

/// A checked rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub min_risk: Option<i64>,
    /// Empty: any change.
    pub on: Vec<String>,
    pub classification: Vec<String>,
    pub tools: Vec<String>,
    pub deckies: Vec<String>,
    pub sinks: Vec<String>,
    /// Nanoseconds; 0: every matching detection alerts.
    pub rearm_ns: i64,
    /// Nanoseconds; 0: one message per alert.
    pub digest_ns: i64,
}

/// Every sink and rule, checked against each other.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub sinks: Vec<Sink>,
    pub rules: Vec<Rule>,
}

impl Plan {
    /// The rules that deliver to `sink`.
    pub fn rules_for(&self, sink: &str) -> Vec<Rule> {
        self.rules
            .iter()
            .filter(|r| r.sinks.iter().any(|s| s == sink))
            .cloned()
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty() && self.rules.is_empty()
    }

    /// `check-config`'s lines: each sink with its redacted target, each rule.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for s in &self.sinks {
            out.push_str(&format!(
                "sink {} = {} {} (format {:?}, max_backlog {}{})\n",
                s.name,
                s.kind(),
                s.display_target(),
                s.format,
                s.max_backlog,
                if s.batch > 1 {
                    format!(", batch {}", s.batch)
                } else {
                    String::new()
                }
            ));
            if let Target::Webhook { headers, .. } = &s.target {
                for (k, _) in headers {
                    out.push_str(&format!("  header {k}: ***\n"));
                }
            }
        }
        for r in &self.rules {
            let mut when = Vec::new();
            if let Some(m) = r.min_risk {
                when.push(format!("min_risk {m}"));
            }
            for (what, list) in [
                ("on", &r.on),
                ("classification", &r.classification),
                ("tools", &r.tools),
                ("deckies", &r.deckies),
            ] {
                if !list.is_empty() {
                    when.push(format!("{what} {}", list.join("|")));
                }
            }
            if when.is_empty() {
                when.push("every detection".into());
            }
            out.push_str(&format!(
                "alert {} = {} -> {} (rearm {} min, digest {} min)\n",
                r.name,
                when.join(", "),
                r.sinks.join(", "),
                r.rearm_ns / 60_000_000_000,
                r.digest_ns / 60_000_000_000
            ));
        }
        out
    }
}

/// One table's error, with the table's kind and its position in the file (the caller turns
/// `at` into a line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[[{table}]] {name}: {why}")]
pub struct SpecError {
    /// `sink` or `alert`.
    pub table: &'static str,
    /// The table's `name`, quoted, or `#N` when it has none.
    pub name: String,
    pub why: String,
    /// Byte offset of the table in the file.
    pub at: usize,
}

/// Checks the tables; `at` of each is its byte offset in the file.
pub fn plan(sinks: &[(SinkFile, usize)], rules: &[(RuleFile, usize)]) -> Result<Plan, SpecError> {
    let mut plan = Plan::default();
    for (i, (s, at)) in sinks.iter().enumerate() {
        let err = |why: String| SpecError {
            table: "sink",
            name: label(&s.name, i),
            why,
            at: *at,
        };
        check_name(&s.name).map_err(err)?;
        if plan.sinks.iter().any(|p| p.name == s.name) {
            return Err(err("a sink of this name is defined above".into()));
        }
        plan.sinks.push(sink(s).map_err(err)?);
    }
    for (i, (r, at)) in rules.iter().enumerate() {
        let err = |why: String| SpecError {
            table: "alert",
            name: label(&r.name, i),
            why,
            at: *at,
        };
        check_name(&r.name).map_err(err)?;
        if plan.rules.iter().any(|p| p.name == r.name) {
            return Err(err("a rule of this name is defined above".into()));
        }
        let rule = rule(r).map_err(err)?;
        for s in &rule.sinks {
            if !plan.sinks.iter().any(|p| &p.name == s) {
                let known: Vec<&str> = plan.sinks.iter().map(|p| p.name.as_str()).collect();
                return Err(err(format!(
                    "sink `{s}` is not defined (sinks: {})",
                    if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    }
                )));
            }
        }
        plan.rules.push(rule);
    }
    Ok(plan)
}

fn label(name: &str, i: usize) -> String {
    if name.is_empty() {
        format!("#{}", i + 1)
    } else {
        format!("`{name}`")
    }
}

/// Names go into database keys, metric labels and idempotency keys.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("`name` is missing".into());
    }
    if name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(format!(
            "name `{name}`: 1-64 characters of A-Z a-z 0-9 . _ -"
        ));
    }
    Ok(())
}

fn sink(s: &SinkFile) -> Result<Sink, String> {
    let given = [s.webhook.is_some(), s.syslog.is_some(), s.file.is_some()]
        .iter()
        .filter(|g| **g)
        .count();
    if given != 1 {
        return Err(
            "give exactly one of `webhook = URL`, `syslog = udp|tcp|tls://HOST:PORT`, `file = PATH`"
                .into(),
        );
    }
    let format = match s.format.as_deref() {
        None | Some("json") => Format::Json,
        Some("slack") if s.webhook.is_some() => Format::Slack,
        Some("ecs") if s.syslog.is_none() => Format::Ecs,
        Some(f) => {
            let allowed = if s.webhook.is_some() {
                "json, slack, ecs"
            } else if s.file.is_some() {
                "json, ecs"
            } else {
                "json"
            };
            return Err(format!("format `{f}`: this sink writes {allowed}"));
        }
    };
    if !s.headers.is_empty() && s.webhook.is_none() {
        return Err("`headers` is for webhooks".into());
    }
    if s.facility.is_some() && s.syslog.is_none() {
        return Err("`facility` is for syslog".into());
    }
    let target = target::parse(
        s.webhook.as_deref(),
        &s.headers,
        s.syslog.as_deref(),
        s.facility.as_deref(),
        s.file.as_deref(),
    )?;
    if s.ca.is_some()
        && !matches!(&target, Target::Webhook { url, .. } if url.scheme() == "https")
        && !matches!(
            &target,
            Target::Syslog {
                proto: SyslogProto::Tls,
                ..
            }
        )
    {
        return Err("`ca` is for https:// webhooks and tls:// syslog".into());
    }
    let max_backlog = s.max_backlog.unwrap_or(DEFAULT_MAX_BACKLOG);
    if max_backlog == 0 {
        return Err("`max_backlog` must be at least 1".into());
    }
    let batch = match s.batch {
        None | Some(1) => 1,
        Some(_) if s.webhook.is_none() => {
            return Err(
                "`batch` is for webhooks (syslog and files take a page per write already)".into(),
            );
        }
        Some(_) if format == Format::Slack => {
            return Err("`batch` needs format json or ecs: a Slack message is one POST".into());
        }
        Some(n) if (2..=MAX_BATCH).contains(&n) => n as usize,
        Some(n) => return Err(format!("`batch = {n}`: expected 1 to {MAX_BATCH}")),
    };
    Ok(Sink {
        name: s.name.clone(),
        target,
        format,
        ca: s.ca.clone(),
        max_backlog,
        batch,
    })
}

fn rule(r: &RuleFile) -> Result<Rule, String> {
    if r.sinks.is_empty() {
        return Err("`sinks` is missing: name the sinks this rule delivers to".into());
    }
    if let Some(m) = r.min_risk
        && !(0..=100).contains(&m)
    {
        return Err(format!("min_risk {m}: expected 0..=100"));
    }
    let on = r.on.clone().unwrap_or_default();
    for o in &on {
        if !ON.contains(&o.as_str()) {
            return Err(format!("on `{o}`: expected one of {}", ON.join(", ")));
        }
    }
    let classification = r.classification.clone().unwrap_or_default();
    for c in &classification {
        if !CLASSIFICATIONS.contains(&c.as_str()) {
            return Err(format!(
                "classification `{c}`: expected one of {}",
                CLASSIFICATIONS.join(", ")
            ));
        }
    }
    let minutes = |what: &str, v: Option<i64>, default: i64| -> Result<i64, String> {
        let m = v.unwrap_or(default);
        // A year: longer windows are a typo, and the nanoseconds stay far from overflow.
        if !(0..=525_600).contains(&m) {
            return Err(format!("{what} {m}: expected 0..=525600"));
        }
        Ok(m * 60_000_000_000)
    };
    for (what, list) in [("tools", &r.tools), ("deckies", &r.deckies)] {
        if list
            .as_ref()
            .is_some_and(|l| l.iter().any(|t| t.is_empty()))
        {
            return Err(format!("{what}: an empty name"));
        }
    }
    Ok(Rule {
        name: r.name.clone(),
        min_risk: r.min_risk,
        on,
        classification,
        tools: r.tools.clone().unwrap_or_default(),
        deckies: r.deckies.clone().unwrap_or_default(),
        sinks: r.sinks.clone(),
        rearm_ns: minutes("rearm_minutes", r.rearm_minutes, DEFAULT_REARM_MINUTES)?,
        digest_ns: minutes("digest_minutes", r.digest_minutes, 0)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink_toml(t: &str) -> SinkFile {
        toml::from_str(t).unwrap()
    }

    fn one(s: &str) -> Result<Plan, SpecError> {
        plan(&[(sink_toml(s), 0)], &[])
    }

    #[test]
    fn secrets_never_show() {
        let p = one(r#"name = "soc"
webhook = "https://user:pw@hooks.slack.com/services/T000/B000/XXXX?token=abc"
headers = { Authorization = "Splunk 1234" }"#)
        .unwrap();
        let d = p.describe();
        assert!(!d.contains("pw") && !d.contains("XXXX") && !d.contains("abc"));
        assert!(!d.contains("1234"), "{d}");
        assert!(d.contains("https://user:***@hooks.slack.com/***"), "{d}");
        let bare = one("name = \"a\"\nwebhook = \"http://127.0.0.1:9000/\"").unwrap();
        assert_eq!(bare.sinks[0].display_target(), "http://127.0.0.1:9000/");
    }

    #[test]
    fn syslog_urls() {
        let p = one("name = \"s\"\nsyslog = \"tcp://[::1]:1514\"\nfacility = \"local3\"").unwrap();
        assert_eq!(
            p.sinks[0].target,
            Target::Syslog {
                proto: SyslogProto::Tcp,
                host: "::1".into(),
                port: 1514,
                facility: 19
            }
        );
        assert_eq!(p.sinks[0].display_target(), "tcp://[::1]:1514");
        let tls = one("name = \"s\"\nsyslog = \"tls://siem.example\"").unwrap();
        assert_eq!(tls.sinks[0].display_target(), "tls://siem.example:6514");
        for bad in [
            "syslog = \"http://x:1\"",
            "syslog = \"udp://x:1/path\"",
            "syslog = \"udp://x\"\nfacility = \"local9\"",
            "syslog = \"udp://x\"\nformat = \"ecs\"",
            "syslog = \"udp://x\"\nca = \"/ca.pem\"",
        ] {
            let e = one(&format!("name = \"s\"\n{bad}")).unwrap_err();
            assert_eq!(e.table, "sink", "{bad}");
        }
    }

    #[test]
    fn a_sink_names_exactly_one_target() {
        let e = one("name = \"x\"").unwrap_err();
        assert!(e.why.contains("exactly one"), "{e}");
        let e = one("name = \"x\"\nfile = \"/a\"\nwebhook = \"http://h/\"").unwrap_err();
        assert!(e.why.contains("exactly one"), "{e}");
        let e = one("file = \"/a\"").unwrap_err();
        assert_eq!(e.to_string(), "[[sink]] #1: `name` is missing");
        let e = one("name = \"x\"\nfile = \"/a\"\nformat = \"slack\"").unwrap_err();
        assert!(e.why.contains("json, ecs"), "{e}");
    }

    #[test]
    fn batch_is_for_json_and_ecs_webhooks() {
        let p =
            one("name = \"w\"\nwebhook = \"http://h/\"\nformat = \"ecs\"\nbatch = 200").unwrap();
        assert_eq!(p.sinks[0].batch, 200);
        assert!(p.describe().contains("batch 200"), "{}", p.describe());
        assert_eq!(
            one("name = \"w\"\nwebhook = \"http://h/\"").unwrap().sinks[0].batch,
            1
        );
        for (bad, want) in [
            ("webhook = \"http://h/\"\nbatch = 0", "expected 1 to 1000"),
            (
                "webhook = \"http://h/\"\nbatch = 1001",
                "expected 1 to 1000",
            ),
            (
                "webhook = \"http://h/\"\nformat = \"slack\"\nbatch = 5",
                "Slack",
            ),
            ("syslog = \"tcp://h:1\"\nbatch = 5", "for webhooks"),
            ("file = \"/a\"\nbatch = 5", "for webhooks"),
        ] {
            let e = one(&format!("name = \"s\"\n{bad}")).unwrap_err();
            assert!(e.why.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn rules_are_checked_against_sinks() {
        let sinks = [(sink_toml("name = \"a\"\nfile = \"/x\""), 0)];
        let rule = |t: &str| -> RuleFile { toml::from_str(t).unwrap() };
        let ok = plan(
            &sinks,
            &[(
                rule("name = \"r\"\nmin_risk = 25\non = [\"tools\"]\nsinks = [\"a\"]"),
                10,
            )],
        )
        .unwrap();
        assert_eq!(ok.rules[0].rearm_ns, 3_600_000_000_000);
        assert_eq!(ok.rules_for("a").len(), 1);
        for (bad, want) in [
            (
                "name = \"r\"\nsinks = [\"b\"]",
                "sink `b` is not defined (sinks: a)",
            ),
            ("name = \"r\"", "`sinks` is missing"),
            (
                "name = \"r\"\nsinks = [\"a\"]\nmin_risk = 101",
                "min_risk 101",
            ),
            (
                "name = \"r\"\nsinks = [\"a\"]\non = [\"ports\"]",
                "on `ports`",
            ),
            (
                "name = \"r\"\nsinks = [\"a\"]\nclassification = [\"evil\"]",
                "classification `evil`",
            ),
            (
                "name = \"r\"\nsinks = [\"a\"]\nrearm_minutes = -1",
                "rearm_minutes -1",
            ),
            ("name = \"r r\"\nsinks = [\"a\"]", "1-64 characters"),
        ] {
            let e = plan(&sinks, &[(rule(bad), 42)]).unwrap_err();
            assert!(e.why.contains(want), "{bad}: {e}");
            assert_eq!(e.at, 42);
        }
        let twice = plan(
            &sinks,
            &[
                (rule("name = \"r\"\nsinks = [\"a\"]"), 1),
                (rule("name = \"r\"\nsinks = [\"a\"]"), 2),
            ],
        )
        .unwrap_err();
        assert_eq!(twice.at, 2);
    }
}
