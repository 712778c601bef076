//! virtio-net (virtio 1.1 §5.1): a zone's network interface, backed by a TAP
//! descriptor the daemon opened on the host side and handed to the jailed VMM.
//!
//! | module | concept |
//! |---|---|
//! | [`tap`] | the TAP descriptor: checked flags, vnet header size, offloads, vectored reads and writes |
//! | [`frame`] | one frame between a descriptor chain and the TAP, checked and bounded, in one `readv`/`writev` |
//! | [`rate`] | token buckets (bytes and frames per second) that bound what a zone may send and receive |
//! | [`device`] | the virtio device: type 1, receive and transmit queues, config space, the worker thread |
//!
//! Features offered: `VIRTIO_F_VERSION_1` (so every frame carries the 12-byte
//! `virtio_net_hdr_v1`, which the TAP passes to and from the host kernel as
//! is), `VIRTIO_RING_F_EVENT_IDX`, `VIRTIO_NET_F_MAC` (the MAC the daemon
//! assigned; the guest does not pick its own), `VIRTIO_NET_F_STATUS` (link
//! up), `VIRTIO_NET_F_MTU`, checksum offload both ways
//! (`VIRTIO_NET_F_CSUM`, `VIRTIO_NET_F_GUEST_CSUM`) and TCP segmentation
//! offload both ways (`HOST_TSO4/6`, `GUEST_TSO4/6`): the TAP is told at
//! activation which of them the driver accepted (`TUNSETOFFLOAD`). No
//! control queue, no multiqueue, no mergeable receive buffers (the driver
//! then posts buffers that hold a whole 64 KiB frame).
//!
//! Nothing the guest puts in a ring can panic the VMM or make it allocate:
//! a transmit chain must be device-readable only, hold at least the header
//! and at most [`MAX_FRAME_LEN`] bytes, and is dropped otherwise; a receive
//! chain must be device-writable only and hold at least the header, and
//! receives at most [`MAX_FRAME_LEN`] bytes. Frames move between the TAP
//! and guest memory in one system call, through a list of at most
//! [`MAX_PIECES`](crate::devices::virtio::guest_io::MAX_PIECES) buffers
//! allocated once per queue. What a frame says (addresses, offload fields)
//! is the host kernel's and the daemon's firewall's to judge, as for any
//! TAP: the VMM moves bytes, it does not route.

pub mod device;
pub mod frame;
pub mod rate;
pub mod tap;

pub use device::{Counters, DEVICE_TYPE, Net, NetConfig, NetError, Pass, receive, transmit};
pub use rate::{Bucket, Limiter, RateLimit};
pub use tap::{Tap, TapError};

/// Size of each queue.
pub const QUEUE_SIZE: u16 = crate::devices::virtio::guest_io::MAX_QUEUE_SIZE;
/// Index of the receive queue.
pub const RX_QUEUE: usize = 0;
/// Index of the transmit queue.
pub const TX_QUEUE: usize = 1;
/// Length of `struct virtio_net_hdr_v1` (with `num_buffers`), in front of every frame.
pub const VNET_HDR_LEN: usize = std::mem::size_of::<virtio_bindings::virtio_net::virtio_net_hdr_v1>();
/// Largest frame the device moves, header included: a 64 KiB TSO frame, its
/// Ethernet and VLAN headers, and the virtio header (as Firecracker bounds it).
pub const MAX_FRAME_LEN: usize = VNET_HDR_LEN + 65_550;
/// Default MTU offered to the driver.
pub const DEFAULT_MTU: u16 = 1500;
