//! A WAN between a branch and its upstream, emulated on loopback (the kernel here has no netem):
//! a relay that listens on one address for TCP and UDP alike and forwards both to the upstream
//! through a link with a one-way delay, a bandwidth cap shared by every flow of a direction, and
//! for UDP random loss (or none of it at all: a blocked UDP path).
//!
//! Each direction is a serial link: a packet (UDP datagram, or TCP chunk as read from a socket)
//! occupies it for `len / rate`, then arrives `delay` later, in order. UDP beyond `queue` of
//! queued link time is dropped, as a router's queue does; TCP is not dropped
//! (the relay cannot drop segments of the kernel's connections) but stops being read, so the
//! sender's flow control backs off instead. Stopping the relay drops every connection and UDP
//! flow through it, as a WAN outage or an emulator restart does.
//!
//! `tun` is the packet form: every IP packet, TCP included, crosses the same link (for
//! benchmarks, with CAP_NET_ADMIN; built with the `wan-tun` feature only, so that the binary a
//! branch runs holds no `ioctl`). A tool for tests and benchmarks; it knows nothing of HTTP or
//! QUIC.

#[cfg(feature = "wan-tun")]
pub mod tun;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::testkit::random::SplitMix;

/// Default link time a queue may hold before UDP is dropped (and TCP is no longer read).
pub const QUEUE_LIMIT: Duration = Duration::from_millis(100);
/// A UDP flow with no datagram for this long is forgotten.
const UDP_IDLE: Duration = Duration::from_secs(60);
const TCP_CHUNK: usize = 16 * 1024;

/// The emulated path, the same in both directions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    /// One-way delay (the round trip is twice this).
    pub delay: Duration,
    /// Bytes per second each way; `None` = no cap.
    pub rate: Option<u64>,
    /// Probability that a UDP datagram is lost, 0.0..=1.0.
    pub loss: f64,
    /// Drop every UDP datagram (a firewall that blocks QUIC).
    pub block_udp: bool,
    /// The bottleneck's buffer, as link time: UDP beyond it is dropped, TCP beyond it is not
    /// read.
    pub queue: Duration,
}

impl Default for Link {
    fn default() -> Link {
        Link {
            delay: Duration::ZERO,
            rate: None,
            loss: 0.0,
            block_udp: false,
            queue: QUEUE_LIMIT,
        }
    }
}

/// What crossed the emulator. `up` = towards the upstream, `down` = towards the branch.
/// Packets are UDP datagrams in the relay, every IP packet in the TUN form.
#[derive(Debug, Default)]
pub struct Stats {
    pub tcp_connections: AtomicU64,
    pub tcp_bytes_up: AtomicU64,
    pub tcp_bytes_down: AtomicU64,
    pub packets_up: AtomicU64,
    pub packets_down: AtomicU64,
    pub packet_bytes_up: AtomicU64,
    pub packet_bytes_down: AtomicU64,
    /// Packets lost on purpose (loss, blocked UDP) or to a full queue.
    pub dropped: AtomicU64,
}

impl Stats {
    pub fn tcp_connections(&self) -> u64 {
        self.tcp_connections.load(Ordering::Relaxed)
    }

    /// Packets forwarded either way.
    pub fn packets(&self) -> u64 {
        self.packets_up.load(Ordering::Relaxed) + self.packets_down.load(Ordering::Relaxed)
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Bytes forwarded towards the branch, relayed TCP and packets.
    pub fn bytes_down(&self) -> u64 {
        self.tcp_bytes_down.load(Ordering::Relaxed) + self.packet_bytes_down.load(Ordering::Relaxed)
    }
}

/// One direction's bottleneck: when it is free again.
struct Wire {
    rate: Option<u64>,
    free_at: Mutex<Instant>,
}

impl Wire {
    fn new(rate: Option<u64>) -> Wire {
        Wire {
            rate,
            free_at: Mutex::new(Instant::now()),
        }
    }

    /// Put `len` bytes on the wire: when their last bit has left, or `None` if the queue
    /// ahead is longer than `limit` (then nothing is reserved).
    fn send(&self, len: usize, limit: Option<Duration>) -> Option<Instant> {
        let mut free_at = crate::lock::lock(&self.free_at);
        let now = Instant::now();
        let start = (*free_at).max(now);
        if let Some(limit) = limit
            && start.duration_since(now) > limit
        {
            return None;
        }
        let busy = match self.rate {
            Some(rate) => Duration::from_secs_f64(len as f64 / rate.max(1) as f64),
            None => Duration::ZERO,
        };
        *free_at = start + busy;
        Some(*free_at)
    }

