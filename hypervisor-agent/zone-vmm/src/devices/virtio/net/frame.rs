//! One frame between a descriptor chain and the TAP (virtio 1.1 §5.1.6).
//!
//! Transmit: the chain's device-readable buffers (the `virtio_net_hdr_v1`,
//! then the Ethernet frame) go to the TAP in one `writev`. Receive: one frame
//! from the TAP lands in the chain's device-writable buffers in one `readv`,
//! and the header's `num_buffers` is set to 1 (no mergeable buffers). Both
//! check the chain first and allocate nothing.

use std::io::{self, Write as _};

use virtio_queue::{DescriptorChain, Reader, Writer};
use vm_memory::GuestMemoryMmap;

use super::tap::Tap;
use super::{MAX_FRAME_LEN, VNET_HDR_LEN};
use crate::devices::virtio::guest_io::{GatherError, Segments};

/// Offset of `num_buffers` (le16) in the header.
const NUM_BUFFERS_OFFSET: usize = 10;

/// Why a chain was not used for a frame (for the debug log and counters).
#[derive(Debug, thiserror::Error)]
pub enum Dropped {
    /// The chain's descriptors are not in guest memory, or overflow.
    #[error("descriptor chain outside guest memory: {0}")]
    Memory(String),
    /// A buffer in the wrong direction (writable on transmit, readable on receive).
    #[error("{0} bytes in buffers of the wrong direction")]
    Direction(usize),
    /// Fewer bytes than the virtio header.
    #[error("{0} bytes is shorter than the {VNET_HDR_LEN}-byte virtio header")]
    Short(usize),
    /// A transmit frame larger than any the device moves.
    #[error("a {0}-byte frame is longer than {MAX_FRAME_LEN} bytes")]
    TooLong(usize),
    /// The buffers cannot be handed to the host kernel.
    #[error("buffers: {0}")]
    Buffers(#[from] GatherError),
    /// The TAP refused the frame (the host kernel found its header or its
    /// length invalid, or the interface is down).
    #[error("the TAP refused it: {0}")]
    Tap(io::Error),
}

/// Sends the frame in transmit `chain` to `tap`; returns its length (header included).
pub fn send(mem: &GuestMemoryMmap, chain: &DescriptorChain<&GuestMemoryMmap>, tap: &Tap, segs: &mut Segments) -> Result<usize, Dropped> {
    let writable = Writer::<()>::new(mem, chain.clone()).map_err(|e| Dropped::Memory(e.to_string()))?.available_bytes();
    if writable != 0 {
        return Err(Dropped::Direction(writable));
    }
    let len = Reader::<()>::new(mem, chain.clone()).map_err(|e| Dropped::Memory(e.to_string()))?.available_bytes();
    if len < VNET_HDR_LEN {
        return Err(Dropped::Short(len));
    }
    if len > MAX_FRAME_LEN {
        return Err(Dropped::TooLong(len));
    }
    let iov = segs.gather(mem, chain.clone().readable(), 0, len)?;
    let result = tap.write_vectored(iov);
    segs.clear();
    result.map_err(Dropped::Tap)
}

/// Receives one frame from `tap` into receive `chain`; returns its length
/// (header included) for the used ring, or `None` when the TAP has no frame
/// queued (the chain is then untouched and can be offered again).
pub fn receive(
    mem: &GuestMemoryMmap,
    chain: &DescriptorChain<&GuestMemoryMmap>,
    tap: &Tap,
    segs: &mut Segments,
) -> Result<Option<usize>, Dropped> {
    let readable = Reader::<()>::new(mem, chain.clone()).map_err(|e| Dropped::Memory(e.to_string()))?.available_bytes();
    if readable != 0 {
        return Err(Dropped::Direction(readable));
    }
    let mut out = Writer::<()>::new(mem, chain.clone()).map_err(|e| Dropped::Memory(e.to_string()))?;
    let room = out.available_bytes();
    if room < VNET_HDR_LEN {
        return Err(Dropped::Short(room));
    }
    let iov = segs.gather(mem, chain.clone().writable(), 0, room.min(MAX_FRAME_LEN))?;
    let result = tap.read_vectored(iov);
    segs.clear();
    let n = match result {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
        Err(e) => return Err(Dropped::Tap(e)),
    };
    if n < VNET_HDR_LEN {
        return Err(Dropped::Short(n));
    }
    let mut num_buffers = out.split_at(NUM_BUFFERS_OFFSET).map_err(|e| Dropped::Memory(e.to_string()))?;
    num_buffers.write_all(&1u16.to_le_bytes()).map_err(|e| Dropped::Memory(e.to_string()))?;
    Ok(Some(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::net::tap::tests::TestTap;
    use virtio_queue::desc::{RawDescriptor, split::Descriptor as SplitDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::{Queue, QueueOwnedT};
    use vm_memory::{Bytes, GuestAddress};

    const F_NEXT: u16 = 1;
    const F_WRITE: u16 = 2;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x4_0000)]).unwrap()
    }

