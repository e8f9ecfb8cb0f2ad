//! Creating each worker's SO_REUSEPORT sockets for a service.

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::error::EngineError;
use crate::ServiceConfig;
use protocols::Transport;

pub(crate) use kernel_io::sockopt::{set_int_option, SOL_UDP, UDP_GRO, UDP_SEGMENT};

const LISTEN_BACKLOG: i32 = 4096;
const UDP_RECV_BUFFER: usize = 8 * 1024 * 1024;

/// Binds `count` sockets sharing the service's address with SO_REUSEPORT, one
/// per worker, and returns them with the address they share (the real port
/// when the configured one is 0). `udp_gro` enables UDP_GRO on UDP sockets,
/// for readers that split coalesced trains.
///
/// Before binding the group, a probe socket *without* SO_REUSEPORT binds the
/// address: this fails when anything already holds the port, even another
/// ringcore that would otherwise silently share it.
pub fn bind_group(
    service: &ServiceConfig,
    count: usize,
    udp_gro: bool,
) -> Result<(Vec<OwnedFd>, SocketAddr), EngineError> {
    let transport = service.transport();
    let fail = |addr: SocketAddr, e: io::Error| match e.raw_os_error() {
        Some(libc::EADDRINUSE) => EngineError::PortInUse {
            transport,
            addr,
            protocol: service.protocol.clone(),
        },
        Some(libc::EACCES) | Some(libc::EPERM) => EngineError::PermissionDenied {
            transport,
            addr,
            protocol: service.protocol.clone(),
        },
        _ => EngineError::Socket {
            transport,
            addr,
            protocol: service.protocol.clone(),
            source: e,
        },
    };
    let mut addr = service.addr;
    if addr.port() != 0 {
        let probe = new_socket(transport, addr, false).map_err(|e| fail(addr, e))?;
        probe
            .bind(&SockAddr::from(addr))
            .map_err(|e| fail(addr, e))?;
    }
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count {
        let socket = new_socket(transport, addr, true).map_err(|e| fail(addr, e))?;
        socket
            .bind(&SockAddr::from(addr))
            .map_err(|e| fail(addr, e))?;
        if addr.port() == 0 {
            addr = socket
                .local_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .ok_or_else(|| fail(addr, io::Error::other("no local address after bind")))?;
        }
        match transport {
            Transport::Tcp => socket.listen(LISTEN_BACKLOG).map_err(|e| fail(addr, e))?,
            Transport::Udp => configure_udp(&socket, udp_gro).map_err(|e| fail(addr, e))?,
        }
        sockets.push(OwnedFd::from(socket));
    }
    Ok((sockets, addr))
}

fn new_socket(transport: Transport, addr: SocketAddr, reuse_port: bool) -> io::Result<Socket> {
    let (ty, proto) = match transport {
        Transport::Tcp => (Type::STREAM, Protocol::TCP),
        Transport::Udp => (Type::DGRAM, Protocol::UDP),
    };
    let socket = Socket::new(Domain::for_address(addr), ty.cloexec(), Some(proto))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if transport == Transport::Tcp {
        socket.set_reuse_address(true)?;
        // Accepted sockets inherit TCP_NODELAY from the listener on Linux:
        // small echoes must not wait for Nagle.
        socket.set_nodelay(true)?;
    }
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    Ok(socket)
}

fn configure_udp(socket: &Socket, gro: bool) -> io::Result<()> {
    // A larger queue absorbs bursts; failure to grow it is not fatal.
    if socket.set_recv_buffer_size(UDP_RECV_BUFFER).is_err() {
        tracing::debug!("could not raise the UDP receive buffer");
    }
    // GRO delivers a train of equal-sized datagrams as one buffer, the
    // segment size in a cmsg. Only a reader that splits trains may ask for
    // it: one that reads plain datagrams would take a train for one.
    if gro {
        let on: libc::c_int = 1;
        set_int_option(socket, SOL_UDP, UDP_GRO, on)
            .unwrap_or_else(|e| tracing::debug!("UDP_GRO unavailable: {e}"));
    }
    Ok(())
}

/// Bytes waiting in a TCP socket's receive queue (SIOCINQ).
pub fn queued_input(fd: libc::c_int) -> usize {
    let mut queued: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int to the pointer given.
    let rc = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut queued) };
    if rc == 0 {
        usize::try_from(queued).unwrap_or(0)
    } else {
        0
    }
}
