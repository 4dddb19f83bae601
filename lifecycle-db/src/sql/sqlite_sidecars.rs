//! SQLite's `-wal` and `-shm` files, removed once the pool has closed.
//!
//! SQLite removes them when the last connection to the database closes, after a checkpoint. A
//! connection that closes while another one is closing sees that one still open, and so does
//! the other: when connections come back to a closed pool at the same moment, each closes from
//! a task of its own and the files can stay (2 runs in 30 in `sql_pool`'s test). Nothing is
//! lost (the next open replays the WAL), but a stop that leaves them looks like one that left
//! a connection open (pitfall 24), and a copy of the database file alone misses what the WAL
//! still holds. So once every pool connection has closed, one more reads the database and
//! closes: the last one, it checkpoints and removes them.

use std::any::Any;

/// Removes SQLite's sidecar files when `connect` (a pool's connect options) opens a SQLite
/// file, directly or through sqlx's `Any` driver, and they are still there. Call it only after
/// the pool has closed. Does nothing for other databases, or without the `sqlite` feature.
pub(crate) async fn remove_after_close(connect: &(dyn Any + Send + Sync)) {
    #[cfg(feature = "sqlite")]
    if let Some(options) = sqlite::options(connect) {
        if let Err(error) = sqlite::checkpoint_and_close(options).await {
            // The files stay; the next open replays them.
            tracing::debug!(%error, "could not remove SQLite's -wal and -shm files");
        }
    }
    #[cfg(not(feature = "sqlite"))]
    let _ = connect;
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use std::any::Any;
    use std::path::PathBuf;

    use sqlx::any::AnyConnectOptions;
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::{ConnectOptions, Connection};

    /// The SQLite options in a pool's connect options, if it opens SQLite.
    pub(super) fn options(connect: &(dyn Any + Send + Sync)) -> Option<SqliteConnectOptions> {
        if let Some(options) = connect.downcast_ref::<SqliteConnectOptions>() {
            return Some(options.clone());
        }
        let any = connect.downcast_ref::<AnyConnectOptions>()?;
        if any.database_url.scheme() != "sqlite" {
            return None;
        }
        SqliteConnectOptions::from_url(&any.database_url).ok()
    }

    pub(super) async fn checkpoint_and_close(
        options: SqliteConnectOptions,
    ) -> Result<(), sqlx::Error> {
        let mut wal = options.get_filename().as_os_str().to_owned();
        wal.push("-wal");
        // In-memory databases, files not in WAL mode, and the usual case: nothing to remove.
        if !PathBuf::from(wal).exists() {
            return Ok(());
        }
        // Never recreate a database that was removed meanwhile.
        let mut connection = options.create_if_missing(false).connect().await?;
        // A connection joins the WAL only once it reads; one that never did removes nothing.
        sqlx::raw_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut connection)
            .await?;
        connection.close().await
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use std::str::FromStr;

    use sqlx::any::AnyConnectOptions;
    use sqlx::sqlite::SqliteConnectOptions;

    use super::sqlite::{checkpoint_and_close, options};

    #[test]
    fn sqlite_is_recognised_typed_and_through_any_and_nothing_else() {
        let typed = SqliteConnectOptions::from_str("sqlite://app.db").unwrap();
        assert!(options(&typed).is_some());
        let any = AnyConnectOptions::from_str("sqlite://app.db?mode=rwc").unwrap();
        assert_eq!(
            options(&any).unwrap().get_filename().to_str(),
            Some("app.db")
        );
        let any = AnyConnectOptions::from_str("postgres://app@db/app").unwrap();
        assert!(options(&any).is_none());
        let postgres = sqlx::postgres::PgConnectOptions::from_str("postgres://app@db/app");
        assert!(options(&postgres.unwrap()).is_none());
    }

    #[tokio::test]
    async fn a_removed_database_is_never_recreated() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("app.db");
        std::fs::write(dir.path().join("app.db-wal"), b"").unwrap();
        let url = format!("sqlite://{}?mode=rwc", file.display());
        let options = SqliteConnectOptions::from_str(&url).unwrap();
        assert!(checkpoint_and_close(options).await.is_err());
        assert!(!file.exists());
    }
}
