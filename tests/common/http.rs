//! A small HTTP client for talking to nodes: [`request`] and [`get`] with the whole answer in a
//! [`Got`], [`send`] with a body, [`call`] with a JSON body and a bearer token, [`json`] of an
//! answer, a node's URLs ([`url`]) and its metrics ([`metric`]).

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use wsus_edge::node::Running;

pub fn client() -> Client<HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build(HttpConnector::new())
}

pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The body ended with an error (connection closed before Content-Length).
    pub broken: bool,
}

/// One request, the whole body collected (or what arrived before the connection broke).
pub async fn request(method: &str, url: &str, headers: &[(&str, &str)]) -> Got {
    let mut builder = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let response = client()
        .request(builder.body(Empty::new()).unwrap())
        .await
        .expect("request");
    let (parts, mut body) = response.into_parts();
    let mut collected = Vec::new();
    let mut broken = false;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Ok(d) = f.into_data() {
                    collected.extend_from_slice(&d);
                }
            }
            Err(_) => {
                broken = true;
                break;
            }
        }
    }
    Got {
        status: parts.status,
        headers: parts.headers,
        body: Bytes::from(collected),
        broken,
    }
}

pub async fn get(url: &str, headers: &[(&str, &str)]) -> Got {
    request("GET", url, headers).await
}

/// Read one metric (sum over label sets that contain `labels`) from a node's /metrics.
pub async fn metric(node: &Running, name: &str, labels: &str) -> f64 {
    let text = get(&format!("http://{}/metrics", node.listening().admin), &[]).await;
    let text = String::from_utf8_lossy(&text.body).into_owned();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let (metric, rest) = match key.split_once('{') {
                Some((m, r)) => (m, r),
                None => (key, ""),
            };
            (metric == name && rest.contains(labels)).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

pub fn url(node: &Running, path: &str) -> String {
    format!("http://{}{}", node.listening().http, path)
}

/// `method` on `url` with a JSON body and, when given, a bearer token.
pub async fn call(method: &str, url: &str, token: Option<&str>, json: &str) -> Got {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(b) = &bearer {
        headers.push(("authorization", b.as_str()));
    }
    send(method, url, &headers, json).await
}

/// `method` on `url` with `headers` and `body`.
pub async fn send(method: &str, url: &str, headers: &[(&str, &str)], body: &str) -> Got {
    use http_body_util::{BodyExt as _, Full};
    let mut builder = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let response = client
        .request(
            builder
                .body(Full::new(bytes::Bytes::from(body.to_owned())))
                .unwrap(),
        )
        .await
        .expect("request");
    let (parts, body) = response.into_parts();
    Got {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
        broken: false,
    }
}

/// An answer's JSON body (a panic names the body that is not JSON).
pub fn json(got: &Got) -> serde_json::Value {
    serde_json::from_slice(&got.body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&got.body)))
}
