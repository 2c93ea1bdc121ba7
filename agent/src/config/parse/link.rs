//! `[[link]]`: the keys every link has, and the dispatch of the rest to the
//! link's driver (`links::driver`: each driver owns its keys and checks
//! them), into `LinkConfig`s.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::marker::PhantomData;
use std::net::IpAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::OnceLock;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::{
    ifname_ok, name_ok, positive_duration, probe_target, Reporter, DEFAULT_RETRY_INTERVAL,
    DEFAULT_ROUTE_METRIC, DEFAULT_UP_TIMEOUT, DEFAULT_VERIFY_TIMEOUT, S,
};
use crate::config::{DriverConfig, LinkConfig, VerifyConfig};
use crate::links::driver::always_up::AlwaysUp;
use crate::links::driver::{self, DriverKeys, Keys, Problems};

/// A `[[link]]` as written. Besides the keys below it takes its drivers'
/// (`links::driver::keys`), read with the type their driver gives them, so
/// `Deserialize` is written by hand; it behaves as serde's derive with
/// `deny_unknown_fields` would on the whole list of keys.
pub(super) struct RawLink {
    pub(super) name: S<String>,
    pub(super) interface: S<String>,
    driver: S<String>,
    optional: Optional,
}

/// The keys a `[[link]]` may leave out.
#[derive(Default)]
struct Optional {
    /// The drivers' keys given (`peer`, `up`, ...), for the driver to check.
    driver_keys: DriverKeys,
    gateway: Option<S<String>>,
    gateway6: Option<S<String>>,
    require_address: Option<bool>,
    up_timeout: Option<S<toml::Value>>,
    retry_interval: Option<S<toml::Value>>,
    kernel_routes: Option<bool>,
    route_metric: Option<S<i64>>,
    prearm: Option<bool>,
    verify: Option<S<RawVerify>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVerify {
    target: Option<S<String>>,
    timeout: Option<S<toml::Value>>,
}

/// The keys every link has, before and after the drivers' keys in the list
/// an "unknown field" message gives.
const HEAD: &[&str] = &["name", "interface", "driver"];
const TAIL: &[&str] = &[
    "gateway",
    "gateway6",
    "require_address",
    "up_timeout",
    "retry_interval",
    "kernel_routes",
    "route_metric",
    "prearm",
    "verify",
];

/// Every key a `[[link]]` takes, in that list's order.
fn fields() -> &'static [&'static str] {
    static FIELDS: OnceLock<Vec<&'static str>> = OnceLock::new();
    FIELDS.get_or_init(|| {
        let drivers = driver::keys().map(|(key, _)| key);
        HEAD.iter()
            .copied()
            .chain(drivers)
            .chain(TAIL.iter().copied())
            .collect()
    })
}

/// A key of a `[[link]]`, known to be one of `fields()`.
struct Field(&'static str);

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Field, D::Error> {
        struct FieldVisitor;
        impl Visitor<'_> for FieldVisitor {
            type Value = Field;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("field identifier")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Field, E> {
                match fields().iter().find(|key| **key == v) {
                    Some(key) => Ok(Field(key)),
                    None => Err(E::unknown_field(v, fields())),
                }
            }
        }
        d.deserialize_identifier(FieldVisitor)
    }
}

impl<'de> Deserialize<'de> for RawLink {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RawLink, D::Error> {
        d.deserialize_struct("RawLink", fields(), LinkVisitor)
    }
}

struct LinkVisitor;

impl<'de> Visitor<'de> for LinkVisitor {
    type Value = RawLink;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("struct RawLink")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawLink, A::Error> {
        let mut link = Partial::default();
        while let Some(Field(key)) = map.next_key()? {
            link.read(key, &mut FromMap(&mut map))?;
        }
        link.finish()
    }

    /// A link written as an array: the values of all keys, in order.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawLink, A::Error> {
        let mut link = Partial::default();
        for (index, key) in fields().iter().enumerate() {
            link.read(
                key,
                &mut FromSeq {
                    seq: &mut seq,
                    index,
                },
            )?;
        }
        link.finish()
    }
}

/// Where the value of the key at hand comes from.
trait Values<'de> {
    type Error: de::Error;
    fn next_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, Self::Error>;
}

/// A `[[link]]` table.
struct FromMap<'a, A>(&'a mut A);

impl<'de, A: MapAccess<'de>> Values<'de> for FromMap<'_, A> {
    type Error = A::Error;
    fn next_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        self.0.next_value_seed(seed)
    }
}

/// A link written as an array, at its `index`th element.
struct FromSeq<'a, A> {
    seq: &'a mut A,
    index: usize,
}

impl<'de, A: SeqAccess<'de>> Values<'de> for FromSeq<'_, A> {
    type Error = A::Error;
    fn next_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        self.seq
            .next_element_seed(seed)?
            .ok_or_else(|| de::Error::invalid_length(self.index, &AllKeys))
    }
}

/// What an array holding a link must have: a value for every key.
struct AllKeys;

impl de::Expected for AllKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "struct RawLink with {} elements", fields().len())
    }
}

