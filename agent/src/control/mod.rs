//! See lib.rs; not written yet.
