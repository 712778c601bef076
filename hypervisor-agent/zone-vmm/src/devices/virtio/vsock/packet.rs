//! Vsock packets (virtio 1.1 §5.10.6): the header, the operations, the checks
//! every packet from the guest passes, and the headers the host writes into
//! the guest's RX buffers.
//!
//! Parsing a descriptor chain into header + payload is `virtio-vsock`'s
//! [`VsockPacket`]; this module copies the header out once ([`Header`], so
//! later checks cannot be raced by the guest rewriting its memory) and decides
//! what a packet means ([`check`]).

use virtio_queue::DescriptorChain;
use virtio_vsock::packet::{PKT_HEADER_SIZE, VsockPacket};
use vm_memory::bitmap::BitmapSlice;
use vm_memory::{Bytes, GuestMemoryMmap};

/// The host's CID: what the guest connects to.
pub const HOST_CID: u64 = 2;
/// `VIRTIO_VSOCK_TYPE_STREAM`, the only socket type offered (no SEQPACKET feature).
pub const TYPE_STREAM: u16 = 1;
/// `VIRTIO_VSOCK_SHUTDOWN_RCV`: the sender will receive no more data.
pub const SHUTDOWN_RCV: u32 = 1;
/// `VIRTIO_VSOCK_SHUTDOWN_SEND`: the sender will send no more data.
pub const SHUTDOWN_SEND: u32 = 2;
/// Largest payload of one packet, in either direction (Linux's
/// `VIRTIO_VSOCK_MAX_PKT_BUF_SIZE`). Longer TX packets are rejected.
pub const MAX_PKT_DATA: u32 = 64 * 1024;
/// Size of the packet header.
pub const HEADER_SIZE: usize = PKT_HEADER_SIZE;
/// Size of the packet header, as a used-buffer length.
pub const HEADER_LEN: u32 = 44;
const _: () = assert!(HEADER_SIZE == HEADER_LEN as usize);

