//! `--tls-cert` and `--tls-key`: TLS on the service's port, for HTTP/1.1, HTTP/2 and gRPC alike.

use std::path::PathBuf;

use lifecycle_http::{HttpError, HttpServer, TlsConfig};

/// The TLS flags (PEM files; both or neither).
#[derive(Debug, clap::Args)]
pub(crate) struct TlsArgs {
    /// The certificate chain (PEM, leaf first): serve TLS. Re-read every 10 s, so a renewed
    /// certificate is used without a restart, and on SIGHUP (unless SIGHUP is the in-place
    /// upgrade, whose new process reads it at once).
    #[arg(long, env = "TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// `server`, with TLS when the flags ask for it, its files re-read on SIGHUP if
    /// `reload_on_sighup`.
    pub(crate) fn apply(
        &self,
        server: HttpServer,
        reload_on_sighup: bool,
    ) -> Result<HttpServer, HttpError> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                let tls = TlsConfig::from_pem_files(cert, key)?.reload_on_sighup(reload_on_sighup);
                Ok(server.tls(tls))
            }
            _ => Ok(server),
        }
    }
}
