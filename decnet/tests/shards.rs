//! Sharded analysts (`analyst_shards`) on a real PostgreSQL: the same rows profiled by one
//! analyst, by two shards with the campaign pass, and by one analyst and then two shards
//! give the same profiles and the same campaigns (up to how campaigns are numbered);
//! detections keep increasing ids; an unsharded analyst refuses sharded profiles.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::{Duration, Instant},
};

use decnet::{
    hub::Hub,
    profile::{ProfileStats, analyst},
    row::NewLog,
    store::{Batch, Store},
};

// Shared with the decnet-tests crate, where its items are its library's public API.
#[path = "../../tests/pg.rs"]
#[allow(unreachable_pub)]
mod pg;

const T0: i64 = 1_795_723_674_000_000_000;

fn syn(ip: &str, decky: &str, t_ns: i64, fields: String) -> NewLog {
    NewLog {
        ts: decnet::timefmt::rfc3339_ns(t_ns),
        decky: decky.into(),
        service: "tcp".into(),
        event_type: "tcp_syn".into(),
        attacker_ip: ip.into(),
        fields,
        trace_id: None,
        span_id: None,
        sensor: "s1".into(),
    }
}

/// Campaigns of both kinds across shards, and sources in none: a spoofed storm of 240
/// addresses from two packet templates; three nmap scanners splitting ports 1-1500 between
/// them, and two more far away in time (no campaign); ordinary hosts.
fn traffic() -> Vec<NewLog> {
    let mut logs = Vec::new();
    let templates = [
        r#""window":64240,"options":"M1460,N,W8,N,N,S","ip_id":4242,"ttl":113,"df":true"#,
        r#""window":1200,"options":"","ip_id":31337,"ttl":240,"df":false"#,
    ];
    for i in 0..240u32 {
        let ip = format!("172.{}.{}.{}", 16 + i % 8, (i / 8) % 250, 1 + i % 200);
        let tpl = templates[(i % 2) as usize];
        let t = T0 + i as i64 * 500_000_000;
        logs.push(syn(
            &ip,
            "web",
            t,
            format!(r#"{{"dst_port":443,"flags":"S",{tpl}}}"#),
        ));
    }
    let nmap = |port: u16| {
        format!(
            r#"{{"dst_port":{port},"flags":"S","window":1024,"ttl":{},"options":"M1460","df":false}}"#,
            40 + port % 7
        )
    };
    for (k, ip) in ["10.7.0.1", "10.7.0.2", "10.7.0.3"].iter().enumerate() {
        for i in 1..=500u16 {
            let t = T0 + i as i64 * 20_000_000;
            logs.push(syn(ip, "web", t, nmap(k as u16 * 500 + i)));
        }
    }
    for (k, ip) in ["10.9.0.1", "10.9.0.2"].iter().enumerate() {
        for i in 1..=100u16 {
            // Hours apart from each other: no campaign.
            let t = T0 + (k as i64 * 3 + 2) * 3_600_000_000_000 + i as i64 * 10_000_000;
            logs.push(syn(ip, "db", t, nmap(i)));
        }
    }
    for n in 0..40u32 {
        let ip = format!("198.51.100.{}", n + 1);
        logs.push(syn(
            &ip,
            "web",
            T0 + n as i64 * 7_000_000_000,
            format!(
                r#"{{"dst_port":22,"flags":"S","window":64240,"options":"M1460,S,T,N,W7","ts_val":{},"ip_id":{},"ttl":52,"df":true}}"#,
                1000 + n * 77_777,
                n * 3
            ),
        ));
    }
    logs.sort_by(|a, b| a.ts.cmp(&b.ts));
    logs
}

async fn ingest(url: &str, logs: &[NewLog]) -> Store {
    let store = Store::connect(url).await.unwrap();
    for chunk in logs.chunks(700) {
        store
            .commit_batch_copy(&Batch {
                logs: chunk.to_vec(),
                ..Batch::default()
            })
            .await
            .unwrap();
    }
    store
}

/// Runs the analysts of a process with `shards` until `done` says the profiles are
/// complete (bounded: 60 s), then shuts them down.
async fn analyse(pg: &pg::Postgres, db: &str, store: &Store, shards: u32, done: &str) {
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(analyst::run(
        store.clone(),
        Hub::default(),
        Arc::new(ProfileStats::default()),
        None,
        shards,
        shutdown,
    ));
    let t = Instant::now();
    loop {
        if pg.psql(db, done) == "t" {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{shards} shard(s): not done in 60 s: {}",
            pg.psql(db, "SELECT string_agg(key || '=' || value, ' ') FROM state")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("analysts stop")
        .unwrap();
}

/// Profiles, with each campaign id replaced by its lowest member (ids depend on the order
/// campaigns were found in); and the campaigns, as (lowest member, members).
fn canonical(pg: &pg::Postgres, db: &str) -> (String, BTreeMap<String, BTreeSet<String>>) {
    let mut campaigns: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut name: BTreeMap<String, String> = BTreeMap::new();
    for line in pg
        .psql(db, "SELECT id || ' ' || summary FROM campaigns ORDER BY id")
        .lines()
    {
        let (id, summary) = line.split_once(' ').unwrap();
        let c: serde_json::Value = serde_json::from_str(summary).unwrap();
        let members: BTreeSet<String> = pg
            .psql(
                db,
                &format!("SELECT ip FROM attackers WHERE campaign_id = {id} ORDER BY ip"),
            )
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(
            c["member_count"].as_u64(),
            Some(members.len() as u64),
            "{db}: campaign {id}'s summary and its members: {c}"
        );
        let first = members.first().cloned().expect("a campaign has members");
        name.insert(id.to_owned(), first.clone());
        campaigns.insert(first, members);
    }
    let mut rows = pg.psql(
        db,
        "SELECT ip || ' ' || event_count || ' ' || class || ' ' || risk_score || ' ' || \
         COALESCE(campaign_id::text, '-') FROM attackers ORDER BY ip",
    );
    for (id, first) in &name {
        rows = rows
            .lines()
            .map(|l| match l.rsplit_once(' ') {
                Some((head, c)) if c == id => format!("{head} campaign:{first}"),
                _ => l.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n");
    }
    (rows, campaigns)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_and_the_campaign_pass_profile_as_one_analyst_does() {
    let pg = pg::Postgres::start();
    let logs = traffic();
    let one = ingest(&pg.create_db("one"), &logs).await;
    let two = ingest(&pg.create_db("two"), &logs).await;
    let last: i64 = pg.psql("one", "SELECT max(id) FROM logs").parse().unwrap();

    analyse(
        &pg,
        "one",
        &one,
        1,
        &format!(
            "SELECT COALESCE((SELECT value FROM state WHERE key = 'attacker_worker_cursor'), '0') = '{last}'"
        ),
    )
    .await;
    // Done: the campaign pass has matched every row's source, each shard has applied
    // every move, and the pass has deleted them all (no shard holds the table back).
    let done = format!(
        "SELECT COALESCE((SELECT value FROM state WHERE key = 'campaign_cursor'), '0') = '{last}' \
         AND NOT EXISTS (SELECT 1 FROM campaign_moves)"
    );
    analyse(&pg, "two", &two, 2, &done).await;
    // Each shard's move cursor stands at the newest move written, its own or not.
    let newest = pg.psql("two", "SELECT last_value FROM campaign_moves_seq_seq");
    for k in 0..2 {
        assert_eq!(
            pg.psql(
                "two",
                &format!("SELECT value FROM state WHERE key = 'campaign_moves_cursor.{k}of2'")
            ),
            newest,
            "shard {k}'s move cursor"
        );
    }

    // Both shards had sources of their own.
    let split = pg.psql(
        "two",
        "SELECT string_agg(n::text, ',' ORDER BY s) FROM (SELECT (hashtext(ip) & 2147483647) % 2 AS s, \
         count(*) AS n FROM attackers GROUP BY 1) x",
    );
    assert!(split.split(',').count() == 2, "shards' sources: {split}");

    let (rows_one, campaigns_one) = canonical(&pg, "one");
    let (rows_two, campaigns_two) = canonical(&pg, "two");
    assert_eq!(
        campaigns_one.len(),
        3,
        "two storms and one split scan: {campaigns_one:?}"
    );
    assert_eq!(campaigns_two, campaigns_one, "campaigns");
    assert_eq!(rows_two, rows_one, "profiles");

    // The shards' detections took their ids at commit, one commit after another: 1 to N
    // with none missing or doubled (a reader's cursor past id K never misses one below),
    // and each body names its own; every source that joined a campaign was announced.
    let ids: Vec<i64> = pg
        .psql("two", "SELECT id FROM detections ORDER BY id")
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert!(!ids.is_empty());
    assert_eq!(ids, (1..=ids.len() as i64).collect::<Vec<_>>());
    let bodies_match: i64 = pg
        .psql(
            "two",
            "SELECT count(*) FROM detections WHERE (body::json->>'id')::bigint <> id",
        )
        .parse()
        .unwrap();
    assert_eq!(bodies_match, 0, "a detection whose body names another id");
    let joined = pg.psql(
        "two",
        "SELECT count(DISTINCT ip) FROM detections WHERE (body::jsonb->'changes') ? 'campaign'",
    );
    let members: usize = campaigns_two.values().map(BTreeSet::len).sum();
    assert_eq!(
        joined,
        members.to_string(),
        "sources announced joining a campaign"
    );

    // An unsharded fleet laid out anew: one analyst profiles the first half of the rows,
    // then two shards carry on from its cursor with the rest; the end is the same.
    let half = logs.len() / 2;
    let three = ingest(&pg.create_db("three"), &logs[..half]).await;
    let mid: i64 = pg
        .psql("three", "SELECT max(id) FROM logs")
        .parse()
        .unwrap();
    analyse(
        &pg,
        "three",
        &three,
        1,
        &format!(
            "SELECT COALESCE((SELECT value FROM state WHERE key = 'attacker_worker_cursor'), '0') = '{mid}'"
        ),
    )
    .await;
    for chunk in logs[half..].chunks(700) {
        three
            .commit_batch_copy(&Batch {
                logs: chunk.to_vec(),
                ..Batch::default()
            })
            .await
            .unwrap();
    }
    let end: i64 = pg
        .psql("three", "SELECT max(id) FROM logs")
        .parse()
        .unwrap();
    analyse(
        &pg,
        "three",
        &three,
        2,
        &done.replace(&format!("'{last}'"), &format!("'{end}'")),
    )
    .await;
    assert_eq!(
        pg.psql(
            "three",
            "SELECT value FROM state WHERE key = 'analyst_shards'"
        ),
        "2"
    );
    let (rows_three, campaigns_three) = canonical(&pg, "three");
    assert_eq!(
        campaigns_three, campaigns_one,
        "campaigns, sharded after unsharded"
    );
    assert_eq!(rows_three, rows_one, "profiles, sharded after unsharded");

    // Now laid out in two shards: an unsharded analyst refuses to profile (it would fold
    // the rows again from its own cursor) and returns by itself.
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let refused = tokio::time::timeout(
        Duration::from_secs(15),
        analyst::run(
            three.clone(),
            Hub::default(),
            Arc::new(ProfileStats::default()),
            None,
            1,
            shutdown,
        ),
    )
    .await;
    assert!(
        refused.is_ok(),
        "an unsharded analyst profiled sharded profiles"
    );
    assert_eq!(
        pg.psql(
            "three",
            "SELECT value FROM state WHERE key = 'attacker_worker_cursor'"
        ),
        mid.to_string(),
        "the unsharded cursor moved"
    );

    eprintln!(
        "shards: {} rows, {} sources, {} campaigns of {members} members; sources per shard {split}",
        logs.len(),
        rows_two.lines().count(),
        campaigns_two.len()
    );
}
