//! Bench-only package for micro: holds `benches/remote` (see `remote.rs`), which compares remote
//! request/reply over loopback between micro and peer stacks (raw quinn, tarpc).
//!
//! The library itself is empty. The peer stacks are dev-dependencies, built only for the bench,
//! so `cargo test --workspace` never compiles them. Run the bench from the workspace root with
//! `cargo bench --bench remote`.
