//! `zone-guest forward LISTEN PORT`: makes a host service the daemon
//! forwards (`[[forward]]` in its config) reachable inside the zone at a TCP
//! address, e.g. `zone-guest forward 127.0.0.1:8081 8081` for a SPIRE
//! server. Each TCP connection accepted on LISTEN gets its own vsock
//! connection to host port PORT; bytes are copied both ways until either
//! side closes.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};

/// Usage of `zone-guest forward`.
pub const USAGE: &str = "usage: zone-guest forward LISTEN_ADDR VSOCK_PORT   (e.g. 127.0.0.1:8081 8081)\n\
    Accepts TCP connections on LISTEN_ADDR inside the zone and connects each to the\n\
    host service the daemon forwards on vsock host port VSOCK_PORT.";

/// Parses `LISTEN_ADDR VSOCK_PORT`.
pub fn parse_args(args: &[String]) -> Result<(SocketAddr, u32), String> {
    let [listen, port] = args else {
        return Err("expected LISTEN_ADDR and VSOCK_PORT".into());
    };
    let listen = listen.parse().map_err(|_| format!("{listen:?} is not an address like 127.0.0.1:8081"))?;
    let port: u32 = port.parse().map_err(|_| format!("{port:?} is not a port number"))?;
    if port == 0 || port == attestation_proto::channel::HOST_CHANNEL_PORT {
        return Err(format!("vsock port {port} is not a forwarded port"));
    }
    Ok((listen, port))
}

fn pump(mut from: impl Read, mut to: impl Write, done: impl FnOnce()) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    done();
}

fn serve_one(tcp: TcpStream, port: u32) {
    let vsock = match crate::channel::connect_port(port) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("zone-guest forward: cannot reach vsock host port {port}: {e}");
            return;
        }
    };
    let (Ok(tcp_rd), Ok(vsock_rd)) = (tcp.try_clone(), vsock.try_clone()) else { return };
    let tcp_wr = tcp;
    let up = std::thread::spawn(move || {
        pump(tcp_rd, &vsock, || {
            use std::os::fd::AsRawFd;
            // SAFETY: shutdown(2) of the write side of a socket we own.
            unsafe { libc::shutdown(vsock.as_raw_fd(), libc::SHUT_WR) };
        })
    });
    pump(vsock_rd, &tcp_wr, || {
        let _ = tcp_wr.shutdown(Shutdown::Write);
    });
    let _ = up.join();
}

/// Accepts connections forever.
pub fn run(listen: SocketAddr, port: u32) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen)?;
    for conn in listener.incoming() {
        match conn {
            Ok(tcp) => {
                let _ = std::thread::Builder::new().name("forward".into()).spawn(move || serve_one(tcp, port));
            }
            Err(e) => eprintln!("zone-guest forward: accept failed: {e}"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_checked() {
        let w = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(parse_args(&w("127.0.0.1:8081 8081")).unwrap(), ("127.0.0.1:8081".parse().unwrap(), 8081));
        assert!(parse_args(&w("127.0.0.1:8081")).is_err());
        assert!(parse_args(&w("localhost 8081")).unwrap_err().contains("not an address"));
        assert!(parse_args(&w("127.0.0.1:1 1024")).unwrap_err().contains("not a forwarded port"));
    }
}
