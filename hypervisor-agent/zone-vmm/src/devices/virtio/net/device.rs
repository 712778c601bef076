//! The virtio-net device: type 1, a receive and a transmit queue, the
//! configuration space `mac` (6 bytes), `status` (le16), `max_virtqueue_pairs`
//! (le16), `mtu` (le16) (§5.1.4).
//!
//! Creating a [`Net`] starts its worker thread (seccomp class `net`: epoll,
//! vectored reads and writes of the TAP, `TUNSETOFFLOAD`, timers for the rate
//! limits). The worker waits on the TAP (edge-triggered: a new frame wakes
//! it), on both queues' ioeventfds and on one timer per direction, and moves
//! frames until the TAP is empty, the guest has no receive buffers, or a
//! rate limit says wait.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_TSO4,
    VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MTU, VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP,
};
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::timerfd::TimerFd;

use super::frame;
use super::rate::{BucketError, Limiter, RateLimit};
use super::tap::Tap;
use super::{QUEUE_SIZE, RX_QUEUE, TX_QUEUE};
use crate::devices::virtio::device_worker::{Control, DeviceWorker};
use crate::devices::virtio::guest_io::Segments;
use crate::devices::virtio::{
    ActivateError, INT_USED_RING, Interrupt, VIRTIO_F_VERSION_1, VirtioDevice, next_chain, read_config_bytes,
};

/// Virtio device ID of a network device.
pub const DEVICE_TYPE: u32 = virtio_bindings::virtio_ids::VIRTIO_ID_NET;

const STOP_TOKEN: u64 = 0;
const CONTROL_TOKEN: u64 = 1;
const RX_QUEUE_TOKEN: u64 = 2;
const TX_QUEUE_TOKEN: u64 = 3;
const TAP_TOKEN: u64 = 4;
const RX_TIMER_TOKEN: u64 = 5;
const TX_TIMER_TOKEN: u64 = 6;

/// The device could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A host resource for the worker could not be created.
    #[error("virtio-net {tap}: {op}: {source}")]
    Host {
        /// The TAP's name.
        tap: String,
        /// What failed.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A rate limit cannot work.
    #[error("virtio-net {tap}: {direction} rate limit: {source}")]
    Rate {
        /// The TAP's name.
        tap: String,
        /// `rx` or `tx`.
        direction: &'static str,
        /// What is wrong with it.
        #[source]
        source: BucketError,
    },
    /// The MAC is multicast or all zeros.
    #[error("virtio-net {tap}: {mac} is not a unicast MAC address; pick a locally administered one (02:…)")]
    Mac {
        /// The TAP's name.
        tap: String,
        /// The address.
        mac: String,
    },
}

/// What a zone's network device is made of.
#[derive(Debug)]
pub struct NetConfig {
    /// The host side.
    pub tap: Tap,
    /// The guest's MAC address.
    pub mac: [u8; 6],
    /// The MTU offered to the driver.
    pub mtu: u16,
    /// Limits on what the guest receives.
    pub rx_rate: RateLimit,
    /// Limits on what the guest sends.
    pub tx_rate: RateLimit,
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// Frame counters of a device (the worker's own; logged when it stops).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Frames the guest sent.
    pub tx_frames: u64,
    /// Transmit chains dropped (malformed, or refused by the TAP).
    pub tx_dropped: u64,
    /// Frames the guest received.
    pub rx_frames: u64,
    /// Receive chains returned unused (malformed).
    pub rx_dropped: u64,
}

/// A zone's network interface.
#[derive(Debug)]
pub struct Net {
    tap_name: String,
    mac: [u8; 6],
    mtu: u16,
    queue_events: Vec<EventFd>,
    worker: DeviceWorker<Active>,
}

/// The queues of a running device, with the memory they live in.
#[derive(Debug)]
pub struct Active {
    mem: GuestMemoryMmap,
    rx: Queue,
    tx: Queue,
    interrupt: Arc<Interrupt>,
    offloads: libc::c_uint,
}

