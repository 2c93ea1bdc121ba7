//! Administrative state of an existing interface, over rtnetlink.

use std::time::Duration;

use futures::TryStreamExt;
use rtnetlink::{Handle, LinkUnspec};

/// Netlink requests are local and fast; this only guards against a wedged socket.
const NETLINK_TIMEOUT: Duration = Duration::from_secs(5);

/// The interface index of `name`, or an error saying it does not exist.
pub async fn ifindex(handle: &Handle, name: &str) -> Result<u32, String> {
    let req = handle.link().get().match_name(name.to_string()).execute();
    let found = tokio::time::timeout(NETLINK_TIMEOUT, async {
        let mut req = std::pin::pin!(req);
        req.try_next().await
    })
    .await
    .map_err(|_| format!("netlink did not answer within {NETLINK_TIMEOUT:?} looking up {name}"))?;
    match found {
        Ok(Some(msg)) => Ok(msg.header.index),
        Ok(None) => Err(format!("interface {name} does not exist")),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code().abs() == libc::ENODEV => {
            Err(format!("interface {name} does not exist"))
        }
        Err(e) => Err(format!("cannot look up interface {name}: {e}")),
    }
}

/// Sets `name` administratively up or down.
pub async fn set_admin_state(handle: &Handle, name: &str, up: bool) -> Result<(), String> {
    let index = ifindex(handle, name).await?;
    let msg = if up {
        LinkUnspec::new_with_index(index).up().build()
    } else {
        LinkUnspec::new_with_index(index).down().build()
    };
    let word = if up { "up" } else { "down" };
    tokio::time::timeout(NETLINK_TIMEOUT, handle.link().set(msg).execute())
        .await
        .map_err(|_| {
            format!("netlink did not answer within {NETLINK_TIMEOUT:?} setting {name} {word}")
        })?
        .map_err(|e| match e {
            rtnetlink::Error::NetlinkError(m) => {
                format!("cannot set interface {name} {word}: {}", m.to_io())
            }
            e => format!("cannot set interface {name} {word}: {e}"),
        })
}
