//! Reading a capture file, pcap or pcapng, one frame at a time, with pcap-parser.
//!
//! Each frame comes out with its number (1-based, as Wireshark and tcpdump count), its
//! capture time in Unix nanoseconds and its link type. Anything that stops the reading (a
//! record cut short, a block that does not parse, an interface a packet names but the file
//! never described) is an error naming the file and the frame, and the frames before it
//! have already been handed out.

use std::{
    fs::File,
    path::{Path, PathBuf},
};

use pcap_parser::{
    Linktype, PcapBlockOwned, PcapError, create_reader, pcapng::Block, traits::PcapReaderIterator,
};

/// Bytes of file read at a time. A frame larger than this grows the buffer (up to
/// [`MAX_FRAME`]); 64 KiB covers any Ethernet frame, jumbo or GRO-merged.
const READ_BUFFER: usize = 1 << 20;
/// The largest record accepted: beyond it, the file is corrupt rather than odd.
const MAX_FRAME: usize = 64 << 20;

/// Why a capture could not be read further.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a pcap or pcapng capture (unrecognised file header)")]
    NotACapture { path: PathBuf },
    #[error("{path}: empty file")]
    Empty { path: PathBuf },
    #[error("{path}: frame {frame}: {why}; the {read} frames before it were read")]
    Frame {
        path: PathBuf,
        /// The frame that could not be read (1-based).
        frame: u64,
        read: u64,
        why: String,
    },
}

/// One frame of a capture, valid until the next call to [`CaptureReader::next_frame`].
pub struct Frame<'a> {
    /// 1-based position in the file.
    pub number: u64,
    /// Capture time, ns since the Unix epoch.
    pub ts_ns: u64,
    pub link: Linktype,
    /// The captured bytes (fewer than on the wire when the capture's snaplen cut it).
    pub data: &'a [u8],
    /// The frame's length on the wire.
    pub wire_len: u32,
}

/// What a pcapng interface description says about its packets.
#[derive(Clone, Copy)]
struct Interface {
    link: Linktype,
    /// Timestamp units per second.
    units: u64,
    /// Seconds added to every timestamp.
    offset_s: i64,
}

/// A pcap or pcapng file, read frame by frame.
pub struct CaptureReader {
    path: PathBuf,
    reader: Box<dyn PcapReaderIterator + Send>,
    headers: Headers,
    frames: u64,
    /// The current frame's bytes (the reader's buffer moves on before the caller is done).
    buf: Vec<u8>,
    /// Bytes of the reader's buffer still held by the last block, consumed at the next call.
    pending: usize,
    size: u64,
}

/// What the file's header blocks said so far.
#[derive(Default)]
struct Headers {
    /// Legacy pcap: the file header's link type and timestamp units.
    legacy: Option<Interface>,
    /// pcapng: the interfaces of the current section, by id.
    interfaces: Vec<Interface>,
}

