//! The zone's vsock thread: one epoll loop per zone that serves the guest's
//! queue notifications (the ioeventfds KVM signals on `QueueNotify`, or the
//! same event fds written by the MMIO handler), the host Unix sockets, and the
//! control messages of the vCPU threads (activate at `DRIVER_OK`, reset).
//!
//! After every wake-up it applies timeouts, then moves packets: guest tx →
//! connections → host sockets, and host sockets / control packets → guest rx.
//! Connection sockets are edge-triggered; queue and control event fds are
//! read to clear them.

use std::sync::mpsc;
use std::time::Instant;

use vmm_sys_util::epoll::{EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::backend::{CONN_TAG, HANDSHAKE_TAG, LISTENER_TOKEN};
use super::muxer::Muxer;
use super::queues::Queues;

/// epoll token of the stop event.
const STOP_TOKEN: u64 = 0;
/// epoll token of the control event.
const CONTROL_TOKEN: u64 = 1;
/// epoll token of queue 0's notification event; queues 1 and 2 follow.
const QUEUE_TOKEN_BASE: u64 = 2;

/// A message from the device to its worker: the queues at `DRIVER_OK`, or a
/// reset (drop the queues and every connection, then acknowledge).
pub type Control = crate::devices::virtio::device_worker::Control<Queues>;

/// The event fds the worker waits on besides the sockets.
#[derive(Debug)]
pub struct WorkerEvents {
    /// Ends the thread.
    pub stop: EventFd,
    /// A [`Control`] message is waiting.
    pub control: EventFd,
    /// Queue notifications, index = queue index.
    pub queues: Vec<EventFd>,
}

/// Handles an epoll event of the host side (the listener on `U`, a
/// handshaking stream, a connection's stream); other tokens are ignored.
pub fn on_host_event(muxer: &mut Muxer, token: u64, set: EventSet, driver_ready: bool, now: Instant) {
    match token {
        LISTENER_TOKEN => muxer.backend_mut().accept(now),
        t if t & CONN_TAG != 0 => {
            let readable = set.intersects(EventSet::IN | EventSet::HANG_UP | EventSet::READ_HANG_UP | EventSet::ERROR);
            let writable = set.intersects(EventSet::OUT | EventSet::HANG_UP | EventSet::ERROR);
            muxer.on_host_event(t, readable, writable);
        }
        t if t & HANDSHAKE_TAG != 0 => muxer.on_handshake_event(t, driver_ready, now),
        _ => {}
    }
}

/// Runs the loop until `events.stop` is signalled.
pub fn run(mut muxer: Muxer, events: WorkerEvents, control: mpsc::Receiver<Control>) {
    let mut fixed = vec![(&events.stop, STOP_TOKEN), (&events.control, CONTROL_TOKEN)];
    fixed.extend(events.queues.iter().zip(QUEUE_TOKEN_BASE..));
    for (evt, token) in fixed {
        use std::os::fd::AsRawFd;
        if let Err(e) = muxer.backend().watch(evt.as_raw_fd(), token, EventSet::IN) {
            tracing::error!("vsock: cannot watch the device's event fds ({e}); the vsock device will not work");
            return;
        }
    }
    let mut queues: Option<Queues> = None;
    let mut ready = vec![EpollEvent::default(); 64];
    loop {
        let timeout = match muxer.next_deadline() {
            Some(d) => {
                let ms = d.saturating_duration_since(Instant::now()).as_micros().div_ceil(1000);
                i32::try_from(ms).unwrap_or(i32::MAX)
            }
            None => -1,
        };
        let n = match muxer.backend().epoll().wait(timeout, &mut ready) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::error!("vsock: epoll_wait failed ({e}); the vsock device stops");
                return;
            }
        };
        let now = Instant::now();
        for ev in &ready[..n] {
            let set = ev.event_set();
            match ev.data() {
                STOP_TOKEN => return,
                CONTROL_TOKEN => {
                    let _ = events.control.read();
                    while let Ok(msg) = control.try_recv() {
                        match msg {
                            Control::Activate(q) => {
                                tracing::debug!("vsock: driver ready");
                                queues = Some(q);
                            }
                            Control::Reset(ack) => {
                                tracing::debug!(connections = muxer.len(), "vsock: device reset");
                                queues = None;
                                muxer.reset();
                                let _ = ack.send(());
                            }
                        }
                    }
                }
                t @ QUEUE_TOKEN_BASE..=4 => {
                    if let Some(evt) = usize::try_from(t - QUEUE_TOKEN_BASE).ok().and_then(|i| events.queues.get(i)) {
                        let _ = evt.read();
                    }
                }
                t => on_host_event(&mut muxer, t, set, queues.is_some(), now),
            }
        }
        muxer.expire(now);
        if let Some(q) = queues.as_mut() {
            if let Err(e) = q.process(&mut muxer, now) {
                tracing::warn!("vsock: {e}; the device needs a reset");
                q.fail_device();
                queues = None;
                muxer.reset();
            }
        }
    }
}
