//! Kernel routes for steered segments (`kernel_routes = true` on a link).
//!
//! While a group is steered to a link, the fast path redirects forwarded
//! traffic; traffic the box itself originates, and anything the fast path
//! passes up (e.g. L3 next hops it cannot resolve), follows the kernel's
//! routing table. With `kernel_routes` the agent installs a route per steered
//! segment through the backup interface so that traffic takes the backup too.
//!
//! The routes carry protocol [`RTPROT_ROUTEBACKUP`] (252; `ip route` shows
//! `proto 252`, or `proto routebackup` with a line `252 routebackup` in
//! /etc/iproute2/rt_protos.d/routebackup.conf). That makes them recognisable:
//! after the first sync the dataplane removes those a previous agent left and
//! nothing steers now ([`KernelRoutes::list_ours`]), and a clean stop removes
//! the ones it installed. They leave through a backup interface, so the
//! engine never counts them as primary routes.

use std::net::IpAddr;
use std::time::Duration;

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::AddressFamily;
use rtnetlink::{Handle, RouteMessageBuilder};

use crate::error::Report;
use crate::netlink::{self, NetlinkError};

pub use crate::model::RTPROT_ROUTEBACKUP;
/// Default `route_metric` of a link.
pub const DEFAULT_ROUTE_METRIC: u32 = 1024;

const NETLINK_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a kernel route could not be installed, removed or listed.
#[derive(Debug, thiserror::Error)]
pub enum KernelRoutesError {
    #[error(transparent)]
    Connect(#[from] NetlinkError),
    /// The builder refused the route (rtnetlink does not export its error
    /// type, so only its message is kept).
    #[error("route {prefix}: {reason}")]
    Invalid { prefix: IpNet, reason: String },
    #[error("route {prefix}: gateway {gateway} is not of the prefix's address family")]
    GatewayFamily { prefix: IpNet, gateway: IpAddr },
    #[error("{what}: netlink did not answer within {NETLINK_TIMEOUT:?}")]
    Timeout { what: String },
    #[error("cannot install route {prefix} via ifindex {ifindex} in table {table}{}", fix(.source))]
    Install {
        prefix: IpNet,
        ifindex: u32,
        table: u32,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("cannot remove route {}{}", show(.prefix.as_ref()), fix(.source))]
    Remove {
        /// None: a route of ours whose prefix could not be read.
        prefix: Option<IpNet>,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("route dump failed")]
    Dump {
        #[source]
        source: rtnetlink::Error,
    },
    #[error("cannot open an rtnetlink socket for the route dump")]
    DumpSocket {
        #[source]
        source: std::io::Error,
    },
}

impl KernelRoutesError {
    fn invalid(prefix: IpNet, reason: impl std::fmt::Display) -> KernelRoutesError {
        KernelRoutesError::Invalid {
            prefix,
            reason: reason.to_string(),
        }
    }
}

fn show(prefix: Option<&IpNet>) -> String {
    prefix.map_or_else(|| "?".to_string(), ToString::to_string)
}

/// The fix for what the kernel answered, where there is an obvious one.
fn fix(e: &rtnetlink::Error) -> &'static str {
    match e {
        rtnetlink::Error::NetlinkError(m) if m.raw_code().abs() == libc::EPERM => {
            " (needs CAP_NET_ADMIN: run the agent as root or grant it the capability)"
        }
        _ => "",
    }
}

/// One route the agent installed (as found in the kernel).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OurRoute {
    pub prefix: IpNet,
    pub table: u32,
    pub metric: u32,
    pub ifindex: Option<u32>,
    pub gateway: Option<IpAddr>,
}

/// Installs and removes the agent's kernel routes over rtnetlink.
#[derive(Clone)]
pub struct KernelRoutes {
    handle: Handle,
}

impl KernelRoutes {
    /// Opens an rtnetlink connection in the calling thread's network
    /// namespace; must run inside a tokio runtime.
    pub fn new() -> Result<KernelRoutes, KernelRoutesError> {
        Ok(KernelRoutes {
            handle: netlink::connect()?,
        })
    }

    /// Installs (or replaces) the route `prefix` via `ifindex` (and
    /// `gateway`, which must be of the prefix's family; without it the route
    /// is on-link) with `metric` in `table`.
    pub async fn install(
        &self,
        prefix: IpNet,
        ifindex: u32,
        gateway: Option<IpAddr>,
        metric: u32,
        table: u32,
    ) -> Result<(), KernelRoutesError> {
        let prefix = prefix.trunc();
        let mut builder = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(prefix.addr(), prefix.prefix_len())
            .map_err(|e| KernelRoutesError::invalid(prefix, e))?
            .output_interface(ifindex)
            .priority(metric)
            .table_id(table)
            .protocol(RouteProtocol::Other(RTPROT_ROUTEBACKUP));
        match gateway {
            Some(gw) if gw.is_ipv4() != prefix.addr().is_ipv4() => {
                return Err(KernelRoutesError::GatewayFamily {
                    prefix,
                    gateway: gw,
                });
            }
            Some(gw) => {
                builder = builder
                    .gateway(gw)
                    .map_err(|e| KernelRoutesError::invalid(prefix, e))?;
            }
            // An on-link IPv4 route has link scope, like `ip route add P dev X`.
            None if prefix.addr().is_ipv4() => builder = builder.scope(RouteScope::Link),
            None => {}
        }
        let req = self.handle.route().add(builder.build()).replace().execute();
        tokio::time::timeout(NETLINK_TIMEOUT, req)
            .await
            .map_err(|_| KernelRoutesError::Timeout {
                what: format!("route {prefix}"),
            })?
            .map_err(|source| KernelRoutesError::Install {
                prefix,
                ifindex,
                table,
                source,
            })
    }

