//! Reloading a server's TLS certificate from its files while it runs: periodically, and on
//! SIGHUP.

use std::future::pending;
use std::time::Duration;

use lifecycle_core::Context;

use crate::tls::TlsConfig;

/// Reads the certificate's files again at `config`'s reload interval and on each SIGHUP, until
/// the server's stop turn. A failed reload keeps the certificate in use and is logged; the next
/// check tries again (a rotation caught between its two files is picked up then).
pub(crate) async fn watch(config: TlsConfig, ctx: Context) {
    #[cfg(unix)]
    let mut hangup = {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(hangup) => Some(hangup),
            Err(error) => {
                tracing::warn!(%error, "SIGHUP cannot reload the TLS certificate");
                None
            }
        }
    };
    let period = config.reload_period();
    loop {
        let periodic = async {
            match period {
                Some(period) => tokio::time::sleep(period).await,
                None => pending::<()>().await,
            }
        };
        #[cfg(unix)]
        let signalled = async {
            match hangup.as_mut() {
                Some(hangup) => {
                    hangup.recv().await;
                }
                None => pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let signalled = pending::<()>();
        tokio::select! {
            biased;
            () = ctx.token().cancelled() => return,
            () = periodic => {}
            () = signalled => {}
        }
        match config.reload() {
            Ok(true) => tracing::info!(
                component = ctx.name(),
                cert = %config.cert_path().display(),
                "TLS certificate reloaded"
            ),
            Ok(false) => {}
            Err(error) => tracing::warn!(
                component = ctx.name(),
                error = %lifecycle_core::BoxError::from(error),
                "TLS certificate not reloaded; the one in use is kept"
            ),
        }
        // At most one reload per this, however often SIGHUP comes.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
