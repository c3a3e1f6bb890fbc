//! The packet form of the emulator: two TUN devices, and every IP packet that leaves one enters
//! the other through the emulated link. Unlike the relay, TCP here is the kernel's own,
//! end-to-end, and meets the link's loss as QUIC does, so the two can be compared fairly.
//!
//! Needs CAP_NET_ADMIN. The devices are made in the caller's network namespace and usually
//! moved into two others (`ip link set NAME netns NS`), one for each end; their file
//! descriptors stay valid wherever the devices go.
//!
//! The opening of a device is an ioctl on a raw descriptor: this file is the test kit's one
//! with `unsafe`, each block with its SAFETY comment.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Controls, Direction, Link, Shared};

/// An open TUN device (layer 3, no packet information header).
pub struct Tun {
    fd: AsyncFd<OwnedFd>,
    name: String,
}

impl Tun {
    /// Create (or attach to) the TUN device `name`.
    pub fn open(name: &str) -> io::Result<Tun> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("device name {name:?}: 1 to {} bytes", libc::IFNAMSIZ - 1),
            ));
        }
        // SAFETY: a plain open(2) of a constant, NUL-terminated path.
        let raw = unsafe {
            libc::open(
                c"/dev/net/tun".as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a file descriptor we just opened and own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: ifreq is plain old data; all-zero is a valid value.
        let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
        for (slot, byte) in request.ifr_name.iter_mut().zip(name.bytes()) {
            *slot = byte as libc::c_char;
        }
        request.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF reads a struct ifreq, which `request` is, for the duration of the
        // call.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &request) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: an OwnedFd is a valid open descriptor for as long as it lives, and it lives
        // inside the AsyncFd.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)?;
        Ok(Tun {
            fd,
            name: name.to_owned(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.fd
            .async_io(Interest::READABLE, |fd| {
                // SAFETY: reading into a buffer we own, of its length.
                let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            })
            .await
    }

    async fn send(&self, packet: &[u8]) -> io::Result<()> {
        self.fd
            .async_io(Interest::WRITABLE, |fd| {
                // SAFETY: writing from a buffer we own, of its length.
                let n =
                    unsafe { libc::write(fd.as_raw_fd(), packet.as_ptr().cast(), packet.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            })
            .await
    }
}

/// Is this IPv4/IPv6 packet UDP? (For `block_udp`; extension headers are not followed.)
fn is_udp(packet: &[u8]) -> bool {
    match packet.first().map(|b| b >> 4) {
        Some(4) => packet.get(9) == Some(&17),
        Some(6) => packet.get(6) == Some(&17),
        _ => false,
    }
}

/// Forward packets between `a` (the branch side) and `b` (the upstream side) through `link`
/// until the task is dropped. Loss applies to every packet, TCP and UDP alike.
pub async fn run(a: Tun, b: Tun, link: Link, controls: Arc<Controls>) {
    let shared = Arc::new(Shared::new(link, None, controls));
    let (a, b) = (Arc::new(a), Arc::new(b));
    tokio::join!(
        forward(a.clone(), b.clone(), shared.clone(), Direction::Up),
        forward(b, a, shared, Direction::Down),
    );
}

async fn forward(from: Arc<Tun>, to: Arc<Tun>, shared: Arc<Shared>, direction: Direction) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Bytes)>();
    let deliver = async move {
        while let Some((at, packet)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            // A packet the kernel refuses (device down) is lost, as on a wire.
            let _ = to.send(&packet).await;
        }
    };
    let receive = async move {
        let mut buf = vec![0u8; 65536];
        loop {
            let n = match from.recv(&mut buf).await {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            let packet = &buf[..n];
            let passes = shared.passes(is_udp(packet));
            let departs = if passes {
                shared.wire(direction).send(n, Some(shared.link.queue))
            } else {
                None
            };
            let Some(departs) = departs else {
                shared.stats().dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            shared.count_packet(direction, n);
            if tx
                .send((departs + shared.link.delay, Bytes::copy_from_slice(packet)))
                .is_err()
            {
                return;
            }
        }
    };
    tokio::join!(receive, deliver);
}

#[cfg(test)]
mod tests {
    use super::is_udp;

    #[test]
    fn udp_is_told_by_the_protocol_field() {
        let mut v4 = [0u8; 20];
        v4[0] = 0x45;
        v4[9] = 17;
        assert!(is_udp(&v4));
        v4[9] = 6;
        assert!(!is_udp(&v4));
        let mut v6 = [0u8; 40];
        v6[0] = 0x60;
        v6[6] = 17;
        assert!(is_udp(&v6));
        assert!(!is_udp(&[]));
    }
}
