//! An HTTP server component for [`lifecycle_core`] that drains without dropping a request.
//!
//! This crate is a placeholder: the server component lands with its own issue.
