//! `zonectl console NAME`: an interactive serial console.
//!
//! The terminal goes into raw mode (restored on exit); Ctrl-] detaches.
//! Without a terminal on stdin, input is forwarded until it ends and the
//! output keeps streaming until the zone ends.

use std::io::{Read, Write};

use attestation_proto::control::ConsoleInput;

use super::GlobalArgs;
use super::client::{block_on, connect, explain};

/// The detach key (Ctrl-]), as in telnet and virsh.
const DETACH: u8 = 0x1d;

/// Puts a terminal into raw mode and restores it when dropped.
struct RawMode(Option<libc::termios>);

impl RawMode {
    fn enable() -> Self {
        // SAFETY: isatty on fd 0 has no preconditions.
        if unsafe { libc::isatty(0) } != 1 {
            return Self(None);
        }
        // SAFETY: an all-zero termios is valid to be filled by tcgetattr.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `t` is a valid out-pointer for fd 0's attributes.
        if unsafe { libc::tcgetattr(0, &mut t) } != 0 {
            return Self(None);
        }
        let saved = t;
        // SAFETY: cfmakeraw only edits the struct it is given.
        unsafe { libc::cfmakeraw(&mut t) };
        // SAFETY: `t` holds valid attributes for fd 0.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
        Self(Some(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = self.0 {
            // SAFETY: restoring attributes read from the same fd.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
        }
    }
}

/// Runs `zonectl console`.
pub fn run(g: &GlobalArgs, name: String) -> anyhow::Result<i32> {
    block_on(async move {
        let mut client = connect(&g.socket()).await?;
        let (tx, rx) = tokio::sync::mpsc::channel::<ConsoleInput>(16);
        tx.send(ConsoleInput { name: name.clone(), data: Vec::new() }).await?;
        let mut output = client
            .attach_console(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map_err(explain)?
            .into_inner();
        let raw = RawMode::enable();
        if raw.0.is_some() {
            eprint!("attached to {name}'s console; Ctrl-] detaches\r\n");
        }
        let interactive = raw.0.is_some();
        let (detach_tx, mut detach_rx) = tokio::sync::mpsc::channel::<()>(1);
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 256];
            loop {
                let n = match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let data = &buf[..n];
                if interactive && data.contains(&DETACH) {
                    let _ = detach_tx.blocking_send(());
                    return;
                }
                if tx.blocking_send(ConsoleInput { name: String::new(), data: data.to_vec() }).is_err() {
                    return;
                }
            }
        });
        let mut out = std::io::stdout();
        loop {
            tokio::select! {
                // Only a real Ctrl-] detaches; the sender going away (stdin ended) does not.
                Some(()) = detach_rx.recv() => break,
                msg = output.message() => match msg.map_err(explain)? {
                    Some(chunk) => {
                        out.write_all(&chunk.data)?;
                        out.flush()?;
                    }
                    None => break,
                },
            }
        }
        drop(raw);
        Ok(0)
    })
}
