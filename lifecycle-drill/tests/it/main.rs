//! lifecycle-drill's integration tests, one binary: the drill against a small hyper service
//! (`support`), graceful or aborting, run in process and as a child (this binary, re-run).

mod command;
mod drill;
mod in_process;
mod support;
