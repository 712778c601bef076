//! The zone console: an 8250 UART (vm-superio) on COM1 whose output goes to a
//! per-zone sink (a log file, the terminal of `zonectl run`), never to the
//! VMM's own log stream.
//!
//! The sink also watches the console for the kernel's panic line: the zone
//! kernel runs with `panic=-1`, so a panic shows up as a reset right after
//! `Kernel panic - not syncing: …`, and the VMM reports it as a panic.

use std::fmt;
use std::io::{self, Write};

use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

/// First port of COM1.
pub const COM1_BASE: u16 = 0x3f8;
/// Last port of COM1.
pub const COM1_LAST: u16 = 0x3ff;
/// Legacy IRQ (IOAPIC pin / GSI) of COM1.
pub const COM1_IRQ: u32 = 4;

/// The kernel's panic banner.
const PANIC_MARKER: &[u8] = b"Kernel panic - not syncing";
/// Longest console line kept for panic detection.
const MAX_LINE: usize = 512;

/// Raises the UART's interrupt by signalling an irqfd.
#[derive(Debug)]
pub struct IrqTrigger(pub EventFd);

impl Trigger for IrqTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// Where console bytes go, with panic detection and an optional size cap.
pub struct ConsoleSink {
    out: Box<dyn Write + Send>,
    line: Vec<u8>,
    panic: Option<String>,
    broken: bool,
    /// Bytes still allowed through (`None`: unlimited).
    budget: Option<u64>,
    /// Bytes written to `out` since it was last flushed.
    pending: bool,
}

impl fmt::Debug for ConsoleSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsoleSink").field("panic", &self.panic).finish_non_exhaustive()
    }
}

impl ConsoleSink {
    /// A sink writing to `out` (buffer it: the UART writes one byte at a time).
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self { out, line: Vec::with_capacity(128), panic: None, broken: false, budget: None, pending: false }
    }

    /// A sink that passes at most `max_bytes` (then one note, then nothing):
    /// a guest printing without end cannot fill the host's disk.
    pub fn with_limit(out: Box<dyn Write + Send>, max_bytes: u64) -> Self {
        Self { budget: Some(max_bytes), ..Self::new(out) }
    }

    /// The first kernel panic line seen on the console, if any.
    pub fn panic_message(&self) -> Option<String> {
        self.panic.clone()
    }

    fn scan(&mut self, byte: u8) {
        if byte == b'\n' {
            if self.panic.is_none() && self.line.windows(PANIC_MARKER.len()).any(|w| w == PANIC_MARKER) {
                let text = String::from_utf8_lossy(&self.line);
                self.panic = Some(text.trim().to_owned());
            }
            self.line.clear();
        } else if self.line.len() < MAX_LINE {
            self.line.push(byte);
        }
    }
}

impl Write for ConsoleSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for &b in buf {
            self.scan(b);
        }
        let pass = match &mut self.budget {
            None => buf,
            Some(left) => {
                let n = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                if n < buf.len() && *left > 0 {
                    let _ = self.out.write_all(&buf[..n]);
                    let _ = self.out.write_all(b"\n[hypervisor-agent: console log limit reached; further output dropped]\n");
                    *left = 0;
                    return Ok(buf.len());
                }
                *left -= n as u64;
                &buf[..n]
            }
        };
        // A closed reader (e.g. `zonectl run | head`) must not stop the zone:
        // the bytes are dropped, the guest carries on.
        if !self.broken && self.out.write_all(pass).is_err() {
            self.broken = true;
        }
        self.pending = true;
        if buf.contains(&b'\n') {
            self.flush_pending();
        }
        Ok(buf.len())
    }

    /// Does nothing: the UART model flushes after every byte it writes,
    /// which would make each byte a write(2). Output reaches `out` at each
    /// newline, when its buffer fills, and from [`Self::flush_pending`],
    /// which the VMM calls every [`FLUSH_EVERY`] for a partial line (a prompt).
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// How often the VMM flushes a partial console line.
pub const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

impl ConsoleSink {
    /// Flushes what was written since the last flush.
    pub fn flush_pending(&mut self) {
        if self.pending && !self.broken && self.out.flush().is_err() {
            self.broken = true;
        }
        self.pending = false;
    }
}