    /// How long until the queue is back under `limit`.
    fn backlog_over(&self, limit: Duration) -> Duration {
        let free_at = *crate::lock::lock(&self.free_at);
        free_at
            .saturating_duration_since(Instant::now())
            .saturating_sub(limit)
    }
}

/// What may change while the emulator runs, and what it counted.
#[derive(Debug, Default)]
pub struct Controls {
    /// Loss probability as f64 bits.
    loss: AtomicU64,
    block_udp: AtomicBool,
    pub stats: Stats,
}

impl Controls {
    pub fn new(link: &Link) -> Arc<Controls> {
        let controls = Controls::default();
        controls.set_loss(link.loss);
        controls.block_udp(link.block_udp);
        Arc::new(controls)
    }

    /// Random loss from now on, 0.0..=1.0.
    pub fn set_loss(&self, loss: f64) {
        self.loss
            .store(loss.clamp(0.0, 1.0).to_bits(), Ordering::Relaxed);
    }

    pub fn loss(&self) -> f64 {
        f64::from_bits(self.loss.load(Ordering::Relaxed))
    }

    /// Block (or unblock) UDP from now on.
    pub fn block_udp(&self, blocked: bool) {
        self.block_udp.store(blocked, Ordering::Relaxed);
    }
}

struct Shared {
    link: Link,
    /// Where the relay forwards to (none in the TUN form).
    target: Option<SocketAddr>,
    up: Wire,
    down: Wire,
    controls: Arc<Controls>,
    rng: Mutex<SplitMix>,
}

impl Shared {
    fn new(link: Link, target: Option<SocketAddr>, controls: Arc<Controls>) -> Shared {
        Shared {
            link,
            target,
            up: Wire::new(link.rate),
            down: Wire::new(link.rate),
            controls,
            rng: Mutex::new(SplitMix(0x5eed)),
        }
    }

    fn stats(&self) -> &Stats {
        &self.controls.stats
    }

    /// Whether a packet survives: blocked UDP, then random loss.
    fn passes(&self, udp: bool) -> bool {
        if udp && self.controls.block_udp.load(Ordering::Relaxed) {
            return false;
        }
        let loss = self.controls.loss();
        if loss <= 0.0 {
            return true;
        }
        let draw = crate::lock::lock(&self.rng).next_u64();
        (draw >> 11) as f64 / (1u64 << 53) as f64 >= loss
    }

