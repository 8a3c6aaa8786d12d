//! Where a source is: its country and autonomous system, from MaxMind-format databases
//! (`--geoip-db FILE`, repeatable): GeoLite2/GeoIP2 Country, City and ASN, or any mmdb with
//! the same record layout (`country.iso_code`, `registered_country.iso_code`,
//! `autonomous_system_number`, `autonomous_system_organization`).
//!
//! Several databases combine field by field, the first that knows a field wins, so a
//! Country and an ASN database together give all three. Without a database every field is
//! null: enrichment is never required.
//!
//! Like the known-scanner lists, the databases in force are process-wide ([`install`],
//! [`lookup`]) and swapped whole on SIGHUP. Each is read into memory rather than mapped: an
//! updater that rewrites the file in place would otherwise crash the daemon mid-lookup.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use maxminddb::Reader;
use serde::Deserialize;

/// What the databases say about one address; each field null when none knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Geo {
    pub asn: Option<u32>,
    pub as_org: Option<String>,
    /// ISO 3166-1 alpha-2, upper case.
    pub country: Option<String>,
}

impl Geo {
    fn is_complete(&self) -> bool {
        self.asn.is_some() && self.as_org.is_some() && self.country.is_some()
    }

    /// Fills what is still null from `other`.
    fn merge(&mut self, other: Geo) {
        self.asn = self.asn.or(other.asn);
        self.as_org = self.as_org.take().or(other.as_org);
        self.country = self.country.take().or(other.country);
    }
}

/// The part of a record decnet reads; every field optional, so one struct reads Country,
/// City, ASN and combined layouts alike.
#[derive(Deserialize, Default)]
struct Record<'a> {
    #[serde(borrow, default)]
    country: Option<Place<'a>>,
    #[serde(borrow, default)]
    registered_country: Option<Place<'a>>,
    #[serde(default)]
    autonomous_system_number: Option<u32>,
    #[serde(borrow, default)]
    autonomous_system_organization: Option<&'a str>,
}

#[derive(Deserialize, Default)]
struct Place<'a> {
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
}

/// A database that could not be opened, with its path.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {why}")]
pub struct GeoError {
    pub path: PathBuf,
    pub why: String,
}

/// The open databases, in the order given.
#[derive(Default)]
pub struct GeoDbs {
    dbs: Vec<Db>,
}

struct Db {
    path: PathBuf,
    reader: Reader<Vec<u8>>,
}

impl std::fmt::Debug for GeoDbs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.dbs.iter().map(|d| d.path.display().to_string()))
            .finish()
    }
}

impl GeoDbs {
    /// Opens every file; the first that is missing, unreadable or not a MaxMind DB is the
    /// error, and nothing is returned (a half-loaded set would change verdicts silently).
    pub fn open(files: &[PathBuf]) -> Result<Self, GeoError> {
        let mut dbs = Vec::with_capacity(files.len());
        for path in files {
            dbs.push(Db::open(path)?);
        }
        Ok(Self { dbs })
    }

    pub fn len(&self) -> usize {
        self.dbs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dbs.is_empty()
    }

    /// One line per database for the log: path, type and build date.
    pub fn describe(&self) -> Vec<String> {
        self.dbs
            .iter()
            .map(|d| {
                let m = d.reader.metadata();
                format!(
                    "{} ({}, built {})",
                    d.path.display(),
                    m.database_type,
                    crate::timefmt::rfc3339_ns(
                        i64::try_from(m.build_epoch)
                            .unwrap_or(0)
                            .saturating_mul(1_000_000_000)
                    )
                )
            })
            .collect()
    }

    /// What the databases know about `ip`. A record that does not decode is skipped (the
    /// next database may still know): a damaged entry costs its fields, not the profile.
    pub fn lookup(&self, ip: IpAddr) -> Geo {
        let mut geo = Geo::default();
        for db in &self.dbs {
            if geo.is_complete() {
                break;
            }
            geo.merge(db.lookup(ip));
        }
        geo
    }
}