    fn queue_with<'m>(mem: &'m GuestMemoryMmap, descs: &[(u64, u32, u16)]) -> (MockSplitQueue<'m, GuestMemoryMmap>, Queue) {
        let q = MockSplitQueue::create(mem, GuestAddress(0), 16);
        let n = descs.len();
        let raw: Vec<RawDescriptor> = descs
            .iter()
            .enumerate()
            .map(|(i, &(addr, len, flags))| {
                let next = if i + 1 < n { (i + 1) as u16 } else { 0 };
                let flags = if i + 1 < n { flags | F_NEXT } else { flags };
                RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
            })
            .collect();
        q.build_desc_chain(&raw).unwrap();
        let queue = q.create_queue().unwrap();
        (q, queue)
    }

    /// An Ethernet frame from `src` to broadcast, ethertype 0x88b5 (local experimental).
    fn eth_frame(src: [u8; 6], payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x88, 0xb5]);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn a_transmitted_frame_reaches_the_host_side_of_the_tap() {
        let tap = TestTap::new();
        let mem = mem();
        let frame = eth_frame(tap.guest_mac, b"from the zone");
        // Header and frame in two descriptors, the frame split across two more.
        mem.write_slice(&[0u8; VNET_HDR_LEN], GuestAddress(0x1_0000)).unwrap();
        mem.write_slice(&frame[..10], GuestAddress(0x2_0000)).unwrap();
        mem.write_slice(&frame[10..], GuestAddress(0x3_0000)).unwrap();
        let (_q, mut queue) = queue_with(
            &mem,
            &[(0x1_0000, VNET_HDR_LEN as u32, 0), (0x2_0000, 10, 0), (0x3_0000, (frame.len() - 10) as u32, 0)],
        );
        let chain = queue.iter(&mem).unwrap().next().unwrap();
        let mut segs = Segments::new();
        assert_eq!(send(&mem, &chain, &tap.tap, &mut segs).unwrap(), VNET_HDR_LEN + frame.len());
        assert_eq!(tap.host.receive(), frame);
    }

    #[test]
    fn a_frame_from_the_host_lands_in_the_receive_buffers_with_num_buffers_1() {
        let tap = TestTap::new();
        let mem = mem();
        mem.write_slice(&[0xaa; 64], GuestAddress(0x1_0000)).unwrap();
        let (_q, mut queue) = queue_with(&mem, &[(0x1_0000, 8, F_WRITE), (0x2_0000, 2048, F_WRITE)]);
        let chain = queue.iter(&mem).unwrap().next().unwrap();
        let mut segs = Segments::new();
        // Nothing queued yet: the chain is left alone.
        assert!(matches!(receive(&mem, &chain, &tap.tap, &mut segs), Ok(None)));
        let frame = eth_frame([2, 0, 0, 0, 0, 9], b"from the host");
        tap.host.send(&frame);
        let n = (0..200)
            .find_map(|_| match receive(&mem, &chain, &tap.tap, &mut segs).unwrap() {
                Some(n) => Some(n),
                None => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    None
                }
            })
            .expect("the frame sent on the host side reached the TAP");
        assert_eq!(n, VNET_HDR_LEN + frame.len());
        // The header spans both descriptors: 8 bytes, then 4 (num_buffers at offset 10).
        let mut hdr = [0u8; VNET_HDR_LEN];
        mem.read_slice(&mut hdr[..8], GuestAddress(0x1_0000)).unwrap();
        mem.read_slice(&mut hdr[8..], GuestAddress(0x2_0000)).unwrap();
        assert_eq!(&hdr[NUM_BUFFERS_OFFSET..], &[1, 0]);
        let mut got = vec![0u8; frame.len()];
        mem.read_slice(&mut got, GuestAddress(0x2_0000 + 4)).unwrap();
        assert_eq!(got, frame);
    }

    #[test]
    fn malformed_chains_are_dropped_without_touching_the_tap() {
        let tap = TestTap::new();
        let mem = mem();
        let mut segs = Segments::new();
        let first = |descs: &[(u64, u32, u16)]| {
            let (_q, mut queue) = queue_with(&mem, descs);
            queue.iter(&mem).unwrap().next().unwrap()
        };
        // Transmit: a writable buffer, a header cut short, a frame too long, memory outside.
        assert!(matches!(send(&mem, &first(&[(0x1_0000, 64, 0), (0x2_0000, 64, F_WRITE)]), &tap.tap, &mut segs), Err(Dropped::Direction(64))));
        assert!(matches!(send(&mem, &first(&[(0x1_0000, 11, 0)]), &tap.tap, &mut segs), Err(Dropped::Short(11))));
        let big = (MAX_FRAME_LEN / 2 + 1) as u32;
        assert!(matches!(send(&mem, &first(&[(0x0, big, 0), (0x0, big, 0)]), &tap.tap, &mut segs), Err(Dropped::TooLong(_))));
        assert!(matches!(send(&mem, &first(&[(0x3_ff00, 0x200, 0)]), &tap.tap, &mut segs), Err(Dropped::Memory(_))));
        // Receive: a readable buffer, room for less than the header.
        assert!(matches!(receive(&mem, &first(&[(0x1_0000, 64, 0), (0x2_0000, 64, F_WRITE)]), &tap.tap, &mut segs), Err(Dropped::Direction(64))));
        assert!(matches!(receive(&mem, &first(&[(0x1_0000, 4, F_WRITE)]), &tap.tap, &mut segs), Err(Dropped::Short(4))));
        assert!(tap.host.nothing_received(), "no malformed chain reached the host");
    }
}
