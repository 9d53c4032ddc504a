//! The `scrip` binary's library half: the in-process consortium that `scrip demo` runs and the
//! end-to-end tests use. The command-line dispatch lives in `main.rs`.

pub mod consortium;
pub mod demo;