/// A `RawLink` being read.
#[derive(Default)]
struct Partial {
    name: Option<S<String>>,
    interface: Option<S<String>>,
    driver: Option<S<String>>,
    optional: Optional,
}

/// Reads the value of `key` into `slot`, which must be empty.
fn take<'de, T: Deserialize<'de>, V: Values<'de>>(
    slot: &mut Option<T>,
    key: &'static str,
    values: &mut V,
) -> Result<(), V::Error> {
    if slot.is_some() {
        return Err(de::Error::duplicate_field(key));
    }
    *slot = Some(values.next_seed(PhantomData)?);
    Ok(())
}

impl Partial {
    fn read<'de, V: Values<'de>>(&mut self, key: &'static str, v: &mut V) -> Result<(), V::Error> {
        let o = &mut self.optional;
        match key {
            "name" => take(&mut self.name, key, v),
            "interface" => take(&mut self.interface, key, v),
            "driver" => take(&mut self.driver, key, v),
            "gateway" => take(&mut o.gateway, key, v),
            "gateway6" => take(&mut o.gateway6, key, v),
            "require_address" => take(&mut o.require_address, key, v),
            "up_timeout" => take(&mut o.up_timeout, key, v),
            "retry_interval" => take(&mut o.retry_interval, key, v),
            "kernel_routes" => take(&mut o.kernel_routes, key, v),
            "route_metric" => take(&mut o.route_metric, key, v),
            "prearm" => take(&mut o.prearm, key, v),
            "verify" => take(&mut o.verify, key, v),
            _ => {
                let Some((key, ty)) = DriverKeys::owned(key) else {
                    return Err(de::Error::unknown_field(key, fields()));
                };
                if o.driver_keys.contains(key) {
                    return Err(de::Error::duplicate_field(key));
                }
                let value = v.next_seed(ty)?;
                o.driver_keys.insert(key, value);
                Ok(())
            }
        }
    }

    fn finish<E: de::Error>(self) -> Result<RawLink, E> {
        Ok(RawLink {
            name: self.name.ok_or_else(|| E::missing_field("name"))?,
            interface: self
                .interface
                .ok_or_else(|| E::missing_field("interface"))?,
            driver: self.driver.ok_or_else(|| E::missing_field("driver"))?,
            optional: self.optional,
        })
    }
}

/// The drivers report their problems into the config's list.
impl Problems for Reporter<'_> {
    fn hinted(&mut self, span: Range<usize>, message: &str, hint: &str) {
        Reporter::hinted(self, span, message, hint);
    }

    fn absolute_path(&mut self, value: &S<String>, key: &str) -> PathBuf {
        super::absolute_path(self, value, key)
    }
}

pub(super) fn link_configs(rep: &mut Reporter, raw: &[S<RawLink>]) -> Vec<LinkConfig> {
    let mut out = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for l in raw {
        let l = l.get_ref();
        let o = &l.optional;
        let name = l.name.get_ref();
        if !name_ok(rep, &l.name, "link") {
            // reported
        } else if !seen.insert(name.as_str()) {
            rep.hinted(
                l.name.span(),
                format!("duplicate link name \"{name}\""),
                "every [[link]] needs its own name",
            );
        }
        ifname_ok(rep, &l.interface);
        let keys = Keys {
            link: name,
            driver: &l.driver,
            given: &o.driver_keys,
        };
        let driver = DriverConfig::check(&keys, rep);
        let profile = driver.as_ref().map(DriverConfig::profile);
        // An always-up link is ready while the primary is up: that is what
        // pre-arming is for. A dialled one is pre-armed only when asked.
        let always_up = profile.is_some_and(|p| p.always_up);
        let (gateway_v4, gateway_v6) = gateways(rep, o);
        let up_timeout =
            positive_duration(rep, o.up_timeout.as_ref(), "up_timeout", DEFAULT_UP_TIMEOUT);
        let retry_interval = positive_duration(
            rep,
            o.retry_interval.as_ref(),
            "retry_interval",
            DEFAULT_RETRY_INTERVAL,
        );
        let route_metric = match &o.route_metric {
            None => DEFAULT_ROUTE_METRIC,
            Some(m) => match u32::try_from(*m.get_ref()) {
                Ok(v) => v,
                Err(_) => {
                    rep.hinted(
                        m.span(),
                        "route_metric must be between 0 and 4294967295",
                        "e.g. route_metric = 1024",
                    );
                    DEFAULT_ROUTE_METRIC
                }
            },
        };
        let verify = o.verify.as_ref().and_then(|v| verify_config(rep, name, v));
        out.push(LinkConfig {
            name: name.clone(),
            interface: l.interface.get_ref().clone(),
            // No driver means a problem was reported and the config is
            // rejected: this filler is never run.
            driver: driver.unwrap_or(DriverConfig::AlwaysUp(AlwaysUp)),
            gateway_v4,
            gateway_v6,
            require_address: o
                .require_address
                .unwrap_or(profile.is_some_and(|p| p.needs_address)),
            up_timeout,
            retry_interval,
            kernel_routes: o.kernel_routes.unwrap_or(false),
            route_metric,
            verify,
            prearm: o.prearm.unwrap_or(always_up),
        });
    }
    out
}

