//! Bytes of a file sent to a plain TCP socket with `sendfile(2)`: from the page cache to the
//! socket, never copied through the node's memory.
//!
//! hyper writes what a body yields and knows no files. So a body on a connection that can send
//! files yields *stand-ins*: [`Bytes`] of the right length that point into one region of zeros
//! that nothing reads ([`Sink::stand_in`]), and queues the file range each stands for on the
//! connection's [`Sink`]. The connection's transport, [`SendfileStream`], knows a stand-in by its
//! address when hyper writes it, and sends the file range in its place. hyper's HTTP/1 writes a
//! connection's frames in the order its bodies yield them (its write buffer queues them,
//! `writev` on, never flattening them into a copy), so the range at the queue's head is always
//! that of the first stand-in written. A stand-in that does not match the head (or meets an empty
//! queue) ends the connection: the failure is a cut response, never zeros on the wire.
//!
//! Only plain HTTP/1.x: TLS encrypts in user space, and HTTP/2 and HTTP/3 interleave the frames
//! of many streams. May call nothing of the node.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use crate::lock::lock;

/// The longest stand-in, in bytes: a longer range is queued as several.
pub const STAND_IN_BYTES: usize = 2 << 20;

/// The region stand-ins point into. Zeros from the allocator's fresh pages (`calloc` maps them):
/// nothing ever reads it, so it costs address space, not memory.
static STAND_INS: LazyLock<Box<[u8]>> = LazyLock::new(|| vec![0u8; STAND_IN_BYTES].into());

/// Where `buf` starts within the stand-in region, if it is a stand-in.
fn stand_in_offset(buf: &[u8]) -> Option<usize> {
    let base = STAND_INS.as_ptr() as usize;
    let at = (buf.as_ptr() as usize).checked_sub(base)?;
    (at < STAND_IN_BYTES && !buf.is_empty()).then_some(at)
}

/// A file range promised to the connection and not yet all written.
struct Range {
    file: Arc<File>,
    offset: u64,
    len: usize,
    /// Bytes of it already on the socket.
    sent: usize,
}

/// A connection's queue of file ranges, in the order their stand-ins were yielded. Cheap to
/// clone: the body that yields and the transport that writes share it.
#[derive(Clone, Default)]
pub struct Sink {
    queue: Arc<Mutex<VecDeque<Range>>>,
}

impl Sink {
    pub fn new() -> Sink {
        Sink::default()
    }

    /// A stand-in for `len` bytes of `file` from `offset`, queued to be sent in its place.
    /// `len` is 1..=[`STAND_IN_BYTES`]: a body splits longer ranges.
    pub fn stand_in(&self, file: Arc<File>, offset: u64, len: usize) -> Bytes {
        debug_assert!(len > 0 && len <= STAND_IN_BYTES);
        let len = len.clamp(1, STAND_IN_BYTES);
        lock(&self.queue).push_back(Range {
            file,
            offset,
            len,
            sent: 0,
        });
        Bytes::from_static(&STAND_INS[..len])
    }
}

/// A plain TCP connection whose writes send the files behind stand-ins (see the module).
pub struct SendfileStream {
    stream: TcpStream,
    sink: Sink,
}

impl SendfileStream {
    pub fn new(stream: TcpStream, sink: Sink) -> SendfileStream {
        SendfileStream { stream, sink }
    }