    /// Removes our route `prefix` with `metric` from `table`; a route that is
    /// already gone is fine.
    pub async fn remove(
        &self,
        prefix: IpNet,
        metric: u32,
        table: u32,
    ) -> Result<(), KernelRoutesError> {
        let prefix = prefix.trunc();
        let msg = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(prefix.addr(), prefix.prefix_len())
            .map_err(|e| KernelRoutesError::invalid(prefix, e))?
            .priority(metric)
            .table_id(table)
            .protocol(RouteProtocol::Other(RTPROT_ROUTEBACKUP))
            .scope(RouteScope::NoWhere)
            .build();
        self.delete(msg, Some(prefix)).await
    }

    /// Our routes currently in the kernel (`table` None: every table).
    pub async fn list_ours(&self, table: Option<u32>) -> Result<Vec<OurRoute>, KernelRoutesError> {
        Ok(self
            .dump_ours(table)
            .await?
            .iter()
            .filter_map(describe)
            .collect())
    }

    /// Deletes every route with our protocol (`table` None: in every table);
    /// returns how many were deleted.
    pub async fn remove_all_ours(&self, table: Option<u32>) -> Result<usize, KernelRoutesError> {
        let mut n = 0;
        for msg in self.dump_ours(table).await? {
            let prefix = describe(&msg).map(|r| r.prefix);
            self.delete(msg, prefix).await?;
            n += 1;
        }
        Ok(n)
    }

    /// Deletes `msg`; `prefix` names it in errors.
    async fn delete(
        &self,
        msg: RouteMessage,
        prefix: Option<IpNet>,
    ) -> Result<(), KernelRoutesError> {
        let req = self.handle.route().del(msg).execute();
        match tokio::time::timeout(NETLINK_TIMEOUT, req).await {
            Err(_) => Err(KernelRoutesError::Timeout {
                what: format!("route {}", show(prefix.as_ref())),
            }),
            Ok(Ok(())) => Ok(()),
            Ok(Err(rtnetlink::Error::NetlinkError(e)))
                if matches!(e.raw_code().abs(), libc::ESRCH | libc::ENOENT) =>
            {
                Ok(())
            }
            Ok(Err(source)) => Err(KernelRoutesError::Remove { prefix, source }),
        }
    }

    /// Our routes, found without decoding a full table: the dump asks the
    /// kernel to return only our protocol (NETLINK_GET_STRICT_CHK on a
    /// dedicated socket, so other requests keep their lenient checking), and
    /// whatever still arrives is filtered as it streams, never collected whole.
    async fn dump_ours(&self, table: Option<u32>) -> Result<Vec<RouteMessage>, KernelRoutesError> {
        let (mut conn, handle, _) = rtnetlink::new_connection()
            .map_err(|source| KernelRoutesError::DumpSocket { source })?;
        {
            use netlink_sys::AsyncSocket;
            if let Err(e) = conn
                .socket_mut()
                .socket_ref()
                .set_netlink_get_strict_chk(true)
            {
                // Older kernels: the dump is filtered here instead.
                tracing::debug!(
                    "NETLINK_GET_STRICT_CHK unavailable ({}); filtering route dumps in user space",
                    Report(&e)
                );
            }
        }
        let task = tokio::spawn(conn);
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut query = RouteMessageBuilder::<IpAddr>::new().build();
            query.header.address_family = family;
            query.header.protocol = RouteProtocol::Other(RTPROT_ROUTEBACKUP);
            // RT_TABLE_UNSPEC: every table (a strict dump filters on a set table).
            query.header.table = 0;
            query.header.kind = RouteType::Unspec;
            query.header.scope = RouteScope::Universe;
            query.attributes.clear();
            let stream = handle.route().get(query).execute().try_filter(|m| {
                std::future::ready(
                    u8::from(m.header.protocol) == RTPROT_ROUTEBACKUP
                        && table.is_none_or(|t| route_table(m) == t),
                )
            });
            let routes: Vec<RouteMessage> =
                tokio::time::timeout(NETLINK_TIMEOUT, stream.try_collect())
                    .await
                    .map_err(|_| KernelRoutesError::Timeout {
                        what: "route dump".to_string(),
                    })?
                    .map_err(|source| KernelRoutesError::Dump { source })?;
            out.extend(routes);
        }
        task.abort();
        Ok(out)
    }
}

fn route_table(m: &RouteMessage) -> u32 {
    m.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(m.header.table))
}

fn describe(m: &RouteMessage) -> Option<OurRoute> {
    let len = m.header.destination_prefix_length;
    let mut dst = None;
    let mut metric = 0;
    let mut ifindex = None;
    let mut gateway = None;
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(addr) => dst = ip_of(addr),
            RouteAttribute::Priority(p) => metric = *p,
            RouteAttribute::Oif(i) => ifindex = Some(*i),
            RouteAttribute::Gateway(addr) => gateway = ip_of(addr),
            _ => {}
        }
    }
    let dst = dst.or(match m.header.address_family {
        AddressFamily::Inet => Some(IpAddr::from([0u8, 0, 0, 0])),
        AddressFamily::Inet6 => Some(IpAddr::from([0u16; 8])),
        _ => None,
    })?;
    let prefix = IpNet::new(dst, len).ok()?;
    Some(OurRoute {
        prefix,
        table: route_table(m),
        metric,
        ifindex,
        gateway,
    })
}

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}
