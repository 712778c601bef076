//! Host services forwarded into zones (`[[forward]]` in the config): for
//! each, the daemon listens on the zone's `vsock.sock_<port>` (a guest
//! connection to host port `port` arrives there, hybrid vsock) and connects
//! every accepted connection to the configured TCP address. Zones reach
//! nothing on the host but these ports and the host channel. At most
//! [`MAX_CONNECTIONS`] connections per zone and port are open at once.

use std::sync::Arc;

use tokio::net::{TcpStream, UnixListener};
use tokio::sync::Semaphore;

use crate::config::Forward;

/// Open connections per zone and forwarded port.
pub const MAX_CONNECTIONS: usize = 32;

/// Serves one forward for one zone (its listener `sock/vsock.sock_<port>`) until aborted.
pub async fn serve(name: String, listener: UnixListener, forward: Forward) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((mut guest, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!(zone = %name, port = forward.port, "too many forwarded connections; refusing one");
            continue;
        };
        let (name, to, port) = (name.clone(), forward.to, forward.port);
        tokio::spawn(async move {
            match TcpStream::connect(to).await {
                Ok(mut host) => {
                    if let Err(e) = tokio::io::copy_bidirectional(&mut guest, &mut host).await {
                        tracing::debug!(zone = %name, port, error = %e, "forwarded connection ended");
                    }
                }
                Err(e) => tracing::warn!(zone = %name, port, to = %to, error = %e, "cannot reach a forwarded host service"),
            }
            drop(permit);
        });
    }
}
