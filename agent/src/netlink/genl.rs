//! Generic netlink: the kernel's `netdev` family, asked for one device's
//! xdp-features (`NETDEV_CMD_DEV_GET` → `NETDEV_A_DEV_XDP_FEATURES`).
//!
//! Message types come from `netlink-packet-generic` (the rust-netlink
//! family's generic netlink packets, on the same `netlink-packet-core` as
//! `netlink-packet-route`): the controller's `GETFAMILY` resolves the
//! family id, and [`NetdevMsg`] is the netdev family's payload. The exchange
//! goes through `socket::Requests` on a NETLINK_GENERIC socket (blocking,
//! bounded reads: the answers come at once). The `genetlink` crate's async
//! connection was not used: its current release (0.3) is built on an older
//! `netlink-proto` (0.13) than `rtnetlink`'s (0.14), which would put two of
//! them in the build.

use netlink_packet_core::{
    emit_u32, emit_u64, parse_u32, parse_u64, DecodeError, DefaultNla, Emitable, ErrorContext, Nla,
    NlaBuffer, NlasIterator, Parseable, ParseableParametrized,
};
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::{GenlFamily, GenlHeader, GenlMessage};
use netlink_sys::protocols::NETLINK_GENERIC;

use super::socket::Requests;
use super::NetlinkError;

/// `NETDEV_FAMILY_NAME`.
pub const NETDEV_FAMILY: &str = "netdev";
const NETDEV_FAMILY_VERSION: u8 = 1;
const NETDEV_CMD_DEV_GET: u8 = 1;
const NETDEV_A_DEV_IFINDEX: u16 = 1;
const NETDEV_A_DEV_XDP_FEATURES: u16 = 3;
/// `NETDEV_XDP_ACT_NDO_XMIT`: the device implements `ndo_xdp_xmit`, so it
/// can be the target of an XDP redirect (a veth only while its peer has an
/// XDP program or GRO).
pub const NETDEV_XDP_ACT_NDO_XMIT: u64 = 4;
/// `GENL_ID_CTRL`: the controller's fixed family id.
const GENL_ID_CTRL: u16 = 0x10;

/// One attribute of a netdev family message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetdevAttr {
    Ifindex(u32),
    XdpFeatures(u64),
    Other(DefaultNla),
}

impl Nla for NetdevAttr {
    fn value_len(&self) -> usize {
        match self {
            NetdevAttr::Ifindex(_) => 4,
            NetdevAttr::XdpFeatures(_) => 8,
            NetdevAttr::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            NetdevAttr::Ifindex(_) => NETDEV_A_DEV_IFINDEX,
            NetdevAttr::XdpFeatures(_) => NETDEV_A_DEV_XDP_FEATURES,
            NetdevAttr::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            NetdevAttr::Ifindex(v) => {
                let _ = emit_u32(buffer, *v);
            }
            NetdevAttr::XdpFeatures(v) => {
                let _ = emit_u64(buffer, *v);
            }
            NetdevAttr::Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for NetdevAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let payload = buf.value();
        Ok(match buf.kind() {
            NETDEV_A_DEV_IFINDEX => {
                NetdevAttr::Ifindex(parse_u32(payload).context("bad NETDEV_A_DEV_IFINDEX")?)
            }
            NETDEV_A_DEV_XDP_FEATURES => NetdevAttr::XdpFeatures(
                parse_u64(payload).context("bad NETDEV_A_DEV_XDP_FEATURES")?,
            ),
            _ => NetdevAttr::Other(DefaultNla::parse(buf)?),
        })
    }
}

/// A netdev family message (the payload after the generic header).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetdevMsg {
    pub cmd: u8,
    pub attrs: Vec<NetdevAttr>,
}

impl NetdevMsg {
    /// The xdp-features the message carries, if any.
    pub fn xdp_features(&self) -> Option<u64> {
        self.attrs.iter().find_map(|a| match a {
            NetdevAttr::XdpFeatures(f) => Some(*f),
            _ => None,
        })
    }

    pub fn ifindex(&self) -> Option<u32> {
        self.attrs.iter().find_map(|a| match a {
            NetdevAttr::Ifindex(i) => Some(*i),
            _ => None,
        })
    }
}

impl GenlFamily for NetdevMsg {
    fn family_name() -> &'static str {
        NETDEV_FAMILY
    }

    fn command(&self) -> u8 {
        self.cmd
    }

    fn version(&self) -> u8 {
        NETDEV_FAMILY_VERSION
    }
}

impl Emitable for NetdevMsg {
    fn buffer_len(&self) -> usize {
        self.attrs.as_slice().buffer_len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        self.attrs.as_slice().emit(buffer);
    }
}

impl ParseableParametrized<[u8], GenlHeader> for NetdevMsg {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        let attrs = NlasIterator::new(buf)
            .map(|nla| nla.and_then(|nla| NetdevAttr::parse(&nla)))
            .collect::<Result<Vec<_>, _>>()
            .context("bad netdev attributes")?;
        Ok(NetdevMsg {
            cmd: header.cmd,
            attrs,
        })
    }
}

