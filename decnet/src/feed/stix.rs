//! The STIX 2.1 bundle of a feed, built with the `stix2` crate (its builders check each
//! object and parse each pattern).
//!
//! Per source: an `ipv4-addr`/`ipv6-addr` (which `belongs_to_refs` its `autonomous-system`
//! when a GeoIP database knows it), an `indicator` (`[ipv4-addr:value = '...']`,
//! valid from its first sighting until the feed's expiry, confidence = risk score, labels
//! from class, classification, tools, campaign and country), an `observed-data` counting its events
//! and a `sighting` of the indicator by decnet. Per decnet campaign with a member in the
//! feed: a `campaign`, an `indicates` relationship from each member's indicator, and, when
//! its members share a known actor, a `threat-actor` the campaign is `attributed-to` (STIX
//! defines that relationship only from a campaign to a threat actor or intrusion set).
//!
//! Ids are deterministic (UUIDv5 of what they describe), so a consumer that pulls the feed
//! again updates the same objects instead of piling up new ones.

use std::collections::{BTreeMap, BTreeSet};

use stix2::{
    core::{bundle::Bundle, id::Identifier, stix_object::StixObject, timestamp::Timestamp},
    objects::{Campaign, Identity, Indicator, ObservedData, ThreatActor},
    observables::{AutonomousSystem, IPv4Address, IPv6Address},
    relationship::{Relationship, Sighting},
    vocab::IndicatorType,
};

use super::Entry;

/// Mixed into every id's hash, so decnet's ids are its own.
const NAMESPACE: uuid::Uuid = uuid::uuid!("3561727d-4e96-4dc5-99c5-edcc44be0f63");

/// A decnet campaign as the feed needs it: its id, summary times and kind.
#[derive(Debug, Clone, PartialEq)]
pub struct CampaignInfo {
    pub id: i64,
    pub first_seen: String,
    pub last_seen: String,
    /// `tool` or `spoofed_storm`.
    pub kind: String,
    pub tools: Vec<String>,
}