fn gateways(
    rep: &mut Reporter,
    l: &Optional,
) -> (Option<std::net::Ipv4Addr>, Option<std::net::Ipv6Addr>) {
    let mut v4 = None;
    let mut v6 = None;
    if let Some(g) = &l.gateway {
        match g.get_ref().parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) => v4 = Some(a),
            Ok(IpAddr::V6(a)) => v6 = Some(a),
            Err(_) => rep.hinted(
                g.span(),
                format!("gateway \"{}\" is not an IP address", g.get_ref()),
                "e.g. gateway = \"10.0.3.2\" (an address, no prefix length)",
            ),
        }
    }
    if let Some(g) = &l.gateway6 {
        match g.get_ref().parse::<IpAddr>() {
            Ok(IpAddr::V6(a)) => {
                if v6.is_some() {
                    rep.hinted(
                        g.span(),
                        "both gateway and gateway6 are IPv6 addresses",
                        "use gateway for the IPv4 next hop and gateway6 for the IPv6 one",
                    );
                }
                v6 = Some(a);
            }
            _ => rep.hinted(
                g.span(),
                format!("gateway6 \"{}\" is not an IPv6 address", g.get_ref()),
                "e.g. gateway6 = \"fe80::1\"",
            ),
        }
    }
    (v4, v6)
}

/// A link's `verify = { ... }`.
fn verify_config(rep: &mut Reporter, link: &str, raw: &S<RawVerify>) -> Option<VerifyConfig> {
    let v = raw.get_ref();
    let timeout = positive_duration(
        rep,
        v.timeout.as_ref(),
        "verify.timeout",
        DEFAULT_VERIFY_TIMEOUT,
    );
    let Some(t) = &v.target else {
        rep.hinted(
            raw.span(),
            format!("the verify of link \"{link}\" has no target"),
            "add target = \"198.51.100.1\" (a host the link must reach, that answers echo requests)",
        );
        return None;
    };
    let target = probe_target(rep, t, &format!("link \"{link}\""))?;
    Some(VerifyConfig { target, timeout })
}

/// Two links on one interface cannot work: each link brings its interface up
/// and down on its own.
pub(super) fn check_interfaces_unique(rep: &mut Reporter, raw: &[S<RawLink>]) {
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for l in raw {
        let l = l.get_ref();
        let iface = l.interface.get_ref().as_str();
        if let Some(other) = seen.insert(iface, l.name.get_ref().as_str()) {
            rep.hinted(
                l.interface.span(),
                format!(
                    "links \"{other}\" and \"{}\" both use interface \"{iface}\"",
                    l.name.get_ref()
                ),
                "each [[link]] needs its own interface",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use crate::config::{Config, TableNames};

    fn err(link: &str) -> String {
        let text = format!("{link}\n[fastpath]\ninterfaces = [\"lan0\"]\n");
        match Config::parse_with_tables(&text, "f", &TableNames::builtin()) {
            Ok(c) => panic!("expected an error, got {c:#?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn every_key_has_one_meaning() {
        let mut seen = HashSet::new();
        for key in super::fields() {
            assert!(
                seen.insert(key),
                "`{key}` is a [[link]] key twice: a driver claims a key every link has"
            );
        }
    }

    #[test]
    fn unknown_keys_get_the_list_serde_would_give() {
        let e = err("[[link]]\nname = \"l\"\ninterface = \"ppp0\"\ndriver = \"pppd\"\nspeed = 3");
        assert!(
            e.contains(
                "f:5:1: unknown field `speed`, expected one of `name`, `interface`, `driver`, \
                 `peer`, `pppd_path`, `up`, `down`, `gateway`, `gateway6`, `require_address`, \
                 `up_timeout`, `retry_interval`, `kernel_routes`, `route_metric`, `prearm`, \
                 `verify`"
            ),
            "{e}"
        );
        let e = err("[[link]]\nname = \"l\"\ninterface = \"ppp0\"");
        assert!(e.contains("f:1:1: missing field `driver`"), "{e}");
        let e = err("[[link]]\nname = \"l\"\ninterface = \"ppp0\"\ndriver = \"pppd\"\npeer = 3");
        assert!(
            e.contains("f:5:8: invalid type: integer `3`, expected a string"),
            "{e}"
        );
    }

    #[test]
    fn a_link_written_as_an_array_reads_its_keys_in_order() {
        let e = err("link = [[\"l\", \"ppp0\"]]");
        assert!(
            e.contains("invalid length 2, expected struct RawLink with 16 elements"),
            "{e}"
        );
        let e = err(
            "link = [[\"l\", \"ppp0\", \"command\", \"p\", \"/x\", [\"/a\"], [\"/b\"], \"1.2.3.4\", \
             \"fe80::1\", true, \"3s\", \"1s\", true, 3, true, {target = \"1.1.1.1\"}]]",
        );
        assert!(
            e.contains("key `peer` does not apply to driver \"command\""),
            "{e}"
        );
    }
}
