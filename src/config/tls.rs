//! A zone's `tls:` section: how its upstreams are reached over DNS over TLS (RFC 7858), read
//! with `transport: tls` (see [`crate::upstream::pool`]).
//!
//! Its keys, their defaults and meanings are in README.md, "Configuration reference" (the
//! one list, checked against this model both ways by `tests/config_docs.rs`).
//!
//! The files are read when the config is loaded (and on every reload), so that a missing or
//! unreadable file is an error of the config, with its line, rather than of the first query.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use serde::{Deserialize, Serialize};

/// How a zone's upstreams are reached over TLS.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Built from the fields above when the config is loaded.
    #[serde(skip)]
    pub client: Option<TlsClient>,
}

/// Settings are equal when they name the same things; the clients built from them are not
/// compared (two loads of the same files are two clients).
impl PartialEq for TlsConfig {
    fn eq(&self, other: &TlsConfig) -> bool {
        (
            &self.server_name,
            &self.ca_file,
            &self.cert_file,
            &self.key_file,
        ) == (
            &other.server_name,
            &other.ca_file,
            &other.cert_file,
            &other.key_file,
        )
    }
}

impl Eq for TlsConfig {}

/// What a TLS upstream connection is made with: one rustls config per zone, whose session
/// cache lets a reconnect resume (an abbreviated handshake) instead of a full one.
#[derive(Clone)]
pub struct TlsClient {
    pub config: Arc<ClientConfig>,
    server_name: Option<ServerName<'static>>,
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClient")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// The name verified against `ip`'s certificate: the configured one, else the IP itself.
    pub fn server_name(&self, ip: IpAddr) -> ServerName<'static> {
        self.client
            .as_ref()
            .and_then(|client| client.server_name.clone())
            .unwrap_or_else(|| ServerName::IpAddress(ip.into()))
    }

    /// Reads the files and builds the client; returns (key under `tls.`, message).
    pub fn load(&mut self) -> Result<(), (&'static str, String)> {
        let server_name = match &self.server_name {
            Some(name) => Some(
                ServerName::try_from(name.clone())
                    .map_err(|err| ("server_name", format!("{name:?}: {err}")))?,
            ),
            None => None,
        };
        let roots = match &self.ca_file {
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for cert in read_certs(path).map_err(|m| ("ca_file", m))? {
                    roots
                        .add(cert)
                        .map_err(|err| ("ca_file", format!("{}: {err}", path.display())))?;
                }
                roots
            }
            None => system_roots().map_err(|m| ("ca_file", m))?,
        };
        // TLS 1.2 and 1.3 only, rustls' safe defaults; the ring provider is the one kube's
        // client already uses.
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|err| ("server_name", err.to_string()))?
                .with_root_certificates(roots);
        let config = match (&self.cert_file, &self.key_file) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let chain = read_certs(cert).map_err(|m| ("cert_file", m))?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|err| ("key_file", format!("{}: {err}", key.display())))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|err| ("key_file", err.to_string()))?
            }
            // The error names the key that is there, so that it comes with its line.
            (Some(_), None) => return Err(("cert_file", "needs key_file too".into())),
            (None, Some(_)) => return Err(("key_file", "needs cert_file too".into())),
        };
        self.client = Some(TlsClient {
            config: Arc::new(config),
            server_name,
        });
        Ok(())
    }
}

/// The certificates of a PEM file, at least one.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|err| format!("{}: {err}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in the file", path.display()));
    }
    Ok(certs)
}

/// The system's trusted roots (/etc/ssl/certs on the node images we run on). A certificate
/// the store holds but rustls cannot parse is skipped, as the other clients of the store do.
fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or_else(|| "the store is empty".to_string(), ToString::to_string);
        return Err(format!(
            "no system root certificates ({why}): name a CA file with ca_file"
        ));
    }
    Ok(roots)
}
