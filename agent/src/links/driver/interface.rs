//! `driver = "interface"`: an existing interface, set administratively up
//! by `up` and down by `down`, over rtnetlink.

use std::time::Duration;

use futures::TryStreamExt;
use rtnetlink::{Handle, LinkUnspec};

use super::{Driver, Keys, Problems, Profile, Task};
use crate::links::{DriverState, LinkError};

/// The interface driver (no settings: the link's `interface` is all).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interface;

impl Driver for Interface {
    const NAME: &'static str = "interface";
    const PROFILE: Profile = Profile {
        always_up: false,
        needs_address: false,
    };

    fn check(_: &Keys<'_>, _: &mut dyn Problems) -> Option<Interface> {
        Some(Interface)
    }

    async fn up(&self, task: &mut Task) {
        let name = task.interface.clone();
        match set(task, true).await {
            Ok(()) => {
                tracing::info!(link = %task.name, "set interface {name} up");
                task.set_state(DriverState::Up);
            }
            Err(e) => {
                task.set_state(DriverState::Idle);
                task.fail(task.attempt, &e);
            }
        }
    }

    async fn down(&self, task: &mut Task) {
        let name = task.interface.clone();
        match set(task, false).await {
            Ok(()) => tracing::info!(link = %task.name, "set interface {name} down"),
            Err(e) => {
                tracing::warn!(link = %task.name, "taking the link down: {}", e.text());
            }
        }
    }
}

/// Sets the link's interface administratively up or down.
async fn set(task: &mut Task, up: bool) -> Result<(), LinkError> {
    let handle = task.netlink()?;
    set_admin_state(&handle, &task.interface, up).await
}

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
