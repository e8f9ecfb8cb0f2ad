//! UDP plumbing: the recvmsg template for multishot receives, reading the
//! sender and GRO segment size out of a received buffer, and send slots that
//! keep a sendmsg's memory alive until the kernel completes it.

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Instant;

use io_uring::types::RecvMsgOut;
use protocols::{DatagramHandler, Replies};

use crate::stats::WorkerStats;
use socket2::SockAddr;

use crate::socket::{SOL_UDP, UDP_SEGMENT};
pub(crate) use kernel_io::sockopt::gro_segment;

/// Bytes reserved in every UDP receive buffer ahead of the payload: the
/// io_uring_recvmsg_out header, the sender's address and the control data.
pub const RECV_HEADROOM: usize = 16 + NAME_LEN as usize + CONTROL_LEN as usize;
/// Largest UDP payload (and so largest GRO train) a buffer must hold.
pub const MAX_PAYLOAD: usize = 65_535;
/// Room for the sender's address in a received buffer.
const NAME_LEN: u32 = std::mem::size_of::<libc::sockaddr_storage>() as u32;
/// Room for the control messages (the GRO segment size) in a received buffer.
const CONTROL_LEN: u32 = 64;
/// Most segments one GSO send may carry (the kernel's UDP_MAX_SEGMENTS).
pub const MAX_GSO_SEGMENTS: usize = 64;
/// Largest total payload of one GSO send (an IP packet's limit, minus headers).
pub const MAX_GSO_BYTES: usize = 65_000;

/// The msghdr a multishot recvmsg takes as its template: only the name and
/// control lengths matter; the kernel lays both out in each buffer it fills.
pub fn recv_template() -> Box<libc::msghdr> {
    // SAFETY: msghdr is plain old data; all-zero is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_namelen = NAME_LEN;
    msg.msg_controllen = CONTROL_LEN as usize;
    Box::new(msg)
}

/// One datagram (or GRO train) as the kernel delivered it.
pub struct Received<'a> {
    /// Who sent it.
    pub peer: Option<SocketAddr>,
    /// The payload bytes.
    pub payload: &'a [u8],
    /// The size of each datagram in the train (the last may be shorter); the
    /// whole payload when it is a single datagram.
    pub segment: usize,
    /// The payload did not fit the buffer.
    pub truncated: bool,
}

/// Parses a buffer filled by multishot recvmsg with `template`.
pub fn parse_received<'a>(buffer: &'a [u8], template: &libc::msghdr) -> Option<Received<'a>> {
    let out = RecvMsgOut::parse(buffer, template).ok()?;
    // The parsed view borrows itself, not the buffer: locate the payload in
    // the buffer so it can outlive the view.
    let payload = out.payload_data();
    let start = payload.as_ptr() as usize - buffer.as_ptr() as usize;
    let payload = buffer.get(start..start + payload.len())?;
    let segment = gro_segment(out.control_data())
        .filter(|&s| s > 0)
        .unwrap_or(payload.len());
    Some(Received {
        peer: sockaddr_from_bytes(out.name_data()),
        payload,
        segment,
        truncated: out.is_payload_truncated(),
    })
}

/// Sources whose datagrams are never answered, because they are services
/// that answer datagrams themselves: a datagram whose source was spoofed
/// to one of them would start an endless exchange between two answering
/// services (one 5-byte datagram "from our echo port" to our `ok` port kept
/// both busy at 130,000 datagrams a second of 64 KiB, for good;
/// `udp_loops_refused` counts what is dropped). As inetd's `check_loop`:
///
/// - by port, from any address: echo (7), daytime (13), chargen (19),
///   time (37), port 0, and this server's own UDP ports that lie outside
///   the kernel's ephemeral range (another host running the same services
///   loops too, and no client is given such a port unless it binds one);
/// - by address: this server's own UDP sockets (for a service bound to
///   every address, its port on any loopback address). An own port inside
///   the ephemeral range is refused only there, since ordinary clients
///   elsewhere are handed that port number all the time.
#[derive(Debug, Clone, Default)]
pub struct LoopGuard {
    /// Source ports refused from any address.
    ports: Vec<u16>,
    /// Our own UDP service addresses.
    own: Vec<SocketAddr>,
}