/// The TAP offloads (`TUN_F_*`) matching the features the driver accepted:
/// what the guest can take in frames it receives.
fn tun_offloads(acked: u64) -> libc::c_uint {
    let has = |bit: u32| acked & (1 << bit) != 0;
    if !has(VIRTIO_NET_F_GUEST_CSUM) {
        return 0;
    }
    let mut flags = libc::TUN_F_CSUM;
    if has(VIRTIO_NET_F_GUEST_TSO4) {
        flags |= libc::TUN_F_TSO4;
    }
    if has(VIRTIO_NET_F_GUEST_TSO6) {
        flags |= libc::TUN_F_TSO6;
    }
    flags
}

impl Net {
    /// A device for `config`, with its worker thread running.
    pub fn new(config: NetConfig) -> Result<Self, NetError> {
        let tap_name = config.tap.name().to_owned();
        if config.mac == [0; 6] || config.mac[0] & 1 != 0 {
            return Err(NetError::Mac { tap: tap_name, mac: format_mac(&config.mac) });
        }
        for (direction, limit) in [("rx", &config.rx_rate), ("tx", &config.tx_rate)] {
            limit.validate().map_err(|source| NetError::Rate { tap: tap_name.clone(), direction, source })?;
        }
        let fail = |op| {
            let tap = tap_name.clone();
            move |source| NetError::Host { tap, op, source }
        };
        let new_evt = || EventFd::new(libc::EFD_NONBLOCK).map_err(fail("eventfd"));
        let queue_events = vec![new_evt()?, new_evt()?];
        let control_evt = new_evt()?;
        let stop_evt = new_evt()?;
        let new_timer = || TimerFd::new().map_err(|e| std::io::Error::from_raw_os_error(e.errno())).map_err(fail("timerfd_create"));
        let timers = [new_timer()?, new_timer()?];
        let epoll = Epoll::new().map_err(fail("epoll_create"))?;
        let level = EventSet::IN;
        let watched = [
            (stop_evt.as_raw_fd(), STOP_TOKEN, level),
            (control_evt.as_raw_fd(), CONTROL_TOKEN, level),
            (queue_events[RX_QUEUE].as_raw_fd(), RX_QUEUE_TOKEN, level),
            (queue_events[TX_QUEUE].as_raw_fd(), TX_QUEUE_TOKEN, level),
            (config.tap.as_raw_fd(), TAP_TOKEN, EventSet::IN | EventSet::EDGE_TRIGGERED),
            (timers[0].as_raw_fd(), RX_TIMER_TOKEN, level),
            (timers[1].as_raw_fd(), TX_TIMER_TOKEN, level),
        ];
        for (fd, token, set) in watched {
            epoll.ctl(ControlOperation::Add, fd, EpollEvent::new(set, token)).map_err(fail("epoll_ctl"))?;
        }
        let dup = |e: &EventFd| e.try_clone().map_err(fail("eventfd dup"));
        let events = WorkerEvents {
            control: dup(&control_evt)?,
            rx_queue: dup(&queue_events[RX_QUEUE])?,
            tx_queue: dup(&queue_events[TX_QUEUE])?,
        };
        let (tap, rx_limit, tx_limit) = (config.tap, Limiter::new(config.rx_rate), Limiter::new(config.tx_rate));
        let worker = DeviceWorker::spawn(
            format!("virtio-net {tap_name}"),
            &format!("net-{tap_name}"),
            crate::jail::seccomp::ThreadClass::Net,
            control_evt,
            stop_evt,
            move |rx| {
                // The buffer lists point into guest memory: they live on the worker alone.
                let (rx_segs, tx_segs) = (Segments::new(), Segments::new());
                let w = Worker { tap, rx_limit, tx_limit, timers, rx_segs, tx_segs, counters: Counters::default() };
                run(w, epoll, events, rx)
            },
        )
        .map_err(fail("spawning the network thread"))?;
        Ok(Self { tap_name, mac: config.mac, mtu: config.mtu, queue_events, worker })
    }

    /// The configuration space (§5.1.4) up to `mtu`.
    fn config(&self) -> [u8; 12] {
        let mut c = [0u8; 12];
        c[..6].copy_from_slice(&self.mac);
        c[6..8].copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
        c[8..10].copy_from_slice(&1u16.to_le_bytes());
        c[10..12].copy_from_slice(&self.mtu.to_le_bytes());
        c
    }
}