impl CaptureReader {
    pub fn open(path: &Path) -> Result<Self, CaptureError> {
        let open = |source| CaptureError::Open {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(open)?;
        let size = file.metadata().map_err(open)?.len();
        let reader = create_reader(READ_BUFFER, file).map_err(|e| match e {
            PcapError::Eof => CaptureError::Empty {
                path: path.to_owned(),
            },
            _ => CaptureError::NotACapture {
                path: path.to_owned(),
            },
        })?;
        Ok(Self {
            path: path.to_owned(),
            reader,
            headers: Headers::default(),
            frames: 0,
            buf: Vec::with_capacity(65536),
            pending: 0,
            size,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes of the file read so far.
    pub fn position(&self) -> u64 {
        self.reader.consumed() as u64
    }

    /// Frames handed out so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    fn error(&self, why: impl Into<String>) -> CaptureError {
        CaptureError::Frame {
            path: self.path.clone(),
            frame: self.frames + 1,
            read: self.frames,
            why: why.into(),
        }
    }

    /// The next frame, or None at the end of the file.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        if self.pending > 0 {
            self.reader.consume(self.pending);
            self.pending = 0;
        }
        loop {
            let found = match self.reader.next() {
                Ok((len, block)) => {
                    self.pending = len;
                    self.headers.take(block, &mut self.buf)
                }
                Err(PcapError::Eof) => return Ok(None),
                Err(PcapError::Incomplete(_)) => {
                    if self.reader.reader_exhausted() {
                        return Err(self.error(format!(
                            "the file ends inside a record ({} bytes left over)",
                            self.reader.data().len()
                        )));
                    }
                    if let Err(e) = self.reader.refill() {
                        let why = format!("read failed: {e:?}");
                        return Err(self.error(why));
                    }
                    continue;
                }
                Err(PcapError::BufferTooSmall) => {
                    let grown = self.reader.data().len().max(READ_BUFFER) * 2;
                    if grown > MAX_FRAME || !self.reader.grow(grown) {
                        return Err(self.error(format!(
                            "a record larger than {} MiB (corrupt length field)",
                            MAX_FRAME >> 20
                        )));
                    }
                    continue;
                }
                Err(PcapError::UnexpectedEof) => {
                    return Err(self.error("the file ends inside a record"));
                }
                Err(e) => {
                    let why = corrupt(&e);
                    return Err(self.error(why));
                }
            };
            match found.map_err(|why| self.error(why))? {
                Some((ts_ns, link, wire_len)) => {
                    self.frames += 1;
                    return Ok(Some(Frame {
                        number: self.frames,
                        ts_ns,
                        link,
                        data: &self.buf,
                        wire_len,
                    }));
                }
                None => {
                    // A header or a block without a packet: on to the next.
                    self.reader.consume(self.pending);
                    self.pending = 0;
                }
            }
        }
    }
}

impl Headers {
    /// Notes a header block, or copies a packet's bytes into `buf` and returns its time,
    /// link type and wire length.
    fn take(
        &mut self,
        block: PcapBlockOwned<'_>,
        buf: &mut Vec<u8>,
    ) -> Result<Option<(u64, Linktype, u32)>, String> {
        let mut copy = |data: &[u8], n: u32| {
            let n = (n as usize).min(data.len());
            buf.clear();
            buf.extend_from_slice(&data[..n]);
        };
        match block {
            PcapBlockOwned::LegacyHeader(h) => {
                self.legacy = Some(Interface {
                    link: h.network,
                    units: if h.is_nanosecond_precision() {
                        1_000_000_000
                    } else {
                        1_000_000
                    },
                    // `thiszone` is 0 in practice and libpcap ignores it: times are UTC.
                    offset_s: 0,
                });
                Ok(None)
            }
            PcapBlockOwned::Legacy(b) => {
                let Some(i) = self.legacy else {
                    return Err("a packet record before the file header".into());
                };
                let units = u128::from(b.ts_sec) * u128::from(i.units) + u128::from(b.ts_usec);
                copy(b.data, b.caplen);
                Ok(Some((ns_of(units, i), i.link, b.origlen)))
            }
            PcapBlockOwned::NG(Block::SectionHeader(_)) => {
                // Interface ids start again in each section.
                self.interfaces.clear();
                Ok(None)
            }
            PcapBlockOwned::NG(Block::InterfaceDescription(d)) => {
                let Some(units) = d.ts_resolution() else {
                    return Err(format!(
                        "interface {} has an impossible timestamp resolution ({})",
                        self.interfaces.len(),
                        d.if_tsresol
                    ));
                };
                self.interfaces.push(Interface {
                    link: d.linktype,
                    units,
                    offset_s: d.ts_offset(),
                });
                Ok(None)
            }
            PcapBlockOwned::NG(Block::EnhancedPacket(p)) => {
                let Some(i) = self.interfaces.get(p.if_id as usize).copied() else {
                    return Err(format!(
                        "a packet of interface {}, which the file never described",
                        p.if_id
                    ));
                };
                let units = (u128::from(p.ts_high) << 32) | u128::from(p.ts_low);
                copy(p.data, p.caplen);
                Ok(Some((ns_of(units, i), i.link, p.origlen)))
            }
            PcapBlockOwned::NG(Block::SimplePacket(p)) => {
                // No timestamp: the frame takes the epoch (0), as Wireshark shows it.
                let Some(i) = self.interfaces.first().copied() else {
                    return Err("a simple packet block before any interface".into());
                };
                copy(p.data, p.origlen);
                Ok(Some((ns_of(0, i), i.link, p.origlen)))
            }
            PcapBlockOwned::NG(_) => Ok(None),
        }
    }
}

/// What a parse error says, without the bytes it carries.
fn corrupt(e: &PcapError<&[u8]>) -> String {
    match e {
        PcapError::NomError(_, kind) => format!("corrupt record ({kind:?})"),
        PcapError::OwnedNomError(_, kind) => format!("corrupt record ({kind:?})"),
        PcapError::HeaderNotRecognized => "an unrecognised block header".into(),
        other => format!("corrupt record ({other:?})"),
    }
}

/// A timestamp in `i.units` per second (plus the interface's offset) as Unix ns; times
/// before the epoch become 0.
fn ns_of(units: u128, i: Interface) -> u64 {
    let ns = units * 1_000_000_000 / u128::from(i.units.max(1));
    let offset = i128::from(i.offset_s) * 1_000_000_000;
    (ns as i128 + offset).clamp(0, i128::from(u64::MAX)) as u64
}
