//! virtio-vsock (virtio 1.1 §5.10) with Firecracker's hybrid host side: the
//! zone's vsock is a Unix socket path `U`.
//!
//! - guest → host: guest `connect(AF_VSOCK, cid 2, port P)` reaches a host
//!   process listening on the Unix socket `U_P`; nobody there → RST (refused).
//! - host → guest: a host process connects to `U`, writes `CONNECT <port>\n`,
//!   and reads `OK <host port>\n` once the guest accepted (closed otherwise).
//!
//! | module | concept |
//! |---|---|
//! | [`packet`] | header, operations, checks on guest packets (`virtio-vsock`'s `VsockPacket`) |
//! | [`connection`] | one connection's state machine and credit-based flow control |
//! | [`backend`] | the Unix sockets: listener on `U`, `CONNECT` handshakes, connecting to `U_P` |
//! | [`muxer`] | the connection table: routing, limits, what goes to the guest next |
//! | [`queues`] | the device's rx / tx / event virtqueues |
//! | [`worker`] | the zone's vsock thread (epoll loop) |
//! | [`device`] | the virtio device: type 19, config space = guest CID |
//!
//! Bounds (a guest can exhaust none of the VMM's memory): 64 KiB buffered per
//! connection (the credit advertised to the guest; a guest exceeding it is
//! reset), 64 connections per zone, 16 host handshakes in progress, 128 queued
//! RSTs; packets with bad headers, operations or lengths are answered with a
//! RST, never a panic.

pub mod backend;
pub mod connection;
pub mod device;
pub mod muxer;
pub mod packet;
pub mod queues;
pub mod worker;

pub use backend::{MAX_UDS_PATH, VsockError};
pub use device::{DEVICE_TYPE, Vsock};
pub use packet::HOST_CID;

/// Lowest CID a guest may have (0, 1 and 2 are the hypervisor, loopback and host).
pub const MIN_GUEST_CID: u32 = 3;