struct WorkerEvents {
    control: EventFd,
    rx_queue: EventFd,
    tx_queue: EventFd,
}

/// What the worker thread owns.
struct Worker {
    tap: Tap,
    rx_limit: Limiter,
    tx_limit: Limiter,
    /// Armed while a direction waits for its rate limit: rx, tx.
    timers: [TimerFd; 2],
    rx_segs: Segments,
    tx_segs: Segments,
    counters: Counters,
}

/// What one pass over a queue did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Whether a chain was put on the used ring.
    pub used: bool,
    /// The rate limit stopped the pass: try again after this long.
    pub wait: Option<Duration>,
}

/// Sends what the guest queued on transmit queue `tx` to `tap`, until the
/// ring is empty or `limit` says wait. A corrupt ring is an error: the
/// device must then stop until the driver resets it.
pub fn transmit(
    tx: &mut Queue,
    mem: &GuestMemoryMmap,
    tap: &Tap,
    segs: &mut Segments,
    limit: &mut Limiter,
    counters: &mut Counters,
) -> Result<Pass, virtio_queue::Error> {
    let mut used = false;
    loop {
        tx.disable_notification(mem)?;
        while let Some(chain) = next_chain(tx, mem)? {
            if let Some(wait) = limit.blocked(Instant::now()) {
                tx.go_to_previous_position();
                return Ok(Pass { used, wait: Some(wait) });
            }
            let head = chain.head_index();
            match frame::send(mem, &chain, tap, segs) {
                Ok(len) => {
                    counters.tx_frames += 1;
                    limit.charge(len);
                }
                Err(e) => {
                    counters.tx_dropped += 1;
                    tracing::debug!("virtio-net {}: transmit frame dropped: {e}", tap.name());
                }
            }
            tx.add_used(mem, head, 0)?;
            used = true;
        }
        if !tx.enable_notification(mem)? {
            return Ok(Pass { used, wait: None });
        }
    }
}

/// Moves frames from `tap` into the guest's buffers on receive queue `rx`,
/// until the TAP is empty, the guest has no buffer, or `limit` says wait.
pub fn receive(
    rx: &mut Queue,
    mem: &GuestMemoryMmap,
    tap: &Tap,
    segs: &mut Segments,
    limit: &mut Limiter,
    counters: &mut Counters,
) -> Result<Pass, virtio_queue::Error> {
    let mut used = false;
    loop {
        if let Some(wait) = limit.blocked(Instant::now()) {
            return Ok(Pass { used, wait: Some(wait) });
        }
        let Some(chain) = next_chain(rx, mem)? else {
            // No buffer: ask the driver to kick when it adds some (and
            // carry on if it already did).
            if rx.enable_notification(mem)? {
                continue;
            }
            return Ok(Pass { used, wait: None });
        };
        let head = chain.head_index();
        match frame::receive(mem, &chain, tap, segs) {
            Ok(None) => {
                // The TAP is empty: the buffer waits for the next frame.
                rx.go_to_previous_position();
                return Ok(Pass { used, wait: None });
            }
            Ok(Some(len)) => {
                counters.rx_frames += 1;
                limit.charge(len);
                rx.add_used(mem, head, u32::try_from(len).unwrap_or(u32::MAX))?;
            }
            Err(e) => {
                counters.rx_dropped += 1;
                tracing::debug!("virtio-net {}: receive buffer returned unused: {e}", tap.name());
                rx.add_used(mem, head, 0)?;
            }
        }
        used = true;
    }
}

impl Worker {
    fn process(&mut self, a: &mut Active) -> Result<(), virtio_queue::Error> {
        let tx = transmit(&mut a.tx, &a.mem, &self.tap, &mut self.tx_segs, &mut self.tx_limit, &mut self.counters)?;
        if let Some(wait) = tx.wait {
            arm(&mut self.timers[1], wait);
        }
        let rx = receive(&mut a.rx, &a.mem, &self.tap, &mut self.rx_segs, &mut self.rx_limit, &mut self.counters)?;
        if let Some(wait) = rx.wait {
            arm(&mut self.timers[0], wait);
        }
        let notify_tx = tx.used && a.tx.needs_notification(&a.mem)?;
        let notify_rx = rx.used && a.rx.needs_notification(&a.mem)?;
        if notify_tx || notify_rx {
            if let Err(e) = a.interrupt.raise(INT_USED_RING) {
                tracing::warn!("virtio-net {}: cannot raise the interrupt: {e}", self.tap.name());
            }
        }
        Ok(())
    }
}

