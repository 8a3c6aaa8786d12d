//! A TCP/IP stack's marks: the TTL a packet started with and the p0f-style fingerprint of a
//! SYN or stealth probe.

/// The TTL a packet started with: the next of 32/64/128/255 at or above what arrived.
pub(crate) fn initial_ttl(ttl: u8) -> u8 {
    match ttl {
        0..=32 => 32,
        33..=64 => 64,
        65..=128 => 128,
        _ => 255,
    }
}

/// Whether a SYN's option layout (`M1460,S,T,N,W7`) is one a TCP stack sends: it offers
/// SACK, window scaling or timestamps, as every stack has since about 2000. Raw-packet
/// scanners send none of them, or MSS alone.
pub(crate) fn stack_options(layout: &str) -> bool {
    layout
        .split(',')
        .any(|o| o == "S" || o == "T" || o.starts_with('W'))
}

/// A SYN as a packet template: `w<window>|<option layout>|p<port>|t<initial TTL>|<constant>`,
/// what the sources of a spoofed storm share. The constant is what tells a replayed
/// template from many hosts' own stacks, which share window and options by the million:
/// - with a timestamp option, its value (a stack draws a fresh one per connection);
/// - else, for options a stack sends (SACK or window scaling), the IP ID;
/// - else nothing: a crafted SYN (no options, or MSS alone) is a template by itself.
///
/// None when a field is missing (another writer's record).
pub(crate) fn syn_template(
    window: Option<u16>,
    layout: &str,
    port: Option<u16>,
    ttl: Option<u8>,
    ts_val: Option<u32>,
    ip_id: Option<u16>,
) -> Option<String> {
    let stack = stack_options(layout);
    let constant = match (ts_val, ip_id) {
        (Some(ts), _) => format!("ts{ts}"),
        (None, Some(id)) if stack => format!("id{id}"),
        (None, None) if stack => return None,
        (None, _) => String::new(),
    };
    Some(format!(
        "w{}|{layout}|p{}|t{}|{constant}",
        window?,
        port?,
        initial_ttl(ttl?)
    ))
}

/// The header fields a TCP fingerprint is made of.
pub struct FpInput<'a> {
    pub ttl: u8,
    pub window: u16,
    /// Option layout (`M1460,S,T,N,W7`).
    pub layout: &'a str,
    /// Flag letters (`FSRPAUECN` order).
    pub flags: &'a str,
    pub df: bool,
    pub ip_id: Option<u16>,
    pub ack: u32,
    pub urg_ptr: u16,
    pub v6: bool,
}

/// `ittl:window:option layout:quirks`, p0f in spirit (the OS guess is [`super::os`]).
/// Quirks: `df`, `id0` (IP ID zero), `ack+` (non-zero ack on a SYN), `uptr+` (urgent pointer
/// without URG), `ecn` (ECE/CWR on the SYN). The collector writes it into `tcp_syn` and
/// `tcp_probe` records; the ingester rebuilds it from a `tcp_syn` row's fields.
pub fn fingerprint(i: &FpInput<'_>) -> String {
    let mut out = Vec::with_capacity(48);
    write_fingerprint(&mut out, i);
    String::from_utf8(out).unwrap_or_default()
}

/// [`fingerprint`] appended to `out` without an allocation of its own (the collector writes
/// one per SYN).
pub(crate) fn write_fingerprint(out: &mut Vec<u8>, i: &FpInput<'_>) {
    let mut b = itoa::Buffer::new();
    out.extend_from_slice(b.format(initial_ttl(i.ttl)).as_bytes());
    out.push(b':');
    out.extend_from_slice(b.format(i.window).as_bytes());
    out.push(b':');
    out.extend_from_slice(i.layout.as_bytes());
    out.push(b':');
    let quirks = [
        (i.df, "df"),
        (i.ip_id == Some(0) && !i.v6, "id0"),
        (i.ack != 0, "ack+"),
        (i.urg_ptr != 0 && !i.flags.contains('U'), "uptr+"),
        (i.flags.contains('E') || i.flags.contains('C'), "ecn"),
    ];
    let mut first = true;
    for (on, name) in quirks {
        if on {
            if !first {
                out.push(b',');
            }
            out.extend_from_slice(name.as_bytes());
            first = false;
        }
    }
}
