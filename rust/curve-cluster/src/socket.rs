//! A server's listening socket, bound by the process that starts the server.
//!
//! `LocalCluster` binds each server's port itself and hands the bound socket down as an
//! inherited file descriptor, so no other process can take the port between its choice
//! and the server's start, and a restart on a port something else took fails at once, in
//! the starter, saying so. The socket arrives bound but not listening: the kernel refuses
//! connections to it until the server calls `listen`, which a standby MDS does only once
//! it is active. The starter keeps no copy, so once the server dies its port refuses
//! connections, as a dead server's does, instead of accepting into a backlog nobody serves.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};

use rustix::io::{FdFlags, fcntl_setfd};
use rustix::net::{AddressFamily, SocketFlags, SocketType, sockopt};

/// Connections the kernel queues for a server before it accepts them.
const BACKLOG: i32 = 1024;

/// A bound TCP socket, not yet listening.
#[derive(Debug)]
pub struct ServerSocket {
    fd: OwnedFd,
    addr: SocketAddr,
}

impl ServerSocket {
    /// Takes the socket this process inherited as descriptor `fd`, which must be a TCP
    /// socket bound to `port`.
    pub fn inherit(fd: RawFd, port: u16) -> io::Result<Self> {
        let invalid = |message: String| io::Error::new(io::ErrorKind::InvalidInput, message);
        if fd < 0 {
            return Err(invalid(format!("{fd} is not a file descriptor")));
        }
        // SAFETY: borrowed only for the two queries below, during which nothing in this
        // process closes descriptors it does not own. If nothing is open under `fd`, both
        // fail with EBADF; if something else is, the checks refuse it without closing it.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let not_ours = |why: String| invalid(format!("descriptor {fd} {why}"));
        match sockopt::socket_type(borrowed) {
            Ok(SocketType::STREAM) => {}
            Ok(_) => return Err(not_ours("is not a stream socket".into())),
            Err(e) => return Err(not_ours(format!("is not a socket: {e}"))),
        }
        let addr = rustix::net::getsockname(borrowed)
            .ok()
            .and_then(|a| SocketAddr::try_from(a).ok())
            .ok_or_else(|| not_ours("is not an IP socket".into()))?;
        if addr.port() != port {
            return Err(not_ours(format!("is bound to {addr}, not to port {port}")));
        }
        // SAFETY: `fd` is an open TCP socket bound to this server's own port: the one its
        // starter bound for it and handed down (`--listen-fd`). Nothing else in this
        // process owns it, so the new `OwnedFd` is its only owner from here on.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // Whatever this process might start later must not hold the port open.
        fcntl_setfd(&fd, FdFlags::CLOEXEC)?;
        Ok(Self { fd, addr })
    }

    /// Binds `addr` here, as the starter would have (for a server started by hand).
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        let family = if addr.is_ipv4() {
            AddressFamily::INET
        } else {
            AddressFamily::INET6
        };
        let fd = rustix::net::socket_with(family, SocketType::STREAM, SocketFlags::CLOEXEC, None)?;
        // Rebinding a port whose last server left connections in TIME_WAIT. Set after a
        // fresh port's bind, so that no two fresh sockets can be handed the same one, and
        // before the server's connections inherit it from the socket.
        if addr.port() != 0 {
            sockopt::set_socket_reuseaddr(&fd, true)?;
        }
        rustix::net::bind(&fd, &addr).map_err(|e| in_use(e.into(), addr))?;
        sockopt::set_socket_reuseaddr(&fd, true)?;
        let addr = rustix::net::getsockname(&fd)
            .ok()
            .and_then(|a| SocketAddr::try_from(a).ok())
            .unwrap_or(addr);
        Ok(Self { fd, addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Opens the port: from here on connections are accepted (into the backlog until the
    /// server takes them). Call it inside the tokio runtime that will serve.
    pub fn listen(self) -> io::Result<tokio::net::TcpListener> {
        rustix::net::listen(&self.fd, BACKLOG).map_err(|e| in_use(e.into(), self.addr))?;
        let listener = std::net::TcpListener::from(self.fd);
        listener.set_nonblocking(true)?;
        tokio::net::TcpListener::from_std(listener)
    }
}

fn in_use(e: io::Error, addr: SocketAddr) -> io::Error {
    if e.kind() == io::ErrorKind::AddrInUse {
        io::Error::new(
            e.kind(),
            format!("port {} is in use by another socket ({e})", addr.port()),
        )
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::os::fd::{AsRawFd, IntoRawFd};

    use super::*;

    fn refused(addr: SocketAddr) -> bool {
        std::net::TcpStream::connect(addr).is_err()
    }

    #[tokio::test]
    async fn a_bound_socket_refuses_until_it_listens() {
        let sock = ServerSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = sock.local_addr();
        assert_ne!(addr.port(), 0);
        assert!(refused(addr));
        let listener = sock.listen().unwrap();
        assert!(!refused(addr));
        drop(listener);
        assert!(refused(addr));
    }

    #[tokio::test]
    async fn an_inherited_descriptor_is_checked_before_it_is_taken() {
        let sock = ServerSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = sock.local_addr().port();
        let raw = sock.fd.into_raw_fd();
        let e = ServerSocket::inherit(raw, port.wrapping_add(1)).unwrap_err();
        assert!(e.to_string().contains("not to port"), "{e}");
        let sock = ServerSocket::inherit(raw, port).unwrap();
        assert_eq!(sock.local_addr().port(), port);
        drop(sock.listen().unwrap());

        let file = std::fs::File::open("/dev/null").unwrap();
        let e = ServerSocket::inherit(file.as_raw_fd(), port).unwrap_err();
        assert!(e.to_string().contains("not a socket"), "{e}");
        assert!(ServerSocket::inherit(-1, port).is_err());
    }

    #[tokio::test]
    async fn listening_on_a_port_another_socket_listens_on_fails_clearly() {
        let first = ServerSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = first.local_addr();
        let _listening = first.listen().unwrap();
        let e = ServerSocket::bind(addr).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert!(e.to_string().contains("in use"), "{e}");
    }
}
