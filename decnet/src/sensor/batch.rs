//! Reading a whole map (a hash, or the flow table's array) in a few syscalls.
//!
//! aya 0.14 walks a map with two syscalls per entry (next key, then lookup). The sweeps
//! read the flood guard's map, up to 65,536 sources, every second: under a storm of
//! spoofed addresses that walk was most of a replay's kernel pass (perf: half its time in
//! `map_lookup_elem` and `map_get_next_key`). `BPF_MAP_LOOKUP_BATCH` (Linux 5.6) copies
//! thousands of entries per call. Each bucket is copied under its lock, so an entry that
//! lives through the whole walk is always seen; one added or removed meanwhile may or may
//! not be, as with the per-entry walk. An array is copied slot by slot (its index is the
//! key and the resume token), each slot as one copy, racing the programs' stores to it.

use std::os::fd::{AsFd as _, AsRawFd as _};

use aya::maps::{IterableMap, MapData};

/// `BPF_MAP_LOOKUP_BATCH` in `enum bpf_cmd`.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// Entries asked for per call: more than any one bucket holds, so the kernel never
/// answers ENOSPC.
const CHUNK: usize = 4096;

/// Every (key, value) of a hash map or array (not per-CPU) whose entries are plain old data of
/// `K` and `V` (as aya's typed map checked when it was opened). Fails as the kernel does
/// (EINVAL before Linux 5.6): the caller then walks the map entry by entry.
pub(crate) fn entries<K: aya::Pod, V: aya::Pod, M: IterableMap<K, V>>(
    map: &M,
) -> std::io::Result<Vec<(K, V)>> {
    let data: &MapData = map.map();
    let fd = data.fd().as_fd().as_raw_fd();
    let (ks, vs) = (size_of::<K>(), size_of::<V>());
    let mut keys = vec![0u8; CHUNK * ks];
    let mut values = vec![0u8; CHUNK * vs];
    let mut out = Vec::new();
    // The kernel's resume token: a bucket index for hash maps, a slot index for arrays.
    let mut token: u32 = 0;
    let mut first = true;
    loop {
        let mut next: u32 = 0;
        // `union bpf_attr`'s batch member: in_batch, out_batch, keys, values, count and
        // map_fd, elem_flags, flags.
        let mut attr = [0u64; 7];
        attr[0] = if first { 0 } else { &raw const token as u64 };
        attr[1] = &raw mut next as u64;
        attr[2] = keys.as_mut_ptr() as u64;
        attr[3] = values.as_mut_ptr() as u64;
        attr[4] = CHUNK as u64 | ((fd as u32 as u64) << 32);
        // SAFETY: a BPF_MAP_LOOKUP_BATCH attr of the size passed; the kernel writes at most
        // `count` keys and values into buffers sized for CHUNK of each, and a u32 token.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                attr.as_mut_ptr(),
                size_of_val(&attr),
            )
        };
        let err = (r < 0).then(std::io::Error::last_os_error);
        let done = match &err {
            None => false,
            // The end of the map: the last entries came with it.
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => true,
            Some(_) => return Err(err.unwrap_or_else(std::io::Error::last_os_error)),
        };
        let n = (attr[4] as u32 as usize).min(CHUNK);
        for i in 0..n {
            // SAFETY: entry i of each buffer was written by the kernel with the map's key
            // and value sizes, which aya checked equal to K's and V's; plain data, read
            // unaligned from a byte buffer.
            let (k, v) = unsafe {
                (
                    keys.as_ptr().add(i * ks).cast::<K>().read_unaligned(),
                    values.as_ptr().add(i * vs).cast::<V>().read_unaligned(),
                )
            };
            out.push((k, v));
        }
        if done {
            return Ok(out);
        }
        token = next;
        first = false;
    }
}