impl CampaignInfo {
    /// From the stored campaign summary (None when it does not parse).
    pub fn from_summary(json: &str) -> Option<Self> {
        let v: serde_json::Value = serde_json::from_str(json).ok()?;
        Some(Self {
            id: v["id"].as_i64()?,
            first_seen: v["first_seen"].as_str()?.to_owned(),
            last_seen: v["last_seen"].as_str()?.to_owned(),
            kind: v["kind"].as_str().unwrap_or("tool").to_owned(),
            tools: v["tools"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }
}

/// A stable id for what `name` describes. STIX 2.1 wants UUIDv4 ids on domain and
/// relationship objects (the official validator's check 103); a UUIDv4 is 122 bits plus the
/// version and variant, so the bits come from a hash instead of a random source: the same
/// source gets the same id on every pull, and consumers update it rather than add another.
fn id(kind: &str, name: &str) -> Result<Identifier, stix2::core::error::Error> {
    use sha2::Digest as _;
    let digest = sha2::Sha256::new()
        .chain_update(NAMESPACE.as_bytes())
        .chain_update(kind.as_bytes())
        .chain_update([0])
        .chain_update(name.as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Identifier::with_uuid(kind, uuid::Builder::from_random_bytes(bytes).into_uuid())
}

/// The bundle as JSON. stix2 0.1 writes `"external_references": []` on every object, which
/// STIX forbids (an empty list must be left out; the validator rejects it): drop those.
pub fn to_json(b: &Bundle) -> Result<String, serde_json::Error> {
    let mut v = serde_json::to_value(b)?;
    if let Some(objects) = v.get_mut("objects").and_then(|o| o.as_array_mut()) {
        for o in objects {
            if let Some(m) = o.as_object_mut() {
                m.retain(|_, val| !matches!(val, serde_json::Value::Array(a) if a.is_empty()));
            }
        }
    }
    serde_json::to_string(&v)
}

/// A timestamp from RFC 3339 (millisecond precision, as STIX writes it).
fn ts(rfc3339: &str) -> Timestamp {
    let ns = crate::timefmt::parse_rfc3339_ns(rfc3339).unwrap_or(0);
    Timestamp::from_unix_millis(ns / 1_000_000).unwrap_or_else(Timestamp::now)
}

/// The bundle of `entries` (and the `campaigns` they belong to).
pub fn bundle(
    entries: &[Entry],
    campaigns: &[CampaignInfo],
) -> Result<Bundle, stix2::core::error::Error> {
    let mut objects: Vec<StixObject> = Vec::new();
    let mut decnet = Identity::builder()
        .name("decnet")
        .description("decnet deception sensor: every source here probed a decoy")
        .identity_class(stix2::vocab::IdentityClass::System)
        .build()?;
    decnet.id = id("identity", "decnet")?;
    let decnet_id = decnet.id.clone();
    objects.push(decnet.into());
    let mut members: BTreeMap<i64, Vec<(Identifier, Option<String>)>> = BTreeMap::new();
    let mut seen_as: std::collections::HashSet<Identifier> = Default::default();
    for e in entries {
        let v6 = e.ip.contains(':');
        // The address belongs to its autonomous system, when a GeoIP database knows it.
        let asys = e
            .asn
            .map(|n| match &e.as_org {
                Some(org) => AutonomousSystem::with_name(n, org.clone()),
                None => AutonomousSystem::new(n),
            })
            .transpose()?;
        let (addr_id, addr): (Identifier, StixObject) = if v6 {
            let mut a = IPv6Address::new(e.ip.clone())?;
            if let Some(s) = &asys {
                a.add_belongs_to_ref(s.id.clone())?;
            }
            (a.id.clone(), a.into())
        } else {
            let mut a = IPv4Address::new(e.ip.clone())?;
            if let Some(s) = &asys {
                a.add_belongs_to_ref(s.id.clone())?;
            }
            (a.id.clone(), a.into())
        };
        let asys_id = asys.as_ref().map(|s| s.id.clone());
        if let Some(s) = asys {
            // One object per AS, however many of its addresses are in the feed.
            if seen_as.insert(s.id.clone()) {
                objects.push(s.into());
            }
        }
        objects.push(addr);
        let (first, last) = (ts(&e.first_seen), ts(&e.last_seen));
        let mut labels = vec![
            format!("class:{}", e.class),
            format!("classification:{}", e.classification),
        ];
        labels.extend(e.tools.iter().map(|t| format!("tool:{t}")));
        if let Some(c) = e.campaign_id {
            labels.push(format!("campaign:{c}"));
        }
        if let Some(c) = &e.country {
            labels.push(format!("country:{c}"));
        }
        let mut b = Indicator::builder()
            .name(format!("decnet: {} ({})", e.ip, e.class))
            .description(format!(
                "{} probed decnet decoys ({}); {} events; risk {} ({})",
                e.ip,
                e.deckies.join(", "),
                e.event_count,
                e.risk.score,
                e.risk.band
            ))
            .indicator_type(if e.classification == "malicious" {
                IndicatorType::MaliciousActivity
            } else {
                IndicatorType::AnomalousActivity
            })
            .pattern(format!(
                "[{}:value = '{}']",
                if v6 { "ipv6-addr" } else { "ipv4-addr" },
                e.ip
            ))
            .pattern_type(stix2::vocab::PatternType::Stix)
            .valid_from(first)
            .created_by_ref(decnet_id.clone())
            .confidence(e.risk.score.clamp(0, 100) as u8);
        let until = ts(&e.expires);
        if until.datetime() > first.datetime() {
            b = b.valid_until(until);
        }
        for l in labels {
            b = b.label(l);
        }
        let mut ind = b.build()?;
        ind.id = id("indicator", &e.ip)?;
        ind.common.created = first;
        ind.common.modified = last;
        let ind_id = ind.id.clone();
        objects.push(ind.into());
        let mut od = ObservedData::builder()
            .first_observed(first)
            .last_observed(last)
            .number_observed(e.event_count.max(1))
            .object_ref(addr_id)
            .created_by_ref(decnet_id.clone());
        if let Some(a) = asys_id {
            od = od.object_ref(a);
        }
        let mut od = od.build()?;
        od.id = id("observed-data", &e.ip)?;
        od.common.created = first;
        od.common.modified = last;
        let od_id = od.id.clone();
        objects.push(od.into());
        let mut s = Sighting::builder()
            .sighting_of_ref(ind_id.clone())
            .observed_data_ref(od_id)
            .where_sighted_ref(decnet_id.clone())
            .first_seen(first)
            .last_seen(last)
            .count(e.event_count.max(1))
            .created_by_ref(decnet_id.clone())
            .build()?;
        s.id = id("sighting", &e.ip)?;
        s.common.created = first;
        s.common.modified = last;
        objects.push(s.into());
        if let Some(c) = e.campaign_id {
            members
                .entry(c)
                .or_default()
                .push((ind_id, e.actor.clone()));
        }
    }
    for c in campaigns {
        let Some(inds) = members.get(&c.id) else {
            continue;
        };
        let mut camp = Campaign::builder()
            .name(format!("decnet campaign {}", c.id))
            .description(match c.kind.as_str() {
                "spoofed_storm" => {
                    "a spoofed-source storm: many addresses, one packet template".to_owned()
                }
                _ => format!(
                    "sources sharing tools and TCP fingerprint ({})",
                    c.tools.join(", ")
                ),
            })
            .first_seen(ts(&c.first_seen))
            .last_seen(ts(&c.last_seen))
            .created_by_ref(decnet_id.clone())
            .build()?;
        camp.id = id("campaign", &c.id.to_string())?;
        let camp_id = camp.id.clone();
        objects.push(camp.into());
        for (ind_id, _) in inds {
            let mut r = Relationship::indicates(ind_id.clone(), camp_id.clone())?;
            r.id = id("relationship", &format!("{ind_id} indicates {camp_id}"))?;
            objects.push(r.into());
        }
        let actors: BTreeSet<&str> = inds.iter().filter_map(|(_, a)| a.as_deref()).collect();
        if actors.len() == 1 && inds.iter().all(|(_, a)| a.is_some()) {
            let name = actors.into_iter().next().unwrap_or_default();
            let mut actor = ThreatActor::builder().name(name).build()?;
            actor.id = id("threat-actor", name)?;
            let actor_id = actor.id.clone();
            objects.push(actor.into());
            let mut r = Relationship::attributed_to(camp_id.clone(), actor_id.clone())?;
            r.id = id(
                "relationship",
                &format!("{camp_id} attributed-to {actor_id}"),
            )?;
            objects.push(r.into());
        }
    }
    let mut b = Bundle::from_objects(objects);
    b.id = Identifier::bundle(uuid::Uuid::new_v4());
    Ok(b)
}