/// The UART model plus its sink.
#[derive(Debug)]
pub struct SerialDevice {
    uart: Serial<IrqTrigger, vm_superio::serial::NoEvents, ConsoleSink>,
}

impl SerialDevice {
    /// A UART raising `irq` and writing to `sink`.
    pub fn new(irq: EventFd, sink: ConsoleSink) -> Self {
        Self { uart: Serial::new(IrqTrigger(irq), sink) }
    }

    /// Register write at `offset` (0..=7).
    pub fn write(&mut self, offset: u8, value: u8) {
        // The only error is a failed interrupt trigger; the byte was handled.
        let _ = self.uart.write(offset, value);
    }

    /// Register read at `offset` (0..=7).
    pub fn read(&mut self, offset: u8) -> u8 {
        self.uart.read(offset)
    }

    /// Input from the user's terminal into the guest (best effort; bytes
    /// beyond the FIFO's free space are dropped).
    pub fn enqueue_input(&mut self, input: &[u8]) -> usize {
        self.uart.enqueue_raw_bytes(input).unwrap_or(0)
    }

    /// The panic line seen so far.
    pub fn panic_message(&self) -> Option<String> {
        self.uart.writer().panic_message()
    }

    /// Flushes what the sink holds.
    pub fn flush(&mut self) {
        self.uart.writer_mut().flush_pending();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn bytes_written_to_thr_reach_the_sink_and_panics_are_seen() {
        let out = Shared::default();
        let mut dev = SerialDevice::new(EventFd::new(0).unwrap(), ConsoleSink::new(Box::new(out.clone())));
        for b in b"hello\n[    1.0] Kernel panic - not syncing: Attempted to kill init!\nmore" {
            dev.write(0, *b);
        }
        assert!(out.0.lock().unwrap().starts_with(b"hello\n"));
        let msg = dev.panic_message().unwrap();
        assert!(msg.contains("Attempted to kill init"), "{msg}");
    }

    /// Counts the writes and flushes reaching the sink.
    #[derive(Clone, Default)]
    struct Counting(Arc<Mutex<(Vec<u8>, usize)>>);
    impl Write for Counting {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().0.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            self.0.lock().unwrap().1 += 1;
            Ok(())
        }
    }

    #[test]
    fn bytes_are_flushed_per_line_and_a_partial_line_on_request() {
        let out = Counting::default();
        let mut dev = SerialDevice::new(EventFd::new(0).unwrap(), ConsoleSink::new(Box::new(out.clone())));
        for b in b"one line\nanother line\n/ # " {
            dev.write(0, *b);
        }
        assert_eq!(out.0.lock().unwrap().1, 2, "one flush per line, none per byte");
        dev.flush();
        assert_eq!(out.0.lock().unwrap().1, 3, "the prompt is flushed on request");
        dev.flush();
        assert_eq!(out.0.lock().unwrap().1, 3, "nothing pending: no flush");
        assert_eq!(out.0.lock().unwrap().0, b"one line\nanother line\n/ # ");
    }

    #[test]
    fn long_lines_are_bounded() {
        let mut sink = ConsoleSink::new(Box::new(io::sink()));
        sink.write_all(&vec![b'x'; 10 * MAX_LINE]).unwrap();
        assert_eq!(sink.line.len(), MAX_LINE);
    }

    #[test]
    fn the_limit_caps_output_but_panics_are_still_seen() {
        let out = Shared::default();
        let mut sink = ConsoleSink::with_limit(Box::new(out.clone()), 10);
        sink.write_all(b"0123456789abc").unwrap();
        sink.write_all(b"Kernel panic - not syncing: late\n").unwrap();
        let got = out.0.lock().unwrap().clone();
        assert!(got.starts_with(b"0123456789\n[hypervisor-agent: console log limit reached"));
        assert!(!String::from_utf8_lossy(&got).contains("late"));
        assert!(sink.panic_message().is_some(), "the panic line is still detected");
    }

    #[test]
    fn a_broken_output_does_not_fail_the_guest() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
        }
        let mut sink = ConsoleSink::new(Box::new(Broken));
        assert_eq!(sink.write(b"abc\n").unwrap(), 4);
    }
}