impl LoopGuard {
    /// The well-known services that answer whatever they are sent.
    pub const ANSWERING_SERVICES: [u16; 5] = [0, 7, 13, 19, 37];

    /// Refuses the well-known answering ports and `own` (this server's UDP
    /// service addresses) as the type's docs say, with `ephemeral` the
    /// kernel's range of ports for clients.
    pub fn new(
        own: impl IntoIterator<Item = SocketAddr>,
        ephemeral: std::ops::RangeInclusive<u16>,
    ) -> Self {
        let own: Vec<SocketAddr> = own.into_iter().collect();
        let mut ports: Vec<u16> = Self::ANSWERING_SERVICES
            .into_iter()
            .chain(
                own.iter()
                    .map(SocketAddr::port)
                    .filter(|p| !ephemeral.contains(p)),
            )
            .collect();
        ports.sort_unstable();
        ports.dedup();
        Self { ports, own }
    }

    /// [`new`](Self::new) for the UDP services among `services`, with the
    /// ephemeral range this machine's kernel uses.
    pub fn for_services(services: &[crate::BoundService]) -> Self {
        Self::new(
            services
                .iter()
                .filter(|s| s.transport == protocols::Transport::Udp)
                .map(|s| s.addr),
            ephemeral_ports(),
        )
    }

    /// True when datagrams from `peer` must go unanswered.
    pub fn refuses(&self, peer: SocketAddr) -> bool {
        self.ports.contains(&peer.port())
            || self.own.iter().any(|own| {
                own.port() == peer.port()
                    && (own.ip() == peer.ip()
                        || (own.ip().is_unspecified() && peer.ip().is_loopback()))
            })
    }
}

/// The kernel's range of ports for clients (`net.ipv4.ip_local_port_range`,
/// which IPv6 shares); Linux's default where it cannot be read.
fn ephemeral_ports() -> std::ops::RangeInclusive<u16> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut ends = text.split_whitespace().map(|n| n.parse::<u16>().ok());
            Some(ends.next()??..=ends.next()??)
        })
        .unwrap_or(32768..=60999)
}

/// What a worker needs to answer datagrams, whatever its I/O: the guard
/// against reply loops, the counters, and (reused from datagram to
/// datagram) the replies being built and the sends planned for them. Both
/// drivers answer through it; only how they send the planned sends differs.
pub(crate) struct Answering {
    guard: LoopGuard,
    stats: Arc<WorkerStats>,
    replies: Replies,
    lens: Vec<usize>,
    plan: Vec<PlannedSend>,
}

impl Answering {
    /// Answering under `guard`, counting into `stats`.
    pub(crate) fn new(guard: LoopGuard, stats: Arc<WorkerStats>) -> Self {
        Self {
            guard,
            stats,
            replies: Replies::new(),
            lens: Vec::new(),
            plan: Vec::new(),
        }
    }

    /// Hands each datagram of `received` (one datagram, or a GRO train cut
    /// at its segment size) from `peer` to `handler`, counts what arrived,
    /// and plans the replies as sends ([`plan_sends`], GSO trains when
    /// `gso`); drops, unanswered, what comes from a port the guard refuses.
    /// The replies and the plan stay until the next call.
    pub(crate) fn answer(
        &mut self,
        received: &Received<'_>,
        peer: SocketAddr,
        handler: &mut dyn DatagramHandler,
        now: Instant,
        gso: bool,
    ) {
        let stats = &self.stats;
        let replies = &mut self.replies;
        replies.clear();
        let refused = self.guard.refuses(peer);
        let mut segments = 0u64;
        if received.payload.is_empty() {
            if !refused {
                handler.on_datagram(now, peer, &[], replies);
            }
            segments = 1;
        }
        for datagram in received.payload.chunks(received.segment.max(1)) {
            if !refused {
                handler.on_datagram(now, peer, datagram, replies);
            }
            segments += 1;
        }
        if refused {
            stats.udp_loops_refused.add(segments);
        }
        stats.datagrams_in.add(segments);
        stats.bytes_in.add(received.payload.len() as u64);
        if segments > 1 {
            stats.gro_receives.inc();
        }
        if received.truncated {
            stats.udp_truncated.inc();
        }
        self.lens.clear();
        self.lens.extend(replies.iter().map(<[u8]>::len));
        plan_sends(&self.lens, gso, &mut self.plan);
    }

