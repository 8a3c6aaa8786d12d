//! MaxMind-format databases for the tests, written by MaxMind's own writer library
//! (`MaxMind::DB::Writer`, Debian's libmaxmind-db-writer-perl) and read back with
//! `mmdblookup` (mmdb-bin) to check them independently of decnet's reader.

use std::{path::Path, process::Command};

/// One network of a test database and what it says.
pub struct Net<'a> {
    pub cidr: &'a str,
    pub asn: Option<u32>,
    pub as_org: Option<&'a str>,
    pub country: Option<&'a str>,
}

/// Panics with an install hint when the writer library is missing (as `require_tool`).
pub fn require_writer() {
    let ok = Command::new("perl")
        .args(["-MMaxMind::DB::Writer::Tree", "-e", "1"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "MaxMind::DB::Writer is not installed: `apt-get install libmaxmind-db-writer-perl` \
         (cargo xtask test does it as root)"
    );
}

/// Perl string literal of `s` (single quotes; the test's own text only).
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Writes a GeoLite2-like database (IPv6 tree, IPv4 under ::/96 and its aliases) holding
/// `nets` to `path`, atomically (a reload never sees half a file). Reserved ranges are kept:
/// the test addresses are private ones.
pub fn write(path: &Path, nets: &[Net<'_>]) {
    let mut inserts = String::new();
    for n in nets {
        let mut fields = Vec::new();
        if let Some(a) = n.asn {
            fields.push(format!("autonomous_system_number => {a}"));
        }
        if let Some(o) = n.as_org {
            fields.push(format!("autonomous_system_organization => {}", lit(o)));
        }
        if let Some(c) = n.country {
            fields.push(format!("country => {{ iso_code => {} }}", lit(c)));
        }
        inserts.push_str(&format!(
            "$tree->insert_network({}, {{ {} }});\n",
            lit(n.cidr),
            fields.join(", ")
        ));
    }
    let script = format!(
        r#"use strict; use warnings;
use MaxMind::DB::Writer::Tree;
my %types = (country => 'map', iso_code => 'utf8_string',
  autonomous_system_number => 'uint32', autonomous_system_organization => 'utf8_string');
my $tree = MaxMind::DB::Writer::Tree->new(
  ip_version => 6, record_size => 24, database_type => 'decnet-test',
  languages => ['en'], description => {{ en => 'decnet test database' }},
  map_key_type_callback => sub {{ $types{{ $_[0] }} }},
  alias_ipv6_to_ipv4 => 1, remove_reserved_networks => 0);
{inserts}open my $fh, '>:raw', $ARGV[0] or die "$ARGV[0]: $!";
$tree->write_tree($fh); close $fh or die;
"#
    );
    let tmp = path.with_extension("mmdb.tmp");
    let out = Command::new("perl")
        .arg("-e")
        .arg(&script)
        .arg(&tmp)
        .output()
        .expect("perl");
    assert!(
        out.status.success(),
        "MaxMind::DB::Writer: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&tmp, path).expect("rename the database into place");
}

/// `mmdblookup`'s view of `ip` in `path` (its text output; mmdb-bin).
pub fn lookup(path: &Path, ip: &str) -> String {
    let out = Command::new("mmdblookup")
        .arg("--file")
        .arg(path)
        .args(["--ip", ip])
        .output()
        .expect("mmdblookup (apt-get install mmdb-bin)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
