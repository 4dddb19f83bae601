//! Database and Redis components for [`lifecycle_core`] that close cleanly and never hang a
//! shutdown.
//!
//! - [`SqlPool`]: a sqlx pool (PostgreSQL, SQLite, MySQL/MariaDB through sqlx's features) that
//!   connects with retry at start, pings for health, and at its stop turn (after everything
//!   using it) closes within its stop timeout, reporting connections that never came back.

mod deadline;
mod error;
mod sql_pool;

pub use error::DbError;
pub use sql_pool::SqlPool;
