//! What the parse finds in a packet's headers (`Parsed`), apart from the parse itself so
//! that the maps holding it (`maps::PARSED`) need not import the parse, which reads frames.

/// The bound of `Parsed::l4_off` (IPv6 extension chains are cut there; an IPv4 header ends
/// far below), masked in before each use: read back from map memory, the offset is only as
/// bounded as the mask says, and the verifier accepts `off + len` against the packet's end
/// only below 64 KiB.
pub(crate) const L4_OFF_MAX: usize = 0x3fff;

/// Header facts gathered before the decision to emit.
///
/// 8-byte aligned, so the parse sets the addresses as aligned 4-byte words
/// (`Parsed::set_addr_word`) and a copy of one is two 8-byte moves. Kept in map memory,
/// not on the stack (`maps::PARSED`).
#[repr(C, align(8))]
pub(crate) struct Parsed {
    pub(crate) src: [u8; 16],
    pub(crate) dst: [u8; 16],
    pub(crate) family: u8,
    pub(crate) ttl: u8,
    pub(crate) tos: u8,
    pub(crate) df: u8,
    pub(crate) ip_id: u16,
    pub(crate) ip_len: u32,
    pub(crate) proto: u8,
    /// Offset of the transport header; 0 for a non-first fragment (no L4 header). At most
    /// [`L4_OFF_MAX`].
    pub(crate) l4_off: usize,
    /// Bytes from l4_off to the end of the IP packet.
    pub(crate) l4_len: u32,
    pub(crate) vlan_depth: u8,
    pub(crate) vlan_id: u16,
}
