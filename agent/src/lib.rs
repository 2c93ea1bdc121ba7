//! routebackup: dynamic route backup for Linux edge boxes.
//!
//! Layout: `model` (the shared vocabulary), `ids` (typed group and link
//! ids and the slots they index), `config`, `segments` (which route
//! prefixes match a monitored segment), `engine` (pure decision logic), and
//! the edges: `netlink` (rtnetlink wire format, sockets and
//! decoders), `watcher` (the kernel's routes, links and addresses as events),
//! `kernel` (what the running kernel can do, probed once), `fastpath` (BPF
//! programs and maps), `dataplane` (carries actions out, one executor per
//! concern: fast path entries and next-hop MACs, links, kernel routes,
//! neighbours, probes; log-only in a dry run; behind `sink`'s
//! `ActionSink`), `links` (backup link drivers, a plug-in module each
//! under `links::driver`), `status` (the status document), `control`
//! (status socket), `daemon` (wires them together around the
//! `ActionSink`; main.rs is the one place that names both the daemon and
//! the data plane).
//! `error` is how errors reach people, `paths` every runtime path.
//! Operators' side: `metrics` (Prometheus), `hooks` (`on_change`), `logging`
//! (journald or stderr).
//!
//! Unit tests sit at the end of their module's file in `#[cfg(test)] mod
//! tests` until they pass 150 lines, then move to `<module>/tests.rs`, which
//! may split topics off into `<module>/tests/<topic>.rs`.

pub mod config;
pub mod control;
pub mod daemon;
pub mod dataplane;
pub mod engine;
pub mod error;
pub mod fastpath;
pub mod hooks;
pub mod ids;
pub mod kernel;
pub mod links;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod netlink;
pub mod paths;
pub mod probe;
pub mod segments;
pub mod sink;
pub mod status;
pub mod watcher;
