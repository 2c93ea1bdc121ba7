//! Administrative state of an existing interface, over rtnetlink.

use std::time::Duration;

use futures::TryStreamExt;
use rtnetlink::{Handle, LinkUnspec};

use super::LinkError;

/// Netlink requests are local and fast; this only guards against a wedged socket.
const NETLINK_TIMEOUT: Duration = Duration::from_secs(5);

/// The interface index of `name`, or an error saying it does not exist.
pub async fn ifindex(handle: &Handle, name: &str) -> Result<u32, LinkError> {
    let interface = || name.to_string();
    let req = handle.link().get().match_name(name.to_string()).execute();
    let found = tokio::time::timeout(NETLINK_TIMEOUT, async {
        let mut req = std::pin::pin!(req);
        req.try_next().await
    })
    .await
    .map_err(|_| LinkError::LookupTimeout {
        interface: interface(),
        limit: NETLINK_TIMEOUT,
    })?;
    match found {
        Ok(Some(msg)) => Ok(msg.header.index),
        Ok(None) => Err(LinkError::NoSuchInterface {
            interface: interface(),
        }),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code().abs() == libc::ENODEV => {
            Err(LinkError::NoSuchInterface {
                interface: interface(),
            })
        }
        Err(source) => Err(LinkError::Lookup {
            interface: interface(),
            source,
        }),
    }
}

/// Sets `name` administratively up or down.
pub async fn set_admin_state(handle: &Handle, name: &str, up: bool) -> Result<(), LinkError> {
    let index = ifindex(handle, name).await?;
    let msg = if up {
        LinkUnspec::new_with_index(index).up().build()
    } else {
        LinkUnspec::new_with_index(index).down().build()
    };
    tokio::time::timeout(NETLINK_TIMEOUT, handle.link().set(msg).execute())
        .await
        .map_err(|_| LinkError::SetStateTimeout {
            interface: name.to_string(),
            up,
            limit: NETLINK_TIMEOUT,
        })?
        .map_err(|e| LinkError::SetState {
            interface: name.to_string(),
            up,
            // The kernel's answer as an errno, which says more than rtnetlink's wrapper.
            source: match e {
                rtnetlink::Error::NetlinkError(m) => m.to_io(),
                e => std::io::Error::other(e),
            },
        })
}