/// Arms `timer` to fire once after `wait` (a timer already armed is moved).
fn arm(timer: &mut TimerFd, wait: Duration) {
    if let Err(e) = timer.reset(wait, None) {
        tracing::warn!("virtio-net: cannot arm a rate-limit timer ({e}); the direction waits for the next event");
    }
}

/// The worker: serves the queues and the TAP until stopped.
fn run(mut w: Worker, epoll: Epoll, events: WorkerEvents, control: mpsc::Receiver<Control<Active>>) {
    let mut active: Option<Active> = None;
    let mut ready = [EpollEvent::default(); 8];
    loop {
        let n = match epoll.wait(-1, &mut ready) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::error!("virtio-net {}: epoll_wait failed ({e}); the interface stops", w.tap.name());
                return;
            }
        };
        for ev in &ready[..n] {
            match ev.data() {
                STOP_TOKEN => {
                    tracing::debug!("virtio-net {}: {:?}", w.tap.name(), w.counters);
                    return;
                }
                CONTROL_TOKEN => {
                    let _ = events.control.read();
                    while let Ok(msg) = control.try_recv() {
                        match msg {
                            Control::Activate(a) => {
                                if let Err(e) = w.tap.set_offload(a.offloads) {
                                    tracing::warn!("virtio-net {}: TUNSETOFFLOAD {:#x}: {e}; the interface stays down", w.tap.name(), a.offloads);
                                    a.interrupt.fail_device();
                                    continue;
                                }
                                active = Some(a);
                            }
                            Control::Reset(ack) => {
                                active = None;
                                let _ = ack.send(());
                            }
                        }
                    }
                }
                RX_QUEUE_TOKEN => {
                    let _ = events.rx_queue.read();
                }
                TX_QUEUE_TOKEN => {
                    let _ = events.tx_queue.read();
                }
                RX_TIMER_TOKEN => {
                    let _ = w.timers[0].wait();
                }
                TX_TIMER_TOKEN => {
                    let _ = w.timers[1].wait();
                }
                _ => {}
            }
        }
        if let Some(a) = active.as_mut() {
            if let Err(e) = w.process(a) {
                tracing::warn!("virtio-net {}: the driver corrupted a queue ({e}); the device needs a reset", w.tap.name());
                a.interrupt.fail_device();
                active = None;
            }
        }
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        DEVICE_TYPE
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        [
            VIRTIO_F_VERSION_1,
            VIRTIO_RING_F_EVENT_IDX,
            VIRTIO_NET_F_MAC,
            VIRTIO_NET_F_STATUS,
            VIRTIO_NET_F_MTU,
            VIRTIO_NET_F_CSUM,
            VIRTIO_NET_F_GUEST_CSUM,
            VIRTIO_NET_F_HOST_TSO4,
            VIRTIO_NET_F_HOST_TSO6,
            VIRTIO_NET_F_GUEST_TSO4,
            VIRTIO_NET_F_GUEST_TSO6,
        ]
        .into_iter()
        .fold(0, |f, bit| f | (1 << bit))
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config(), offset, data);
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        // The MAC is writable only with VIRTIO_NET_F_CTRL_MAC_ADDR-less legacy
        // drivers; the zone's address is the daemon's choice.
        tracing::debug!(offset, tap = %self.tap_name, "virtio-net: the configuration space is read-only; write ignored");
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_events
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        interrupt: Arc<Interrupt>,
        acked_features: u64,
    ) -> Result<(), ActivateError> {
        let mut queues = queues.into_iter();
        let mut ready = |i| queues.next().filter(|q: &Queue| q.ready()).ok_or(ActivateError::QueueNotReady(i));
        let (mut rx, mut tx) = (ready(RX_QUEUE)?, ready(TX_QUEUE)?);
        let event_idx = acked_features & (1 << VIRTIO_RING_F_EVENT_IDX) != 0;
        rx.set_event_idx(event_idx);
        tx.set_event_idx(event_idx);
        self.worker.activate(Active { mem, rx, tx, interrupt, offloads: tun_offloads(acked_features) })
    }

    fn reset(&mut self) {
        self.worker.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::net::tap::tests::TestTap;
    use crate::devices::virtio::net::{Bucket, VNET_HDR_LEN};
    use virtio_queue::desc::{RawDescriptor, split::Descriptor as SplitDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Address, Bytes, GuestAddress};

    const MAC: [u8; 6] = [0x02, 0x5a, 0, 0, 0, 7];

    fn config(tap: Tap) -> NetConfig {
        NetConfig { tap, mac: MAC, mtu: 1500, rx_rate: RateLimit::default(), tx_rate: RateLimit::default() }
    }

    #[test]
    fn features_config_space_and_offloads() {
        let t = TestTap::new();
        let net = Net::new(config(t.tap)).unwrap();
        assert_eq!(net.device_type(), 1);
        let f = net.features();
        for bit in [VIRTIO_F_VERSION_1, VIRTIO_NET_F_MAC, VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_TSO4] {
            assert_ne!(f & (1 << bit), 0, "{bit}");
        }
        let mut mac = [0u8; 6];
        net.read_config(0, &mut mac);
        assert_eq!(mac, MAC);
        let mut status = [0u8; 2];
        net.read_config(6, &mut status);
        assert_eq!(u16::from_le_bytes(status), 1);
        net.read_config(10, &mut status);
        assert_eq!(u16::from_le_bytes(status), 1500);
        assert_eq!(tun_offloads(1 << VIRTIO_NET_F_GUEST_TSO4), 0, "TSO without checksum offload is not offered to the TAP");
        assert_eq!(
            tun_offloads((1 << VIRTIO_NET_F_GUEST_CSUM) | (1 << VIRTIO_NET_F_GUEST_TSO6)),
            libc::TUN_F_CSUM | libc::TUN_F_TSO6
        );
    }

    #[test]
    fn bad_macs_and_rate_limits_are_refused() {
        let t = TestTap::new();
        let e = Net::new(NetConfig { mac: [1, 0, 0, 0, 0, 1], ..config(t.tap) }).unwrap_err();
        assert!(e.to_string().contains("01:00:00:00:00:01 is not a unicast"), "{e}");
        let t = TestTap::new();
        let rate = RateLimit { bytes: Some(Bucket { size: 0, refill_ms: 10 }), frames: None };
        assert!(matches!(Net::new(NetConfig { tx_rate: rate, ..config(t.tap) }), Err(NetError::Rate { direction: "tx", .. })));
    }

    /// The driver side: a receive and a transmit queue in guest memory.
    struct Driver<'m> {
        mem: &'m GuestMemoryMmap,
        rx: MockSplitQueue<'m, GuestMemoryMmap>,
        tx: MockSplitQueue<'m, GuestMemoryMmap>,
    }

    const RX_BUF: u64 = 0x10_0000;
    const TX_BUF: u64 = 0x20_0000;

    impl<'m> Driver<'m> {
        fn new(mem: &'m GuestMemoryMmap) -> Self {
            // The mock places a queue's used ring right after the first half
            // of its available ring: 32 entries leave room for 16 chains.
            Self { mem, rx: MockSplitQueue::create(mem, GuestAddress(0), 32), tx: MockSplitQueue::create(mem, GuestAddress(0x8000), 32) }
        }

        /// Offers `n` receive buffers of 2 KiB.
        fn post_rx(&self, n: u16) {
            let descs: Vec<RawDescriptor> =
                (0..n).map(|i| RawDescriptor::from(SplitDescriptor::new(RX_BUF + u64::from(i) * 0x1000, 2048, 2, 0))).collect();
            self.rx.add_desc_chains(&descs, 0).unwrap();
        }

        /// Queues `frame` (header + Ethernet frame) for transmission, in slot `i`.
        fn send(&self, i: u16, frame: &[u8]) {
            let mut bytes = vec![0u8; VNET_HDR_LEN];
            bytes.extend_from_slice(frame);
            let addr = TX_BUF + u64::from(i) * 0x1000;
            self.mem.write_slice(&bytes, GuestAddress(addr)).unwrap();
            let d = [RawDescriptor::from(SplitDescriptor::new(addr, bytes.len() as u32, 0, 0))];
            self.tx.add_desc_chains(&d, i).unwrap();
        }
    }

    fn eth(src: [u8; 6], n: u8) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x88, 0xb5, n]);
        f.resize(60, 0);
        f
    }

    fn used_idx(mem: &GuestMemoryMmap, q: &MockSplitQueue<'_, GuestMemoryMmap>) -> u16 {
        mem.read_obj::<u16>(q.used_addr().unchecked_add(2)).unwrap()
    }

    fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
        let t = Instant::now();
        while !f() {
            assert!(t.elapsed() < Duration::from_secs(5), "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn the_worker_moves_frames_both_ways_and_interrupts() {
        let t = TestTap::new();
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap();
        let d = Driver::new(&mem);
        let host = t.host;
        let guest_mac = t.guest_mac;
        let mut net = Net::new(config(t.tap)).unwrap();
        let irqfd = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let interrupt = Arc::new(Interrupt::new(irqfd.try_clone().unwrap()));
        d.post_rx(4);
        let queues = vec![d.rx.create_queue().unwrap(), d.tx.create_queue().unwrap()];
        net.activate(mem.clone(), queues, Arc::clone(&interrupt), net.features()).unwrap();

        // Guest → host.
        d.send(0, &eth(guest_mac, 1));
        net.queue_events()[TX_QUEUE].write(1).unwrap();
        assert_eq!(host.receive(), eth(guest_mac, 1));
        wait_until("the transmit chain on the used ring", || used_idx(&mem, &d.tx) == 1);

        // Host → guest: two frames into two buffers, the third buffer left.
        host.send(&eth([2, 0, 0, 0, 0, 9], 2));
        host.send(&eth([2, 0, 0, 0, 0, 9], 3));
        wait_until("two frames in the receive buffers", || used_idx(&mem, &d.rx) >= 2);
        let mut got = [0u8; 61];
        mem.read_slice(&mut got, GuestAddress(RX_BUF + VNET_HDR_LEN as u64 - 1)).unwrap();
        assert_eq!(&got[1..], &eth([2, 0, 0, 0, 0, 9], 2)[..]);
        assert_eq!(interrupt.status() & INT_USED_RING, INT_USED_RING);
        assert!(irqfd.read().unwrap() >= 1);
        net.reset();
    }

    #[test]
    fn a_transmit_flood_is_held_to_its_rate() {
        let t = TestTap::new();
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap();
        let d = Driver::new(&mem);
        let host = t.host;
        let guest_mac = t.guest_mac;
        // 4 frames at once, then 20 frames per second.
        let tx_rate = RateLimit { bytes: None, frames: Some(Bucket { size: 4, refill_ms: 200 }) };
        let mut net = Net::new(NetConfig { tx_rate, ..config(t.tap) }).unwrap();
        let interrupt = Arc::new(Interrupt::new(EventFd::new(libc::EFD_NONBLOCK).unwrap()));
        let queues = vec![d.rx.create_queue().unwrap(), d.tx.create_queue().unwrap()];
        net.activate(mem.clone(), queues, interrupt, net.features()).unwrap();
        for i in 0..12 {
            d.send(i, &eth(guest_mac, i as u8));
        }
        let start = Instant::now();
        net.queue_events()[TX_QUEUE].write(1).unwrap();
        for i in 0..12u8 {
            assert_eq!(host.receive(), eth(guest_mac, i), "frames leave in order");
        }
        // 4 at once, 8 more at 20/s: at least 8 × 50 ms - one frame's slack.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(350), "12 frames left in {took:?}");
        wait_until("all 12 chains used", || used_idx(&mem, &d.tx) == 12);
        net.reset();
    }
}