/// A byte count that fits a packet (at most 64 KiB + header) as a u32.
pub fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Packet operations (`VIRTIO_VSOCK_OP_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Connection request.
    Request = 1,
    /// Connection accepted.
    Response = 2,
    /// Connection reset (refused, aborted, or final close).
    Rst = 3,
    /// No more sending and/or receiving (flags).
    Shutdown = 4,
    /// Data.
    Rw = 5,
    /// The sender's buffer space changed.
    CreditUpdate = 6,
    /// Asks the receiver for a credit update.
    CreditRequest = 7,
}

impl Op {
    /// The operation with code `code`, if it is one.
    pub fn from_code(code: u16) -> Option<Self> {
        Some(match code {
            1 => Self::Request,
            2 => Self::Response,
            3 => Self::Rst,
            4 => Self::Shutdown,
            5 => Self::Rw,
            6 => Self::CreditUpdate,
            7 => Self::CreditRequest,
            _ => return None,
        })
    }
}

/// A packet header, copied out of guest memory (or built by the host).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    /// Source CID.
    pub src_cid: u64,
    /// Destination CID.
    pub dst_cid: u64,
    /// Source port.
    pub src_port: u32,
    /// Destination port.
    pub dst_port: u32,
    /// Payload length.
    pub len: u32,
    /// Socket type.
    pub type_: u16,
    /// Operation code.
    pub op: u16,
    /// Operation flags (SHUTDOWN).
    pub flags: u32,
    /// The sender's receive buffer size.
    pub buf_alloc: u32,
    /// Bytes the sender has consumed from its receive buffer, ever.
    pub fwd_cnt: u32,
}

impl Header {
    /// The header of a parsed packet (the copy `VsockPacket` made when parsing).
    pub fn of<B: BitmapSlice>(pkt: &VsockPacket<'_, B>) -> Self {
        Self {
            src_cid: pkt.src_cid(),
            dst_cid: pkt.dst_cid(),
            src_port: pkt.src_port(),
            dst_port: pkt.dst_port(),
            len: pkt.len(),
            type_: pkt.type_(),
            op: pkt.op(),
            flags: pkt.flags(),
            buf_alloc: pkt.buf_alloc(),
            fwd_cnt: pkt.fwd_cnt(),
        }
    }

    /// Decodes the little-endian wire layout.
    pub fn from_bytes(b: &[u8; HEADER_SIZE]) -> Self {
        let u64_at = |o: usize| u64::from_le_bytes(std::array::from_fn(|i| b[o + i]));
        let u32_at = |o: usize| u32::from_le_bytes(std::array::from_fn(|i| b[o + i]));
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        Self {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            type_: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }

    /// The little-endian wire layout.
    pub fn to_bytes(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    /// A host → guest header on the connection between host port `host_port`
    /// and guest port `guest_port`.
    pub fn to_guest(guest_cid: u64, host_port: u32, guest_port: u32, op: Op) -> Self {
        Self {
            src_cid: HOST_CID,
            dst_cid: guest_cid,
            src_port: host_port,
            dst_port: guest_port,
            type_: TYPE_STREAM,
            op: op as u16,
            ..Self::default()
        }
    }

    /// The RST that answers this guest packet.
    pub fn reset_reply(&self, guest_cid: u64) -> Self {
        Self::to_guest(guest_cid, self.dst_port, self.src_port, Op::Rst)
    }
}

/// Why a guest packet is not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Dropped without an answer (spoofed source, or itself a RST).
    Drop(&'static str),
    /// Answered with a RST.
    Reset(&'static str),
}

/// Checks a guest packet's header (§5.10.6): it must come from the guest's own
/// CID, go to the host, be a stream packet with a known operation, and carry a
/// payload only if it is RW (at most [`MAX_PKT_DATA`] bytes). Returns the
/// operation, or how to reject the packet.
pub fn check(hdr: &Header, guest_cid: u64) -> Result<Op, Reject> {
    if hdr.src_cid != guest_cid {
        return Err(Reject::Drop("source CID is not the guest's"));
    }
    let op = Op::from_code(hdr.op);
    if op == Some(Op::Rst) {
        // Never answer a RST with a RST, whatever else is wrong with it.
        return if hdr.dst_cid == HOST_CID && hdr.type_ == TYPE_STREAM {
            Ok(Op::Rst)
        } else {
            Err(Reject::Drop("RST that is not for a host stream"))
        };
    }
    if hdr.dst_cid != HOST_CID {
        return Err(Reject::Reset("destination CID is not the host"));
    }
    if hdr.type_ != TYPE_STREAM {
        return Err(Reject::Reset("socket type is not stream"));
    }
    let Some(op) = op else {
        return Err(Reject::Reset("unknown operation"));
    };
    if op != Op::Rw && hdr.len != 0 {
        return Err(Reject::Reset("payload on a control packet"));
    }
    if hdr.len > MAX_PKT_DATA {
        return Err(Reject::Reset("payload larger than 64 KiB"));
    }
    Ok(op)
}

/// The header at the head of a TX chain that `VsockPacket` refused to parse
/// (for example a payload descriptor that is missing or too short), read
/// straight from guest memory so that the guest can be answered with a RST.
/// `None` when even the header cannot be read.
pub fn raw_header(mem: &GuestMemoryMmap, mut chain: DescriptorChain<&GuestMemoryMmap>) -> Option<Header> {
    let head = chain.next()?;
    if head.is_write_only() || (head.len() as usize) < HEADER_SIZE {
        return None;
    }
    let mut bytes = [0u8; HEADER_SIZE];
    mem.read_slice(&mut bytes, head.addr()).ok()?;
    Some(Header::from_bytes(&bytes))
}

/// Writes `hdr` into an RX packet's header buffer.
pub fn write_header<B: BitmapSlice>(
    pkt: &mut VsockPacket<'_, B>,
    hdr: &Header,
) -> Result<(), virtio_vsock::packet::Error> {
    pkt.set_header_from_raw(&hdr.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUEST: u64 = 3;

    fn guest_pkt(op: u16) -> Header {
        Header {
            src_cid: GUEST,
            dst_cid: HOST_CID,
            src_port: 5000,
            dst_port: 1024,
            type_: TYPE_STREAM,
            op,
            ..Header::default()
        }
    }

    #[test]
    fn wire_layout_round_trips() {
        let h = Header {
            src_cid: 0x0102_0304_0506_0708,
            dst_cid: 2,
            src_port: 9,
            dst_port: 10,
            len: 11,
            type_: 1,
            op: 5,
            flags: 3,
            buf_alloc: 65536,
            fwd_cnt: 77,
        };
        let b = h.to_bytes();
        assert_eq!(b[0], 0x08, "little endian");
        assert_eq!(&b[28..32], &[1, 0, 5, 0]);
        assert_eq!(Header::from_bytes(&b), h);
        assert_eq!(HEADER_SIZE, 44);
    }

    #[test]
    fn valid_packets_pass() {
        for code in 1..=7 {
            assert_eq!(check(&guest_pkt(code), GUEST).map(|o| o as u16), Ok(code));
        }
        let mut rw = guest_pkt(Op::Rw as u16);
        rw.len = MAX_PKT_DATA;
        assert_eq!(check(&rw, GUEST), Ok(Op::Rw));
    }

    #[test]
    fn bad_packets_are_rejected() {
        let mut h = guest_pkt(Op::Request as u16);
        h.src_cid = 4;
        assert!(matches!(check(&h, GUEST), Err(Reject::Drop(_))), "spoofed source");
        let mut h = guest_pkt(Op::Request as u16);
        h.dst_cid = 7;
        assert!(matches!(check(&h, GUEST), Err(Reject::Reset(_))), "another guest");
        let mut h = guest_pkt(Op::Request as u16);
        h.type_ = 2;
        assert!(matches!(check(&h, GUEST), Err(Reject::Reset(_))), "seqpacket");
        for code in [0, 8, 0xffff] {
            assert!(matches!(check(&guest_pkt(code), GUEST), Err(Reject::Reset(_))), "op {code}");
        }
        let mut h = guest_pkt(Op::Request as u16);
        h.len = 1;
        assert!(matches!(check(&h, GUEST), Err(Reject::Reset(_))), "payload on REQUEST");
        let mut h = guest_pkt(Op::Rw as u16);
        h.len = MAX_PKT_DATA + 1;
        assert!(matches!(check(&h, GUEST), Err(Reject::Reset(_))), "oversized");
        let mut h = guest_pkt(Op::Rst as u16);
        h.dst_cid = 9;
        assert!(matches!(check(&h, GUEST), Err(Reject::Drop(_))), "a RST is never answered");
    }

    #[test]
    fn reset_reply_swaps_the_ports() {
        let r = guest_pkt(Op::Request as u16).reset_reply(GUEST);
        assert_eq!((r.src_cid, r.dst_cid, r.src_port, r.dst_port, r.op), (HOST_CID, GUEST, 1024, 5000, Op::Rst as u16));
    }
}
