//! `TlsConfig`: TLS for an [`HttpServer`](crate::HttpServer), from PEM files that can be
//! replaced while it runs.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::HttpError;

/// TLS for an [`HttpServer`](crate::HttpServer) (feature `tls`): rustls with the ring
/// provider, the certificate chain and private key read from PEM files, ALPN `h2` and
/// `http/1.1`, so HTTPS, HTTP/2 and gRPC share the port.
///
/// - **Handshake timeout** (default 10 s): a client that does not finish its handshake in
///   time is disconnected. Handshakes under way at the stop turn go on: they finish and the
///   connection is then served as any other at the stop turn (its request answered with
///   `Connection: close`, an HTTP/2 one told to go away), or they are cut at the stop timeout.
/// - **Reload**: the server reads the files again every [`reload_interval`](Self::reload_interval)
///   (default 10 s) and on SIGHUP ([`reload_on_sighup`](Self::reload_on_sighup)), and new handshakes use the new certificate from then on;
///   connections already open keep theirs, so a rotation (cert-manager renewing a Secret)
///   drops nothing. Files that cannot be read or do not match are logged and the certificate
///   in use is kept, so a rotation caught half-written is retried at the next check.
///
/// Clones share the certificate in use: a [`reload`](Self::reload) on one is seen by all.
///
/// # Examples
///
/// ```no_run
/// use axum::{routing::get, Router};
/// use lifecycle_http::{HttpServer, TlsConfig};
///
/// # fn main() -> Result<(), lifecycle_http::HttpError> {
/// let tls = TlsConfig::from_pem_files("/etc/tls/tls.crt", "/etc/tls/tls.key")?;
/// let router = Router::new().route("/", get(|| async { "hello over TLS" }));
/// let server = HttpServer::bind("0.0.0.0:8443".parse().unwrap(), router).tls(tls);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
#[must_use = "TLS is served only once the configuration is passed to `HttpServer::tls`"]
pub struct TlsConfig {
    certificate: Arc<Certificate>,
    server_config: Arc<ServerConfig>,
    handshake_timeout: Duration,
    reload_interval: Option<Duration>,
    reload_on_sighup: bool,
}

impl TlsConfig {
    /// The default time a client has to complete its TLS handshake.
    pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
    /// The default period at which the files are read again.
    pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

    /// Reads the certificate chain (PEM, leaf first) and its private key (PEM: PKCS#8, PKCS#1
    /// or SEC1). Defaults: a handshake timeout of 10 s
    /// ([`DEFAULT_HANDSHAKE_TIMEOUT`](Self::DEFAULT_HANDSHAKE_TIMEOUT)), the files read again
    /// every 10 s ([`DEFAULT_RELOAD_INTERVAL`](Self::DEFAULT_RELOAD_INTERVAL)) and on SIGHUP.
    ///
    /// # Errors
    ///
    /// [`HttpError::TlsFile`] when a file cannot be read or holds no certificate or key, and
    /// [`HttpError::TlsCertificate`] when the key cannot be used or does not match the
    /// certificate.
    pub fn from_pem_files(
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, HttpError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certificate = Arc::new(Certificate::load(
            cert.as_ref().to_owned(),
            key.as_ref().to_owned(),
            provider.clone(),
        )?);
        let mut server_config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| HttpError::TlsCertificate(error.into()))?
            .with_no_client_auth()
            .with_cert_resolver(certificate.clone());
        server_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsConfig {
            certificate,
            server_config: Arc::new(server_config),
            handshake_timeout: Self::DEFAULT_HANDSHAKE_TIMEOUT,
            reload_interval: Some(Self::DEFAULT_RELOAD_INTERVAL),
            reload_on_sighup: true,
        })
    }

    /// How long a client has to complete its handshake (default 10 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// How often the server reads the files again to pick up a new certificate (default
    /// 10 s); `None` reads them only on SIGHUP or [`reload`](Self::reload).
    pub fn reload_interval(mut self, interval: impl Into<Option<Duration>>) -> Self {
        self.reload_interval = interval.into();
        self
    }

    /// Whether SIGHUP makes the server read the files again (default `true`, Unix). Turn it off
    /// when SIGHUP means something else to the service, such as an in-place upgrade
    /// (`lifecycle_core::Upgrade`), whose new process reads the files anyway.
    pub fn reload_on_sighup(mut self, reload: bool) -> Self {
        self.reload_on_sighup = reload;
        self
    }

    /// Reads the files again and, if they changed and hold a usable certificate and key, uses
    /// them for new handshakes. Returns whether the certificate changed.
    ///
    /// # Errors
    ///
    /// As [`from_pem_files`](Self::from_pem_files); the certificate in use is kept.
    pub fn reload(&self) -> Result<bool, HttpError> {
        self.certificate.reload()
    }

    pub(crate) fn server_config(&self) -> Arc<ServerConfig> {
        self.server_config.clone()
    }

    pub(crate) fn handshake_time(&self) -> Duration {
        self.handshake_timeout
    }

    pub(crate) fn reload_period(&self) -> Option<Duration> {
        self.reload_interval
    }

    pub(crate) fn reloads_on_sighup(&self) -> bool {
        self.reload_on_sighup
    }

    /// The files, for logs.
    pub(crate) fn cert_path(&self) -> &Path {
        &self.certificate.cert_path
    }
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("cert", &self.certificate.cert_path)
            .field("key", &self.certificate.key_path)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("reload_interval", &self.reload_interval)
            .field("reload_on_sighup", &self.reload_on_sighup)
            .finish()
    }
}

/// The certificate in use and the files it came from; rustls asks it at each handshake.
struct Certificate {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' contents when last loaded, so a check that finds them unchanged costs no
    /// parsing.
    loaded: Mutex<(Vec<u8>, Vec<u8>)>,
}

impl Certificate {
    fn load(
        cert_path: PathBuf,
        key_path: PathBuf,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, HttpError> {
        let (cert_pem, key_pem) = read_both(&cert_path, &key_path)?;
        let key = certified_key(&cert_path, &cert_pem, &key_path, &key_pem, &provider)?;
        Ok(Certificate {
            cert_path,
            key_path,
            provider,
            current: RwLock::new(Arc::new(key)),
            loaded: Mutex::new((cert_pem, key_pem)),
        })
    }

    fn reload(&self) -> Result<bool, HttpError> {
        let (cert_pem, key_pem) = read_both(&self.cert_path, &self.key_path)?;
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if loaded.0 == cert_pem && loaded.1 == key_pem {
            return Ok(false);
        }
        let key = certified_key(
            &self.cert_path,
            &cert_pem,
            &self.key_path,
            &key_pem,
            &self.provider,
        )?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
        *loaded = (cert_pem, key_pem);
        Ok(true)
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("cert", &self.cert_path)
            .field("key", &self.key_path)
            .finish_non_exhaustive()
    }
}

fn read_both(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), HttpError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| HttpError::TlsFile {
            path: path.to_owned(),
            source,
        })
    };
    Ok((read(cert)?, read(key)?))
}

fn certified_key(
    cert_path: &Path,
    cert_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<CertifiedKey, HttpError> {
    let invalid = |path: &Path, what: &str| HttpError::TlsFile {
        path: path.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned()),
    };
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| invalid(cert_path, "not a PEM certificate chain"))?;
    if chain.is_empty() {
        return Err(invalid(cert_path, "no certificate in the file"));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|_| invalid(key_path, "no PEM private key in the file"))?;
    CertifiedKey::from_der(chain, key, provider)
        .map_err(|error| HttpError::TlsCertificate(error.into()))
}
