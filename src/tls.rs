//! TLS configurations of a node: the server side of its HTTPS and HTTP/3 listeners and the client
//! side of its upstream link (over TCP and over QUIC). rustls with the ring provider only (see ../shared/DEPENDENCIES.md: an implicit
//! provider choice panics when two are compiled in), PEM files as the configuration names them.
//! Calls only `error`.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::error::{Error, Kind, Result};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn config_error(what: &str, path: &Path, err: impl std::fmt::Display) -> Error {
    Error::internal(Kind::Config, format!("{what} {}: {err}", path.display()))
}

/// Every certificate of a PEM file; an empty file is an error (it is always a mistake).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| config_error("reading certificates from", path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| config_error("parsing certificates in", path, e))?;
    if certs.is_empty() {
        return Err(config_error("no certificate in", path, "empty PEM"));
    }
    Ok(certs)
}

pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| config_error("reading private key", path, e))
}

fn roots_from(path: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| config_error("using CA certificate in", path, e))?;
    }
    Ok(roots)
}

/// ALPN of HTTP/3 (RFC 9114 §3.1).
pub const ALPN_H3: &[u8] = b"h3";

/// The server side: our certificate chain and key; with `client_ca`, every client must present a
/// certificate issued by it (mutual TLS for downstream servers). ALPN offers h2 and http/1.1,
/// for the TCP listener; [`quic_server_config`] makes the QUIC one.
pub fn server_config(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<ServerConfig> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::internal(Kind::Config, format!("TLS versions: {e}")))?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots_from(ca)?),
                provider(),
            )
            .build()
            .map_err(|e| config_error("client CA", ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(load_certs(cert)?, load_key(key)?)
        .map_err(|e| config_error("certificate and key", cert, e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The client side of the upstream link: trust `ca` if given, else the system's roots; present a
/// client certificate when one is configured. ALPN is left to the HTTP connector.
pub fn client_config(
    ca: Option<&Path>,
    client_cert: Option<(&Path, &Path)>,
) -> Result<ClientConfig> {
    let roots = match ca {
        Some(ca) => roots_from(ca)?,
        None => {
            let mut roots = RootCertStore::empty();
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                // A malformed system certificate must not keep the node from starting.
                let _ = roots.add(cert);
            }
            roots
        }
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::internal(Kind::Config, format!("TLS versions: {e}")))?
        .with_root_certificates(roots);
    match client_cert {
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|e| config_error("client certificate", cert, e)),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// The same server identity for the HTTP/3 listener: TLS 1.3 only (as QUIC requires), ALPN h3.
pub fn quic_server_config(tcp: &ServerConfig) -> Result<quinn::crypto::rustls::QuicServerConfig> {
    let mut config = tcp.clone();
    config.alpn_protocols = vec![ALPN_H3.to_vec()];
    quinn::crypto::rustls::QuicServerConfig::try_from(Arc::new(config))
        .map_err(|e| Error::internal(Kind::Config, format!("TLS for QUIC: {e}")))
}

/// The upstream link's client identity for QUIC: TLS 1.3, ALPN h3.
pub fn quic_client_config(tcp: &ClientConfig) -> Result<quinn::crypto::rustls::QuicClientConfig> {
    let mut config = tcp.clone();
    config.alpn_protocols = vec![ALPN_H3.to_vec()];
    quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(config))
        .map_err(|e| Error::internal(Kind::Config, format!("TLS for QUIC: {e}")))
}

/// What a certificate is used for here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// This node's own (HTTPS and HTTP/3 listeners).
    Server,
    /// A branch's to its upstream (mutual TLS).
    Client,
}

/// What is wrong with `cert` as the leaf of a node's (or a branch's client) certificate, each a
/// sentence an operator can act on; none when nothing is. `now`: seconds since the epoch. The
/// checks are those a peer makes before it would refuse the handshake with a message that
/// names no fix (webpki's `CaUsedAsEndEntity`, an expired certificate, a missing usage).
pub fn end_entity_problems(cert: &CertificateDer<'_>, usage: Use, now: i64) -> Vec<String> {
    let parsed = match x509_parser::parse_x509_certificate(cert.as_ref()) {
        Ok((_, parsed)) => parsed,
        Err(e) => return vec![format!("not an X.509 certificate: {e}")],
    };
    let mut problems = Vec::new();
    let how = match usage {
        Use::Server => "wsus-edge cert node --ca DIR --name HOST --out DIR",
        Use::Client => "wsus-edge cert client --ca DIR --name BRANCH --out DIR",
    };
    if parsed
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|bc| bc.value.ca)
    {
        problems.push(format!(
            "is a CA certificate (basicConstraints CA:TRUE), which peers refuse as a {} \
             certificate (\"CaUsedAsEndEntity\"); issue one signed by that CA instead: {how}, \
             and give the CA to the other side",
            match usage {
                Use::Server => "server",
                Use::Client => "client",
            }
        ));
    }
    let validity = parsed.validity();
    if validity.not_after.timestamp() < now {
        problems.push(format!(
            "expired on {}; make a new one: {how}",
            crate_time(validity.not_after.timestamp())
        ));
    } else if validity.not_before.timestamp() > now {
        problems.push(format!(
            "not valid before {} (is this machine's clock right?)",
            crate_time(validity.not_before.timestamp())
        ));
    }
    if let Ok(Some(eku)) = parsed.extended_key_usage() {
        let eku = eku.value;
        let (ok, name) = match usage {
            Use::Server => (eku.any || eku.server_auth, "serverAuth"),
            Use::Client => (eku.any || eku.client_auth, "clientAuth"),
        };
        if !ok {
            problems.push(format!(
                "its extended key usage lacks {name}, so peers refuse it; {how} makes one with it"
            ));
        }
    }
    problems
}

/// A time as `2026-12-04 17:00:00 UTC`.
fn crate_time(seconds: i64) -> String {
    httpdate::fmt_http_date(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds.max(0) as u64),
    )
}

/// What an operator should do about a certificate the upstream presented and this node
/// refused, when the refusal is one of the usual mistakes; None for anything else. The
/// verifier's own words (`invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))`)
/// stay in the message after this.
pub fn refused_certificate_hint(err: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    // An io::Error hands on neither its payload nor the payload's cause as its source: both
    // are reached through `get_ref`.
    let mut next = Some(err);
    while let Some(e) = next {
        let rustls = e.downcast_ref::<rustls::Error>();
        next = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
        if let Some(rustls::Error::InvalidCertificate(cert)) = rustls {
            use rustls::CertificateError as C;
            return Some(match cert {
                C::Other(other) if format!("{other:?}").contains("CaUsedAsEndEntity") => {
                    "the upstream presents a CA certificate as its own; give it a server \
                     certificate signed by that CA (wsus-edge cert node) and keep the CA in \
                     upstream.ca"
                }
                C::UnknownIssuer | C::BadSignature => {
                    "the upstream's certificate is not signed by a CA in upstream.ca (or the \
                     system's roots when upstream.ca is not set)"
                }
                C::NotValidForName | C::NotValidForNameContext { .. } => {
                    "the upstream's certificate does not name the host of upstream.url; issue \
                     one with that name (wsus-edge cert node --name HOST --san ...)"
                }
                C::Expired | C::ExpiredContext { .. } => "the upstream's certificate has expired",
                C::NotValidYet | C::NotValidYetContext { .. } => {
                    "the upstream's certificate is not valid yet (check both clocks)"
                }
                _ => return None,
            });
        }
    }
    None
}