    /// The replies of the last datagram answered.
    pub(crate) fn replies(&self) -> &Replies {
        &self.replies
    }

    /// The sends planned for them: `(first, count, segment)` each.
    pub(crate) fn sends(&self) -> &[PlannedSend] {
        &self.plan
    }
}

/// Counts a finished UDP send of `segments` datagrams (`result`: the bytes
/// sent, or the error). Returns true when the error says the path refused
/// GSO: nothing is counted then, and the caller resends the train one
/// datagram at a time ([`resend_singly`]) and sends no more trains on that
/// socket.
pub fn count_send(stats: &WorkerStats, segments: u32, result: io::Result<usize>) -> bool {
    match result {
        Ok(bytes) => {
            stats.datagrams_out.add(u64::from(segments));
            stats.bytes_out.add(bytes as u64);
            if segments > 1 {
                stats.gso_sends.inc();
            }
            false
        }
        Err(e) if segments > 1 && gso_refused(&e) => {
            tracing::debug!("udp send: GSO refused ({e}); resending one datagram at a time");
            stats.gso_refused.inc();
            true
        }
        Err(e) => {
            stats.udp_replies_dropped.add(u64::from(segments));
            tracing::debug!("udp send: {e}");
            false
        }
    }
}

/// The errors a GSO send fails with when the path cannot take the train:
/// a segment over the path MTU (EMSGSIZE on current kernels, EINVAL on
/// older ones), a device without checksum offload (EIO), no offload at all.
fn gso_refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO | libc::EINVAL | libc::EMSGSIZE | libc::EOPNOTSUPP)
    )
}

/// Sends the train in `train` (refused as GSO) one datagram per sendmsg,
/// through `single`, and counts each.
pub fn resend_singly(fd: RawFd, train: &SendSlot, single: &mut SendSlot, stats: &WorkerStats) {
    let Some(peer) = train.peer.as_socket() else {
        return;
    };
    let size = usize::from(train.segment_size.max(1));
    for datagram in train.payload.chunks(size) {
        single.payload.clear();
        single.payload.extend_from_slice(datagram);
        single.segments = 1;
        let result = send_now(fd, single, peer, None);
        count_send(stats, 1, result);
    }
}

/// Sends `slot`'s payload to `peer` on `fd` with a synchronous, non-blocking
/// sendmsg (as a GSO train of `gso`-byte segments when given).
pub fn send_now(
    fd: RawFd,
    slot: &mut SendSlot,
    peer: SocketAddr,
    gso: Option<u16>,
) -> io::Result<usize> {
    let msg = slot.prepare(peer, gso);
    // SAFETY: `msg` points into `slot`, alive and unchanged for the whole
    // call; the kernel is done with it when sendmsg returns.
    let sent = unsafe { libc::sendmsg(fd, msg, libc::MSG_DONTWAIT) };
    if sent < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(sent as usize)
    }
}

