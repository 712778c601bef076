//! A device's worker thread as its vCPU side sees it: started under the
//! device's own seccomp class, handed the queues at `DRIVER_OK`, told to drop
//! them on a reset (and waited for, so the driver never sees a half-reset
//! device), stopped and joined when the device is dropped. The worker's loop
//! is the device's own; it reads [`Control`] messages when `control_evt`
//! fires and returns when `stop_evt` does.

use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use vmm_sys_util::eventfd::EventFd;

use super::ActivateError;
use crate::jail::seccomp::{self, ThreadClass};

/// How long a vCPU waits for the worker to acknowledge a reset.
pub const RESET_TIMEOUT: Duration = Duration::from_secs(1);

/// A message from the device (on a vCPU thread) to its worker.
#[derive(Debug)]
pub enum Control<A> {
    /// The driver set `DRIVER_OK`: start serving these queues.
    Activate(A),
    /// The driver reset the device: drop the queues (and what hangs on them), then acknowledge.
    Reset(mpsc::SyncSender<()>),
}

/// The vCPU side of a running worker thread.
#[derive(Debug)]
pub struct DeviceWorker<A> {
    label: String,
    control: mpsc::Sender<Control<A>>,
    control_evt: EventFd,
    stop_evt: EventFd,
    thread: Option<JoinHandle<()>>,
}

impl<A: Send + 'static> DeviceWorker<A> {
    /// Starts the thread `thread_name`: it applies `class`'s seccomp filter,
    /// then runs `body` with the receiving end of the control channel. A
    /// filter that cannot be applied leaves the device dead, never serving
    /// the guest unfiltered. `label` names the device in logs.
    pub fn spawn<F>(label: String, thread_name: &str, class: ThreadClass, control_evt: EventFd, stop_evt: EventFd, body: F) -> std::io::Result<Self>
    where
        F: FnOnce(mpsc::Receiver<Control<A>>) + Send + 'static,
    {
        let (control, rx) = mpsc::channel();
        let name = label.clone();
        let thread = thread::Builder::new().name(thread_name.chars().take(15).collect()).spawn(move || match seccomp::apply(class) {
            Ok(()) => body(rx),
            Err(e) => tracing::error!("{name}: {e}; the device will not work"),
        })?;
        Ok(Self { label, control, control_evt, stop_evt, thread: Some(thread) })
    }

    fn send(&self, msg: Control<A>) -> Result<(), ActivateError> {
        self.control.send(msg).map_err(|_| ActivateError::WorkerGone)?;
        self.control_evt.write(1).map_err(|_| ActivateError::WorkerGone)
    }

    /// Hands the worker its queues.
    pub fn activate(&self, active: A) -> Result<(), ActivateError> {
        self.send(Control::Activate(active))
    }

    /// Tells the worker to drop its queues and waits (bounded) until it has.
    pub fn reset(&self) {
        let (ack, done) = mpsc::sync_channel(1);
        if self.send(Control::Reset(ack)).is_ok() && done.recv_timeout(RESET_TIMEOUT).is_err() {
            tracing::warn!("{}: the worker did not acknowledge a device reset", self.label);
        }
    }
}

impl<A> Drop for DeviceWorker<A> {
    fn drop(&mut self) {
        let _ = self.stop_evt.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
