//! Everything that speaks rtnetlink: the one place for its wire format,
//! sockets and decoders.
//!
//! - `codec`: constants, message framing, attribute walking, request
//!   builders (hand-written, allocation-free: route dumps are up to 1M
//!   messages).
//! - `socket`: NETLINK_ROUTE sockets (multicast subscription, receive buffer,
//!   batched event reads, dumps, single get/change requests).
//! - `decode`: nexthop objects, links, addresses and neighbours as `model`
//!   types. The watcher's route prefilter lives with the watcher
//!   (`watcher::routes`) on top of `codec`.
//! - [`connect`]: an rtnetlink `Handle` for writes (links, kernel routes),
//!   which go through the `rtnetlink` crate.

pub mod codec;
pub mod decode;
pub mod genl;
pub mod socket;

use std::io;

pub use decode::{DecodeError, LinkL2, LinkTx, Malformed, NeighbourInfo};

/// A failed netlink socket operation: which one, what the OS or kernel said
/// (the source) and, where there is one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("cannot open an rtnetlink socket for {purpose}{}", fix(.source))]
    Open {
        purpose: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot join the rtnetlink multicast group {group}{}", fix(.source))]
    Join {
        group: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot set {option} on an rtnetlink socket{}", fix(.source))]
    SetOption {
        option: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot register the rtnetlink socket for {purpose} with the async runtime")]
    Register {
        purpose: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot send the request for {what}")]
    Send {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {what} from an rtnetlink socket")]
    Recv {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("the kernel refused {what}{}", fix(.source))]
    Refused {
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

impl NetlinkError {
    /// An NLMSG_ERROR answer with errno `code`.
    pub fn refused(what: &'static str, code: i32) -> NetlinkError {
        NetlinkError::Refused {
            what,
            source: io::Error::from_raw_os_error(code),
        }
    }

    /// The errno behind the error.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            NetlinkError::Open { source, .. }
            | NetlinkError::Join { source, .. }
            | NetlinkError::SetOption { source, .. }
            | NetlinkError::Register { source, .. }
            | NetlinkError::Send { source, .. }
            | NetlinkError::Recv { source, .. }
            | NetlinkError::Refused { source, .. } => source.raw_os_error(),
        }
    }
}

/// The fix for an errno, when there is one the user can apply.
fn fix(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => {
            " (needs CAP_NET_ADMIN: run the agent as root or grant it the capability)"
        }
        Some(libc::EMFILE | libc::ENFILE) => {
            " (out of file descriptors: raise the agent's open-file limit)"
        }
        _ => "",
    }
}

/// Opens an rtnetlink connection for writes in the calling thread's network
/// namespace (the connection task runs on the current tokio runtime).
pub fn connect() -> Result<rtnetlink::Handle, NetlinkError> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(|source| NetlinkError::Open {
        purpose: "link and route changes",
        source,
    })?;
    tokio::spawn(conn);
    Ok(handle)
}
