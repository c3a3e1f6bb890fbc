//! Upstreams the tests stand up: [`Origin`], a scriptable origin server with the WSUS content
//! layout that counts every request and byte ([`Logged`]) and does wrong on request
//! ([`Fault`]); and [`Refusing`], an address where no upstream answers.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_RANGE, LAST_MODIFIED, RANGE};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::content_path;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the origin does wrong for one object.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Break the connection after this many body bytes of a response, for the first `times`
    /// responses.
    ResetAfter { bytes: u64, times: u32 },
    /// Send these bytes instead of the real ones (same length), always.
    WrongBytes,
    /// Promise the full Content-Length but end the body early by `missing` bytes, `times` times.
    Short { missing: u64, times: u32 },
    /// Stop sending (without closing) after this many body bytes, `times` times.
    StallAfter { bytes: u64, times: u32 },
    /// Answer every request with this status.
    Status(u16),
    /// Answer ranges as usual but claim this total size in `Content-Range`.
    ClaimTotal(u64),
}

#[derive(Clone, Debug)]
pub struct Logged {
    pub path: String,
    /// Inclusive range asked for, if any.
    pub range: Option<(u64, u64)>,
    pub status: u16,
}

struct OriginState {
    objects: Mutex<HashMap<String, Bytes>>,
    faults: Mutex<HashMap<String, Fault>>,
    log: Mutex<Vec<Logged>>,
    body_bytes: AtomicU64,
    /// Bytes per second per response; 0 = unthrottled.
    throttle: AtomicU64,
    refusing: AtomicBool,
}

/// An origin with the WSUS content layout, in memory, on 127.0.0.1.
pub struct Origin {
    pub addr: SocketAddr,
    state: Arc<OriginState>,
    stop: watch::Sender<bool>,
}

impl Origin {
    pub async fn start() -> Origin {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    /// Start on a given address (to come back on the same port after [`Origin::stop`]).
    pub async fn start_on(addr: SocketAddr) -> Origin {
        let state = Arc::new(OriginState {
            objects: Mutex::new(HashMap::new()),
            faults: Mutex::new(HashMap::new()),
            log: Mutex::new(Vec::new()),
            body_bytes: AtomicU64::new(0),
            throttle: AtomicU64::new(0),
            refusing: AtomicBool::new(false),
        });
        let listener = TcpListener::bind(addr).await.expect("bind origin");
        let addr = listener.local_addr().unwrap();
        let (stop, mut stop_rx) = watch::channel(false);
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                    _ = stop_rx.changed() => return,
                };
                let st = st.clone();
                let mut conn_stop = stop_rx.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, Infallible>(serve(&st, req)) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = conn => {}
                        _ = conn_stop.changed() => {}
                    }
                });
            }
        });
        Origin { addr, state, stop }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serve `bytes` under their content name; returns the URL path.
    pub fn add(&self, bytes: Bytes, ext: &str) -> String {
        let path = content_path(&bytes, ext);
        self.state
            .objects
            .lock()
            .unwrap()
            .insert(path.clone(), bytes);
        path
    }

    pub fn fault(&self, path: &str, fault: Fault) {
        self.state
            .faults
            .lock()
            .unwrap()
            .insert(path.to_owned(), fault);
    }

    pub fn heal(&self, path: &str) {
        self.state.faults.lock().unwrap().remove(path);
    }

    pub fn throttle(&self, bytes_per_second: u64) {
        self.state
            .throttle
            .store(bytes_per_second, Ordering::Relaxed);
    }

    pub fn log(&self) -> Vec<Logged> {
        self.state.log.lock().unwrap().clone()
    }

    pub fn requests_for(&self, path: &str) -> Vec<Logged> {
        self.log().into_iter().filter(|l| l.path == path).collect()
    }

    pub fn body_bytes(&self) -> u64 {
        self.state.body_bytes.load(Ordering::Relaxed)
    }

    /// Stop listening and drop every open connection.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

fn parse_range(value: &str, len: u64) -> Option<(u64, u64)> {
    let spec = value.strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        return Some((len.saturating_sub(n), len - 1));
    }
    let a: u64 = a.parse().ok()?;
    let b: u64 = if b.is_empty() {
        len - 1
    } else {
        b.parse::<u64>().ok()?.min(len - 1)
    };
    Some((a, b))
}

type OriginBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

