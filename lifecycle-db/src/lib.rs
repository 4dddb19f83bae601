//! sqlx pool and Redis components for [`lifecycle_core`] that close cleanly and never hang a
//! shutdown.
//!
//! This crate is a placeholder: the components land with their own issue.