impl Db {
    fn open(path: &Path) -> Result<Self, GeoError> {
        let err = |why: String| GeoError {
            path: path.to_owned(),
            why,
        };
        let reader = Reader::open_readfile(path).map_err(|e| err(e.to_string()))?;
        // A file whose metadata parses but whose tree or data section is broken fails
        // here, at start or reload, rather than at every lookup.
        let probe: IpAddr = if reader.metadata().ip_version == 6 {
            "::".parse().expect("literal")
        } else {
            "0.0.0.0".parse().expect("literal")
        };
        let hit = reader
            .lookup(probe)
            .map_err(|e| err(format!("not a usable MaxMind DB: {e}")))?;
        hit.decode::<Record<'_>>()
            .map_err(|e| err(format!("not a usable MaxMind DB: {e}")))?;
        Ok(Self {
            path: path.to_owned(),
            reader,
        })
    }

    fn lookup(&self, ip: IpAddr) -> Geo {
        // An IPv6 address in an IPv4-only database is an error from the reader, not a miss.
        if ip.is_ipv6() && self.reader.metadata().ip_version == 4 {
            return Geo::default();
        }
        let Ok(Some(r)) = self
            .reader
            .lookup(ip)
            .and_then(|h| h.decode::<Record<'_>>())
        else {
            return Geo::default();
        };
        let iso = |p: Option<Place<'_>>| {
            p.and_then(|p| p.iso_code)
                .filter(|c| c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()))
                .map(|c| c.to_ascii_uppercase())
        };
        Geo {
            asn: r.autonomous_system_number,
            // A database is trusted input, but bounded all the same: it lands in every row.
            as_org: r
                .autonomous_system_organization
                .map(|o| o.chars().take(128).collect()),
            // Where the address is, else where its block is registered.
            country: iso(r.country).or_else(|| iso(r.registered_country)),
        }
    }
}

/// The databases in force (none until [`install`]).
static CURRENT: RwLock<Option<Arc<GeoDbs>>> = RwLock::new(None);

/// Makes `dbs` the ones every rendering reads.
pub fn install(dbs: GeoDbs) {
    let mut cur = CURRENT.write().unwrap_or_else(|e| e.into_inner());
    *cur = Some(Arc::new(dbs));
}

/// What the databases in force say about `ip` (all null without databases or for a string
/// that is not an address).
pub fn lookup(ip: &str) -> Geo {
    let Ok(ip) = ip.parse::<IpAddr>() else {
        return Geo::default();
    };
    let cur = CURRENT.read().unwrap_or_else(|e| e.into_inner()).clone();
    cur.map(|d| d.lookup(ip)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_a_database_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("GeoLite2-ASN.mmdb");
        std::fs::write(&bad, b"not an mmdb at all").unwrap();
        let e = GeoDbs::open(std::slice::from_ref(&bad)).unwrap_err();
        assert_eq!(e.path, bad);
        assert!(e.to_string().contains("GeoLite2-ASN.mmdb"), "{e}");
        let missing = dir.path().join("absent.mmdb");
        let e = GeoDbs::open(&[missing]).unwrap_err();
        assert!(e.to_string().contains("absent.mmdb"), "{e}");
    }

    #[test]
    fn without_databases_every_field_is_null() {
        assert_eq!(
            GeoDbs::default().lookup("192.0.2.1".parse().unwrap()),
            Geo::default()
        );
        assert_eq!(lookup("not an address"), Geo::default());
    }

    #[test]
    fn databases_combine_field_by_field() {
        let mut a = Geo {
            asn: Some(64500),
            as_org: None,
            country: None,
        };
        a.merge(Geo {
            asn: Some(1),
            as_org: Some("Example".into()),
            country: Some("NL".into()),
        });
        assert_eq!(
            a.asn,
            Some(64500),
            "the first database wins a field it knows"
        );
        assert_eq!(a.as_org.as_deref(), Some("Example"));
        assert_eq!(a.country.as_deref(), Some("NL"));
    }
}