fn serve(state: &Arc<OriginState>, req: Request<Incoming>) -> Response<OriginBody> {
    let path = req.uri().path().to_owned();
    let object = state.objects.lock().unwrap().get(&path).cloned();
    let fault = state.faults.lock().unwrap().get(&path).cloned();
    let claimed = match &fault {
        Some(Fault::ClaimTotal(total)) => Some(*total),
        _ => None,
    };
    let range_header = req
        .headers()
        .get(RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let log = |range, status: StatusCode| {
        state.log.lock().unwrap().push(Logged {
            path: path.clone(),
            range,
            status: status.as_u16(),
        });
    };
    let plain = |status: StatusCode| {
        let mut r = Response::new(
            http_body_util::Full::new(Bytes::new())
                .map_err(|e| match e {})
                .boxed(),
        );
        *r.status_mut() = status;
        r
    };
    let Some(object) = object else {
        log(None, StatusCode::NOT_FOUND);
        return plain(StatusCode::NOT_FOUND);
    };
    if let Some(Fault::Status(code)) = fault {
        let status = StatusCode::from_u16(code).unwrap();
        log(None, status);
        return plain(status);
    }
    let len = object.len() as u64;
    let range = range_header.as_deref().and_then(|v| parse_range(v, len));
    let (status, first, last) = match range {
        Some((a, _)) if a >= len => {
            log(range, StatusCode::RANGE_NOT_SATISFIABLE);
            let mut r = plain(StatusCode::RANGE_NOT_SATISFIABLE);
            r.headers_mut()
                .insert(CONTENT_RANGE, format!("bytes */{len}").parse().unwrap());
            return r;
        }
        Some((a, b)) => (StatusCode::PARTIAL_CONTENT, a, b),
        None => (StatusCode::OK, 0, len - 1),
    };
    log(range, status);
    let mut body = object.slice(first as usize..=last as usize);
    // Per-fault behaviour; counters of "times" are consumed here.
    let mut cut: Option<(u64, bool)> = None; // (after bytes, stall instead of reset)
    if let Some(f) = fault {
        let mut faults = state.faults.lock().unwrap();
        let consume = |faults: &mut HashMap<String, Fault>, f: Fault| match f {
            Fault::ResetAfter { bytes, times } if times > 0 => {
                faults.insert(
                    path.clone(),
                    Fault::ResetAfter {
                        bytes,
                        times: times - 1,
                    },
                );
                Some((bytes, false))
            }
            Fault::StallAfter { bytes, times } if times > 0 => {
                faults.insert(
                    path.clone(),
                    Fault::StallAfter {
                        bytes,
                        times: times - 1,
                    },
                );
                Some((bytes, true))
            }
            Fault::Short { missing, times } if times > 0 => {
                faults.insert(
                    path.clone(),
                    Fault::Short {
                        missing,
                        times: times - 1,
                    },
                );
                Some(((last - first + 1).saturating_sub(missing), false))
            }
            _ => None,
        };
        if matches!(f, Fault::WrongBytes) {
            let mut wrong = body.to_vec();
            for b in wrong.iter_mut().step_by(4096) {
                *b ^= 0x5a;
            }
            body = Bytes::from(wrong);
        } else {
            cut = consume(&mut faults, f);
        }
    }
    let throttle = state.throttle.load(Ordering::Relaxed);
    let counter = state.clone();
    let stream = futures_util::stream::unfold(
        (body, 0u64, cut, throttle, Instant::now(), counter),
        |(body, sent, cut, throttle, started, counter)| async move {
            if sent as usize >= body.len() {
                return None;
            }
            if let Some((after, stall)) = cut
                && sent >= after
            {
                if stall {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                let err: BoxError = "injected fault".into();
                return Some((
                    Err(err),
                    (Bytes::new(), u64::MAX, None, 0, started, counter),
                ));
            }
            let mut n = (body.len() - sent as usize).min(64 << 10);
            if let Some((after, _)) = cut {
                n = n
                    .min((after - sent) as usize)
                    .max(if after > sent { 1 } else { 0 });
            }
            if throttle > 0 {
                let due = Duration::from_secs_f64((sent + n as u64) as f64 / throttle as f64);
                let elapsed = started.elapsed();
                if due > elapsed {
                    tokio::time::sleep(due - elapsed).await;
                }
            }
            let chunk = body.slice(sent as usize..sent as usize + n);
            counter.body_bytes.fetch_add(n as u64, Ordering::Relaxed);
            Some((
                Ok(Frame::data(chunk)),
                (body, sent + n as u64, cut, throttle, started, counter),
            ))
        },
    );
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_LENGTH, (last - first + 1).into());
    h.insert(
        LAST_MODIFIED,
        "Wed, 02 Sep 2026 08:30:53 GMT".parse().unwrap(),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        let total = claimed.unwrap_or(len);
        h.insert(
            CONTENT_RANGE,
            format!("bytes {first}-{last}/{total}").parse().unwrap(),
        );
    }
    r
}

/// A loopback address that refuses connections for as long as this lives: a socket bound to a
/// port the kernel chose and never listening. A connection to it is reset at once (no one
/// listens), and no other socket can bind the port while it is held, so no race can make it
/// answer.
pub struct Refusing {
    pub addr: SocketAddr,
    _bound: tokio::net::TcpSocket,
}

impl Refusing {
    pub fn new() -> Refusing {
        let bound = tokio::net::TcpSocket::new_v4().unwrap();
        bound.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        Refusing {
            addr: bound.local_addr().unwrap(),
            _bound: bound,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}