/// Reads a socket address the kernel wrote as raw bytes.
pub fn sockaddr_from_bytes(name: &[u8]) -> Option<SocketAddr> {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = name
        .len()
        .min(std::mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: `len` bytes fit both the source slice and the storage.
    unsafe {
        std::ptr::copy_nonoverlapping(
            name.as_ptr(),
            (&mut storage as *mut libc::sockaddr_storage).cast::<u8>(),
            len,
        )
    };
    // SAFETY: storage holds `len` bytes of a kernel-written socket address.
    unsafe { SockAddr::new(storage, len as libc::socklen_t) }.as_socket()
}

#[repr(C)]
struct GsoControl {
    header: libc::cmsghdr,
    segment: u16,
    _pad: [u8; 6],
}

/// The memory of one sendmsg: payload, address, iovec, control data and the
/// msghdr pointing at them. Boxed so the pointers stay valid while the kernel
/// owns the request.
pub struct SendSlot {
    /// The payload: one datagram, or a GSO train of equal-sized segments.
    pub payload: Vec<u8>,
    /// Datagrams in the payload.
    pub segments: u32,
    /// The segment size of a GSO train (0 for a single datagram).
    pub segment_size: u16,
    /// Which of the worker's UDP sockets it was sent on.
    pub socket: usize,
    peer: SockAddr,
    iov: libc::iovec,
    control: GsoControl,
    msg: libc::msghdr,
}

impl SendSlot {
    /// An empty slot.
    pub fn new() -> Box<Self> {
        Box::new(Self {
            payload: Vec::new(),
            segments: 0,
            segment_size: 0,
            socket: 0,
            peer: SockAddr::from(SocketAddr::from(([0, 0, 0, 0], 0))),
            iov: libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            },
            // SAFETY: plain old data; all-zero is a valid value.
            control: unsafe { std::mem::zeroed() },
            // SAFETY: plain old data; all-zero is a valid value.
            msg: unsafe { std::mem::zeroed() },
        })
    }

    /// Copies replies `first..first + count` into the payload.
    pub fn fill(&mut self, replies: &Replies, first: usize, count: usize) {
        self.payload.clear();
        for reply in (first..first + count).filter_map(|r| replies.get(r)) {
            self.payload.extend_from_slice(reply);
        }
        self.segments = count as u32;
    }

    /// Points the msghdr at this slot's payload for `peer`; with
    /// `segment_size`, the payload is sent as a GSO train of that size.
    /// The returned pointer is valid while `self` is neither moved nor changed.
    pub fn prepare(&mut self, peer: SocketAddr, segment_size: Option<u16>) -> *const libc::msghdr {
        self.peer = SockAddr::from(peer);
        self.iov = libc::iovec {
            iov_base: self.payload.as_mut_ptr().cast(),
            iov_len: self.payload.len(),
        };
        self.msg.msg_name = self.peer.as_ptr().cast_mut().cast();
        self.msg.msg_namelen = self.peer.len();
        self.msg.msg_iov = &mut self.iov;
        self.msg.msg_iovlen = 1;
        self.segment_size = segment_size.unwrap_or(0);
        match segment_size {
            Some(size) => {
                self.control.header.cmsg_len =
                    std::mem::size_of::<libc::cmsghdr>() + std::mem::size_of::<u16>();
                self.control.header.cmsg_level = SOL_UDP;
                self.control.header.cmsg_type = UDP_SEGMENT;
                self.control.segment = size;
                self.msg.msg_control = (&mut self.control as *mut GsoControl).cast();
                self.msg.msg_controllen = std::mem::size_of::<GsoControl>();
            }
            None => {
                self.msg.msg_control = std::ptr::null_mut();
                self.msg.msg_controllen = 0;
            }
        }
        &self.msg
    }
}

/// One planned send: `count` replies from index `first`, cut into
/// `segment`-byte datagrams when `count > 1`.
pub type PlannedSend = (usize, usize, usize);