    /// Count a forwarded packet.
    fn count_packet(&self, direction: Direction, len: usize) {
        let (count, total) = match direction {
            Direction::Up => (&self.stats().packets_up, &self.stats().packet_bytes_up),
            Direction::Down => (&self.stats().packets_down, &self.stats().packet_bytes_down),
        };
        count.fetch_add(1, Ordering::Relaxed);
        total.fetch_add(len as u64, Ordering::Relaxed);
    }
}

/// A running relay. Dropping it stops it too, but [`Relay::stop`] waits until its sockets are
/// closed, so the address can be bound again at once.
pub struct Relay {
    addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: JoinSet<()>,
}

impl Relay {
    /// Listen on `listen` (TCP and UDP, the same port; port 0 picks one free for both) and
    /// forward to `target`.
    pub async fn start(listen: SocketAddr, target: SocketAddr, link: Link) -> io::Result<Relay> {
        let (tcp, udp) = bind_pair(listen).await?;
        let addr = tcp.local_addr()?;
        let shared = Arc::new(Shared::new(link, Some(target), Controls::new(&link)));
        let mut tasks = JoinSet::new();
        tasks.spawn(accept_tcp(tcp, shared.clone()));
        tasks.spawn(relay_udp(Arc::new(udp), shared.clone()));
        Ok(Relay {
            addr,
            shared,
            tasks,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stats(&self) -> &Stats {
        self.shared.stats()
    }

    /// Loss and UDP blocking, changeable while it runs.
    pub fn controls(&self) -> &Arc<Controls> {
        &self.shared.controls
    }

    /// Block (or unblock) UDP from now on.
    pub fn block_udp(&self, blocked: bool) {
        self.shared.controls.block_udp(blocked);
    }

    /// Drop every connection and flow and close the sockets.
    pub async fn stop(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// TCP and UDP on the same port: with port 0, try ports the kernel picks for TCP until UDP is
/// free on the same one too.
async fn bind_pair(listen: SocketAddr) -> io::Result<(TcpListener, UdpSocket)> {
    let mut last = None;
    for _ in 0..32 {
        let tcp = TcpListener::bind(listen).await?;
        let mut at = listen;
        at.set_port(tcp.local_addr()?.port());
        match UdpSocket::bind(at).await {
            Ok(udp) => return Ok((tcp, udp)),
            Err(e) if listen.port() == 0 => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no port free for both TCP and UDP")))
}

async fn accept_tcp(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        shared
            .stats()
            .tcp_connections
            .fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        connections.spawn(async move {
            let Some(target) = shared.target else {
                return;
            };
            let Ok(server) = TcpStream::connect(target).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (client_rx, client_tx) = client.into_split();
            let (server_rx, server_tx) = server.into_split();
            let up = pipe(client_rx, server_tx, shared.clone(), Direction::Up);
            let down = pipe(server_rx, client_tx, shared, Direction::Down);
            // Either side closing ends the other's pipe once its data is through.
            let _ = tokio::join!(up, down);
        });
        // Reap finished connections so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
    }
}

#[derive(Clone, Copy)]
enum Direction {
    Up,
    Down,
}

impl Shared {
    fn wire(&self, direction: Direction) -> &Wire {
        match direction {
            Direction::Up => &self.up,
            Direction::Down => &self.down,
        }
    }
}

/// Forward one TCP direction through the link: a reader that stamps each chunk with its
/// arrival time, a writer that delivers it then, in order.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    shared: Arc<Shared>,
    direction: Direction,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Bytes)>(1024);
    let reader = {
        let shared = shared.clone();
        async move {
            let mut buf = vec![0u8; TCP_CHUNK];
            loop {
                let wire = shared.wire(direction);
                let wait = wire.backlog_over(shared.link.queue);
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                let n = match from.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let Some(departs) = wire.send(n, None) else {
                    break;
                };
                let counter = match direction {
                    Direction::Up => &shared.stats().tcp_bytes_up,
                    Direction::Down => &shared.stats().tcp_bytes_down,
                };
                counter.fetch_add(n as u64, Ordering::Relaxed);
                let chunk = Bytes::copy_from_slice(&buf[..n]);
                if tx.send((departs + shared.link.delay, chunk)).await.is_err() {
                    break;
                }
            }
        }
    };
    let writer = async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

/// A datagram due at `at`, to go out through `via` to `to`.
struct Datagram {
    at: Instant,
    via: Arc<UdpSocket>,
    to: SocketAddr,
    bytes: Bytes,
}

async fn relay_udp(socket: Arc<UdpSocket>, shared: Arc<Shared>) {
    let Some(target) = shared.target else {
        return;
    };
    let mut tasks = JoinSet::new();
    let (up_tx, up_rx) = mpsc::unbounded_channel::<Datagram>();
    let (down_tx, down_rx) = mpsc::unbounded_channel::<Datagram>();
    tasks.spawn(deliver(up_rx));
    tasks.spawn(deliver(down_rx));
    // One socket towards the upstream per client address, so replies find their way back.
    let mut flows: HashMap<SocketAddr, (Arc<UdpSocket>, Arc<Mutex<Instant>>)> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    let mut sweep = tokio::time::interval(UDP_IDLE);
    loop {
        let (n, client) = tokio::select! {
            got = socket.recv_from(&mut buf) => match got {
                Ok(got) => got,
                Err(_) => continue,
            },
            _ = sweep.tick() => {
                let now = Instant::now();
                flows.retain(|_, (_, seen)| match seen.lock() {
                    Ok(t) => now.duration_since(*t) < UDP_IDLE,
                    Err(_) => false,
                });
                continue;
            }
        };
        let (flow, seen) = match flows.get(&client) {
            Some(f) => f.clone(),
            None => {
                let bind: SocketAddr = if target.is_ipv4() {
                    ([127, 0, 0, 1], 0).into()
                } else {
                    ([0u16, 0, 0, 0, 0, 0, 0, 1], 0).into()
                };
                let Ok(flow) = UdpSocket::bind(bind).await else {
                    continue;
                };
                let flow = Arc::new(flow);
                let seen = Arc::new(Mutex::new(Instant::now()));
                flows.insert(client, (flow.clone(), seen.clone()));
                tasks.spawn(flow_replies(
                    flow.clone(),
                    seen.clone(),
                    socket.clone(),
                    client,
                    shared.clone(),
                    down_tx.clone(),
                ));
                (flow, seen)
            }
        };
        if let Ok(mut t) = seen.lock() {
            *t = Instant::now();
        }
        forward_datagram(&shared, Direction::Up, &buf[..n], flow, target, &up_tx);
    }
}

/// Replies from the upstream to one client flow.
async fn flow_replies(
    flow: Arc<UdpSocket>,
    seen: Arc<Mutex<Instant>>,
    listener: Arc<UdpSocket>,
    client: SocketAddr,
    shared: Arc<Shared>,
    down: mpsc::UnboundedSender<Datagram>,
) {
    let mut buf = vec![0u8; 65536];
    loop {
        let n = match tokio::time::timeout(UDP_IDLE, flow.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => n,
            Ok(Err(_)) => continue,
            Err(_) => {
                let idle = seen.lock().map(|t| t.elapsed() >= UDP_IDLE).unwrap_or(true);
                if idle {
                    return;
                }
                continue;
            }
        };
        forward_datagram(
            &shared,
            Direction::Down,
            &buf[..n],
            listener.clone(),
            client,
            &down,
        );
    }
}

fn forward_datagram(
    shared: &Shared,
    direction: Direction,
    bytes: &[u8],
    via: Arc<UdpSocket>,
    to: SocketAddr,
    queue: &mpsc::UnboundedSender<Datagram>,
) {
    let departs = if shared.passes(true) {
        shared
            .wire(direction)
            .send(bytes.len(), Some(shared.link.queue))
    } else {
        None
    };
    let Some(departs) = departs else {
        shared.stats().dropped.fetch_add(1, Ordering::Relaxed);
        return;
    };
    shared.count_packet(direction, bytes.len());
    let _ = queue.send(Datagram {
        at: departs + shared.link.delay,
        via,
        to,
        bytes: Bytes::copy_from_slice(bytes),
    });
}

/// Send each datagram at its time; a direction's times never decrease, so a FIFO suffices.
async fn deliver(mut queue: mpsc::UnboundedReceiver<Datagram>) {
    while let Some(d) = queue.recv().await {
        tokio::time::sleep_until(d.at).await;
        let _ = d.via.send_to(&d.bytes, d.to).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn udp_and_tcp_cross_with_the_delay() {
        let echo_udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let target = echo_udp.local_addr().unwrap();
        let echo_tcp = TcpListener::bind(target).await.unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = echo_udp.recv_from(&mut buf).await {
                let _ = echo_udp.send_to(&buf[..n], from).await;
            }
        });
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo_tcp.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let link = Link {
            delay: Duration::from_millis(25),
            ..Link::default()
        };
        let relay = Relay::start("127.0.0.1:0".parse().unwrap(), target, link)
            .await
            .unwrap();

        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let started = Instant::now();
        client.send_to(b"ping", relay.addr()).await.unwrap();
        let mut buf = [0u8; 16];
        let (n, _) = client.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"ping");
        assert!(started.elapsed() >= Duration::from_millis(50), "one RTT");

        let mut tcp = TcpStream::connect(relay.addr()).await.unwrap();
        let started = Instant::now();
        tcp.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        tcp.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
        assert!(started.elapsed() >= Duration::from_millis(50), "one RTT");
        assert_eq!(relay.stats().tcp_connections(), 1);
        assert_eq!(relay.stats().packets(), 2);

        relay.block_udp(true);
        client.send_to(b"lost", relay.addr()).await.unwrap();
        let lost = tokio::time::timeout(Duration::from_millis(300), client.recv_from(&mut buf));
        assert!(lost.await.is_err(), "blocked UDP never comes back");
        assert_eq!(relay.stats().dropped(), 1);
        relay.stop().await;
    }

    #[test]
    fn the_wire_serialises_and_drops_past_its_queue() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            // 1000 bytes/s: 100 bytes occupy the wire for 100 ms.
            let wire = Wire::new(Some(1000));
            let t0 = Instant::now();
            assert_eq!(wire.send(100, None), Some(t0 + Duration::from_millis(100)));
            assert_eq!(wire.send(100, None), Some(t0 + Duration::from_millis(200)));
            // 200 ms queued: over a 150 ms limit, dropped and nothing reserved.
            assert_eq!(wire.send(100, Some(Duration::from_millis(150))), None);
            assert_eq!(
                wire.backlog_over(Duration::from_millis(150)),
                Duration::from_millis(50)
            );
            tokio::time::advance(Duration::from_millis(200)).await;
            assert_eq!(wire.send(10, None), Some(t0 + Duration::from_millis(210)));
        });
    }
}
