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
