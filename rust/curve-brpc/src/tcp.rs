//! What curve-brpc sets on the TCP sockets it connects and accepts, beside TCP_NODELAY.

use std::net::SocketAddr;

use tokio::net::TcpStream;

/// The congestion control of a connection between two processes of this machine.
const LOOPBACK_CONGESTION: &str = "reno";

/// A connection to a peer on loopback (the local cluster's servers, their clients) uses
/// reno rather than the system's default congestion control. Where that default is BBR
/// (as on this project's VMs), it paces every burst it sends with a timer, and on a VM
/// each arming of that timer exits to the hypervisor: in the profile of 1 MiB writes the
/// chunkservers spent 16 % of their samples there (perf, cpu-clock). Loopback has no
/// bottleneck link for pacing to protect, and reno paces nothing; it is built into every
/// Linux kernel and open to unprivileged processes. A socket it cannot be set on keeps
/// the default, which costs time and nothing else. Connections to other hosts are left
/// alone.
pub(crate) fn prefer_unpaced_on_loopback(stream: &TcpStream, peer: SocketAddr) {
    if !peer.ip().is_loopback() {
        return;
    }
    if let Err(e) = rustix::net::sockopt::set_tcp_congestion(stream, LOOPBACK_CONGESTION) {
        tracing::debug!(%peer, "TCP_CONGESTION {LOOPBACK_CONGESTION}: {e}");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn loopback_connections_use_reno_and_others_keep_the_default() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stream = TcpStream::connect(addr).await.unwrap();
        let default = rustix::net::sockopt::tcp_congestion(&stream).unwrap();
        // Not loopback: untouched, whatever the peer's address says of the socket.
        prefer_unpaced_on_loopback(&stream, "192.0.2.1:8200".parse().unwrap());
        assert_eq!(
            rustix::net::sockopt::tcp_congestion(&stream).unwrap(),
            default
        );
        prefer_unpaced_on_loopback(&stream, addr);
        assert_eq!(
            rustix::net::sockopt::tcp_congestion(&stream).unwrap(),
            LOOPBACK_CONGESTION
        );
    }
}