    /// `buf`, a stand-in at `at` in the region, written as the file range at the queue's head.
    fn poll_send_file(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
        at: usize,
    ) -> Poll<io::Result<usize>> {
        let mut queue = lock(&self.sink.queue);
        let Some(head) = queue.front_mut() else {
            return Poll::Ready(Err(io::Error::other(
                "a stand-in was written with no file range queued",
            )));
        };
        // hyper advances a partly written stand-in from its start: what is left of it begins
        // exactly where the range's sent bytes end.
        if head.sent != at || head.len - head.sent != buf.len() {
            return Poll::Ready(Err(io::Error::other(
                "a stand-in does not match the file range at the queue's head",
            )));
        }
        loop {
            ready!(self.stream.poll_write_ready(cx))?;
            let mut offset = head.offset + head.sent as u64;
            let sent = self.stream.try_io(Interest::WRITABLE, || {
                rustix::fs::sendfile(&self.stream, &*head.file, Some(&mut offset), buf.len())
                    .map_err(io::Error::from)
            });
            match sent {
                Ok(0) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file ended before the range promised",
                    )));
                }
                Ok(n) => {
                    head.sent += n;
                    if head.sent == head.len {
                        queue.pop_front();
                    }
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl SendfileStream {
    /// `bufs` written with `MSG_MORE`: the kernel holds a response head back for the file bytes
    /// that follow it, so that head and body leave in full segments (what nginx's
    /// `tcp_nopush` does with a cork) rather than the head alone in a packet of its own, which
    /// costs the client a wake-up per response.
    fn poll_write_more(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        use rustix::net::{SendAncillaryBuffer, SendFlags, sendmsg};
        loop {
            ready!(self.stream.poll_write_ready(cx))?;
            let sent = self.stream.try_io(Interest::WRITABLE, || {
                sendmsg(
                    &self.stream,
                    bufs,
                    &mut SendAncillaryBuffer::default(),
                    SendFlags::MORE | SendFlags::NOSIGNAL,
                )
                .map_err(io::Error::from)
            });
            match sent {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }
}

impl AsyncRead for SendfileStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for SendfileStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match stand_in_offset(buf) {
            Some(at) => self.poll_send_file(cx, buf, at),
            None => Pin::new(&mut self.stream).poll_write(cx, buf),
        }
    }

    /// Plain bytes before the first stand-in go out in one `sendmsg` that says more follows; a
    /// stand-in first in line goes out by `sendfile`. Either way a short count, which hyper
    /// carries on from.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match bufs.iter().position(|b| stand_in_offset(b).is_some()) {
            None => Pin::new(&mut self.stream).poll_write_vectored(cx, bufs),
            Some(0) => {
                let buf: &[u8] = &bufs[0];
                let at = stand_in_offset(buf).unwrap_or(0);
                self.poll_send_file(cx, buf, at)
            }
            Some(first) => self.poll_write_more(cx, &bufs[..first]),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    fn file_of(bytes: &[u8]) -> Arc<File> {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        Arc::new(f)
    }

    async fn pair() -> (SendfileStream, Sink, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let sink = Sink::new();
        (
            SendfileStream::new(accepted.unwrap().0, sink.clone()),
            sink,
            client.unwrap(),
        )
    }

    #[tokio::test]
    async fn stand_ins_become_the_file_bytes_in_order_between_plain_ones() {
        let content: Vec<u8> = (0..3 * STAND_IN_BYTES as u32 / 2)
            .map(|i| (i % 251) as u8)
            .collect();
        let file = file_of(&content);
        let (mut server, sink, mut client) = pair().await;
        let first = sink.stand_in(file.clone(), 10, STAND_IN_BYTES);
        let second = sink.stand_in(file.clone(), 5, 100);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            got
        });
        // As hyper writes: a head and a stand-in in one writev, then the rest as advanced.
        let mut bufs: Vec<Bytes> = vec![Bytes::from_static(b"HEAD\r\n"), first, second];
        bufs.push(Bytes::from_static(b"TAIL"));
        while !bufs.is_empty() {
            let slices: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
            let mut n =
                std::future::poll_fn(|cx| Pin::new(&mut server).poll_write_vectored(cx, &slices))
                    .await
                    .unwrap();
            while n > 0 {
                let len = bufs[0].len();
                if n >= len {
                    bufs.remove(0);
                    n -= len;
                } else {
                    let rest = bufs[0].slice(n..);
                    bufs[0] = rest;
                    n = 0;
                }
            }
        }
        server.shutdown().await.unwrap();
        drop(server);
        let got = reader.await.unwrap();
        let mut want = b"HEAD\r\n".to_vec();
        want.extend_from_slice(&content[10..10 + STAND_IN_BYTES]);
        want.extend_from_slice(&content[5..105]);
        want.extend_from_slice(b"TAIL");
        assert_eq!(got.len(), want.len());
        assert!(
            got == want,
            "the bytes on the wire are the file's, in order"
        );
        assert!(lock(&sink.queue).is_empty());
    }

    #[tokio::test]
    async fn a_stand_in_without_its_range_ends_the_connection_instead_of_sending_zeros() {
        let (mut server, sink, _client) = pair().await;
        let stray = Sink::new().stand_in(file_of(b"abc"), 0, 3);
        let err = server.write_all(&stray).await.unwrap_err();
        assert!(err.to_string().contains("no file range"), "{err}");
        // A range whose stand-in is written out of place is refused too.
        let file = file_of(b"abcdef");
        let _queued = sink.stand_in(file.clone(), 0, 6);
        let err = server.write_all(&STAND_INS[2..6]).await.unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
    }

    #[tokio::test]
    async fn a_file_shorter_than_promised_is_an_error() {
        let (mut server, sink, _client) = pair().await;
        let stand_in = sink.stand_in(file_of(b"short"), 0, 64);
        let err = server.write_all(&stand_in).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