/// Why the netdev family cannot be asked.
#[derive(Debug, thiserror::Error)]
pub enum GenlError {
    #[error("cannot ask the kernel's generic netlink families")]
    Netlink(#[source] Box<NetlinkError>),
    #[error("the kernel has no `netdev` generic netlink family (Linux 6.3 or later reports xdp-features)")]
    NoFamily,
}

impl From<NetlinkError> for GenlError {
    fn from(e: NetlinkError) -> GenlError {
        GenlError::Netlink(Box::new(e))
    }
}

/// A blocking socket for the netdev family's device queries.
pub struct Netdev {
    requests: Requests,
    family: u16,
}

impl Netdev {
    /// Opens the socket (in the calling thread's network namespace) and
    /// resolves the family's id.
    pub fn open() -> Result<Netdev, GenlError> {
        let requests = Requests::open_protocol(NETLINK_GENERIC, "xdp-features")?;
        let family = requests
            .get(
                "the netdev family's id",
                GENL_ID_CTRL,
                &body(GenlCtrl {
                    cmd: GenlCtrlCmd::GetFamily,
                    nlas: vec![GenlCtrlAttrs::FamilyName(NETDEV_FAMILY.to_string())],
                }),
                GENL_ID_CTRL,
                |m| {
                    let msg = GenlMessage::<GenlCtrl>::parse_with_param(m.payload, m.kind).ok()?;
                    msg.payload.nlas.iter().find_map(|a| match a {
                        GenlCtrlAttrs::FamilyId(id) => Some(*id),
                        _ => None,
                    })
                },
            )?
            .ok_or(GenlError::NoFamily)?;
        Ok(Netdev { requests, family })
    }

    /// The xdp-features (`NETDEV_XDP_ACT_*` bits) of `ifindex`; None when the
    /// device does not exist (any more) or the answer carries none.
    pub fn xdp_features(&self, ifindex: u32) -> Result<Option<u64>, GenlError> {
        Ok(self.requests.get(
            "a device's xdp-features",
            self.family,
            &body(NetdevMsg {
                cmd: NETDEV_CMD_DEV_GET,
                attrs: vec![NetdevAttr::Ifindex(ifindex)],
            }),
            self.family,
            |m| {
                GenlMessage::<NetdevMsg>::parse_with_param(m.payload, m.kind)
                    .ok()?
                    .payload
                    .xdp_features()
            },
        )?)
    }
}

/// The generic header and attributes of a request (what follows nlmsghdr).
fn body<F: GenlFamily + Emitable + std::fmt::Debug>(payload: F) -> Vec<u8> {
    let mut msg = GenlMessage::from_payload(payload);
    msg.finalize();
    let mut buf = vec![0u8; msg.buffer_len()];
    msg.emit(&mut buf);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `NETDEV_CMD_DEV_GET` answer as the kernel sends it (after the
    /// netlink header): genl header (cmd 1, version 1, reserved), then
    /// IFINDEX (u32 7), XDP_FEATURES (u64, here BASIC|REDIRECT|NDO_XMIT|RX_SG),
    /// and an attribute this code does not know (XDP_ZC_MAX_SEGS, u32 1).
    fn dev_get_answer(features: u64) -> Vec<u8> {
        let mut b = vec![1u8, 1, 0, 0];
        b.extend_from_slice(&8u16.to_ne_bytes());
        b.extend_from_slice(&1u16.to_ne_bytes());
        b.extend_from_slice(&7u32.to_ne_bytes());
        b.extend_from_slice(&12u16.to_ne_bytes());
        b.extend_from_slice(&3u16.to_ne_bytes());
        b.extend_from_slice(&features.to_ne_bytes());
        b.extend_from_slice(&8u16.to_ne_bytes());
        b.extend_from_slice(&4u16.to_ne_bytes());
        b.extend_from_slice(&1u32.to_ne_bytes());
        b
    }

    #[test]
    fn decodes_a_dev_get_answer() {
        let msg = GenlMessage::<NetdevMsg>::parse_with_param(&dev_get_answer(0x27), 30).unwrap();
        assert_eq!(msg.payload.cmd, NETDEV_CMD_DEV_GET);
        assert_eq!(msg.payload.ifindex(), Some(7));
        assert_eq!(msg.payload.xdp_features(), Some(0x27));
        assert_ne!(
            msg.payload.xdp_features().unwrap() & NETDEV_XDP_ACT_NDO_XMIT,
            0
        );
        // A veth whose peer has neither XDP nor GRO: BASIC|REDIRECT|RX_SG.
        let msg = GenlMessage::<NetdevMsg>::parse_with_param(&dev_get_answer(0x23), 30).unwrap();
        assert_eq!(
            msg.payload.xdp_features().unwrap() & NETDEV_XDP_ACT_NDO_XMIT,
            0
        );
    }

    #[test]
    fn bad_answers_are_errors_not_panics() {
        let full = dev_get_answer(0x27);
        for len in 0..full.len() {
            // Every truncation either decodes what is complete or fails.
            let _ = GenlMessage::<NetdevMsg>::parse_with_param(&full[..len], 30);
        }
        // An XDP_FEATURES attribute of 4 bytes instead of 8.
        let mut short = vec![1u8, 1, 0, 0];
        short.extend_from_slice(&8u16.to_ne_bytes());
        short.extend_from_slice(&3u16.to_ne_bytes());
        short.extend_from_slice(&1u32.to_ne_bytes());
        assert!(GenlMessage::<NetdevMsg>::parse_with_param(&short, 30).is_err());
    }

    #[test]
    fn emits_a_dev_get_request() {
        let buf = body(NetdevMsg {
            cmd: NETDEV_CMD_DEV_GET,
            attrs: vec![NetdevAttr::Ifindex(7)],
        });
        let mut want = vec![1u8, 1, 0, 0];
        want.extend_from_slice(&8u16.to_ne_bytes());
        want.extend_from_slice(&1u16.to_ne_bytes());
        want.extend_from_slice(&7u32.to_ne_bytes());
        assert_eq!(buf, want);
    }
}
