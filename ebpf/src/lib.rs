//! Library side of the kernel crate: lets the agent depend on it so cargo
//! rebuilds the agent (and re-embeds the object) when the kernel code changes.
#![no_std]