/// Splits replies of the given lengths (all to one peer) into sends into
/// `plan` (cleared first): runs of equal-sized replies become one GSO train
/// (the last of a run may be shorter, as GSO allows); anything else goes alone.
pub fn plan_sends(lens: &[usize], gso: bool, plan: &mut Vec<PlannedSend>) {
    plan.clear();
    let mut i = 0;
    while i < lens.len() {
        let size = lens[i];
        let mut count = 1;
        let mut total = size;
        if gso && size > 0 {
            while i + count < lens.len()
                && count < MAX_GSO_SEGMENTS
                && lens[i + count] > 0
                && lens[i + count] <= size
                && total + lens[i + count] <= MAX_GSO_BYTES
            {
                total += lens[i + count];
                count += 1;
                if lens[i + count - 1] < size {
                    break; // a shorter segment can only be the last
                }
            }
        }
        plan.push((i, count, size));
        i += count;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socket::UDP_GRO;

    #[test]
    fn answering_ports_and_our_own_sockets_are_refused() {
        let own = [
            "127.0.0.1:8888",
            "0.0.0.0:5555",
            "127.0.0.1:40000",
            "0.0.0.0:41000",
        ]
        .map(|a| a.parse().unwrap());
        let guard = LoopGuard::new(own, 32768..=60999);
        for refused in [
            "127.0.0.1:8888", // our own socket
            "10.1.2.3:8888",  // our port, outside the ephemeral range: any address
            "[::1]:5555",
            "[::1]:7", // the classic answering services
            "127.0.0.1:19",
            "127.0.0.1:0",
            "127.0.0.1:40000", // our socket, its port in the ephemeral range
            "127.0.0.9:41000", // bound to every address: any loopback one
        ] {
            assert!(guard.refuses(refused.parse().unwrap()), "{refused}");
        }
        for answered in [
            "127.0.0.1:40001",
            "127.0.5.1:40000", // a client handed our port number elsewhere
            "10.1.2.3:40000",
            "10.1.2.3:41000",
            "[::1]:53",
        ] {
            assert!(!guard.refuses(answered.parse().unwrap()), "{answered}");
        }
    }

    fn plan_sends(lens: &[usize], gso: bool) -> Vec<PlannedSend> {
        let mut plan = Vec::new();
        super::plan_sends(lens, gso, &mut plan);
        plan
    }

    #[test]
    fn gso_plan_groups_equal_sizes_and_respects_limits() {
        assert_eq!(plan_sends(&[10, 10, 10], true), vec![(0, 3, 10)]);
        assert_eq!(
            plan_sends(&[10, 10, 4, 10], true),
            vec![(0, 3, 10), (3, 1, 10)]
        );
        assert_eq!(plan_sends(&[10, 20], true), vec![(0, 1, 10), (1, 1, 20)]);
        assert_eq!(plan_sends(&[0, 0], true), vec![(0, 1, 0), (1, 1, 0)]);
        assert_eq!(plan_sends(&[10, 10], false), vec![(0, 1, 10), (1, 1, 10)]);
        let many = vec![8; 100];
        assert_eq!(plan_sends(&many, true), vec![(0, 64, 8), (64, 36, 8)]);
        let big = vec![30_000; 3];
        assert_eq!(plan_sends(&big, true), vec![(0, 2, 30_000), (2, 1, 30_000)]);
    }

    #[test]
    fn gro_segment_is_found_among_control_messages() {
        let mut control = [0u8; 64];
        let header = |len: usize, level: i32, ty: i32| {
            let mut h = Vec::new();
            h.extend_from_slice(&len.to_ne_bytes());
            h.extend_from_slice(&level.to_ne_bytes());
            h.extend_from_slice(&ty.to_ne_bytes());
            h
        };
        // An unrelated cmsg first (len 20, padded to 24), then UDP_GRO = 1200.
        control[..16].copy_from_slice(&header(20, 0, 1));
        control[24..40].copy_from_slice(&header(20, SOL_UDP, UDP_GRO));
        control[40..44].copy_from_slice(&1200i32.to_ne_bytes());
        assert_eq!(gro_segment(&control[..48]), Some(1200));
        assert_eq!(gro_segment(&control[..16]), None);
        assert_eq!(gro_segment(&[]), None);
    }

    #[test]
    fn socket_addresses_survive_the_byte_round_trip() {
        for text in ["127.0.0.1:8888", "[::1]:65432"] {
            let addr: SocketAddr = text.parse().unwrap();
            let raw = SockAddr::from(addr);
            // SAFETY: raw points to `len` valid bytes of a socket address.
            let bytes = unsafe {
                std::slice::from_raw_parts(raw.as_ptr().cast::<u8>(), raw.len() as usize)
            };
            assert_eq!(sockaddr_from_bytes(bytes), Some(addr));
        }
    }
}
