//! routebackup: dynamic route backup for Linux edge boxes.
//!
//! Layout: `model` (the shared vocabulary), `config`, `engine` (pure decision
//! logic), and the edges: `watcher` (rtnetlink), `fastpath` (BPF programs and
//! maps), `links` (backup link drivers), `control` (status socket), `daemon`
//! (wires them together).

pub mod config;
pub mod control;
pub mod daemon;
pub mod dataplane;
pub mod engine;
pub mod fastpath;
pub mod links;
pub mod model;
pub mod paths;
pub mod segments;
pub mod watcher;
