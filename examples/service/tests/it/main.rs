//! The example service's tests, one binary: the service run as a child process with real signals
//! (`process`, `upgrade`, `tenants`), the no-loss tests of its jobs and events across SIGTERMs
//! and a SIGKILL, gRPC under load, and the properties of its deployment manifests (`deploy`).
//!
//! `upgrade` makes this process a child subreaper, so the processes an upgrade starts become its
//! children; it waits only for the PIDs it knows, so the other modules' children are untouched.

mod common;
mod deploy;
mod events;
mod grpc;
mod jobs;
mod process;
mod tenants;
mod upgrade;
