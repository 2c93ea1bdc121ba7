//! The backup link drivers as plug-ins: one module per driver owns all there
//! is to know of it, and nothing else in the agent matches on a driver. (One
//! setting of a driver lives outside: pppd's pid-file directory is an option
//! of `LinkDrivers`, so that tests can move it.)
//!
//! A driver's module holds
//! - its `[[link]]` keys ([`Driver::KEYS`], each with the type it takes)
//!   and their check, with the messages and hints `routebackup check`
//!   prints ([`Driver::check`]);
//! - its checked settings (the type its [`DriverConfig`] variant holds) and
//!   how `check` prints them back ([`Driver::normalised`]);
//! - its [`Profile`], the little the engine and the config's defaults know
//!   of it (is it ever brought up and taken down; does it need an address);
//! - its `up` and `down`, run on the link's task (`super::Task`), and the
//!   [`Role`](super::process::Role)s of the programs it runs, which name
//!   them in errors and explain their exits.
//!
//! Dispatch is in one place, the `registry!` list at the end of this file:
//! the macro turns it into the enum [`DriverConfig`] (a variant per driver,
//! named like the driver's type) and every match over it. An enum rather
//! than `Box<dyn Driver>`: the settings stay plain data (`Clone`, `Debug`,
//! and `PartialEq`, which a reload compares), `up` and `down` stay `async fn`
//! without boxing, and no arm is written by hand, so none can be forgotten.
//!
//! Adding a driver: write `<name>.rs` with its type implementing [`Driver`],
//! then add its `mod` line and its line in `registry!`. Its keys must differ
//! from every other driver's and from the keys every link has (the tests of
//! `config::parse::link` check).
//!
//! The config parser reads the keys (`config::parse`, through [`KeyType`])
//! and lends the drivers its problem list ([`Problems`]); `links` itself does
//! not depend on `config`, which depends on it for these types.

pub mod always_up;
pub mod command;
pub mod interface;
mod keys;
pub mod pppd;

pub use keys::{DriverKeys, KeyType, KeyValue, Keys, Problems};

use super::Task;

/// What the rest of the agent may know of a driver; its kind stays here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Profile {
    /// Hot standby: the link is up by itself and is never brought up nor
    /// taken down. The engine sends it no `LinkUp` or `LinkDown` and only
    /// waits for its interface; it is pre-armed unless `prearm = false`.
    pub always_up: bool,
    /// `require_address` is on unless configured: the interface is usable
    /// only once it has an address (a ppp interface is up before IPCP is
    /// done).
    pub needs_address: bool,
}

/// What a driver's module implements; the registry dispatches to it.
trait Driver: Sized + Into<DriverConfig> {
    /// Its name in `driver = "..."`.
    const NAME: &'static str;
    /// The `[[link]]` keys it owns, with the type each takes.
    const KEYS: &'static [(&'static str, KeyType)] = &[];
    /// What the engine and the config's defaults know of it.
    const PROFILE: Profile;

    /// Its settings from its keys; None when they are not usable (each
    /// problem reported, with a hint).
    fn check(keys: &Keys<'_>, problems: &mut dyn Problems) -> Option<Self>;

    /// Its keys as `routebackup check` prints them, defaults filled in.
    fn normalised(&self) -> Vec<(&'static str, toml::Value)> {
        Vec::new()
    }

    /// Brings the link up (`LinkUp`); a failure is reported through the
    /// task with the attempt's id.
    async fn up(&self, task: &mut Task);

    /// Takes the link down (`LinkDown`), stopping whatever its `up` left
    /// running; a failure is logged: the link counts as down afterwards.
    async fn down(&self, task: &mut Task);
}

/// A driver as the registry lists it.
struct Entry {
    name: &'static str,
    keys: &'static [(&'static str, KeyType)],
    check: fn(&Keys<'_>, &mut dyn Problems) -> Option<DriverConfig>,
}

impl Entry {
    const fn of<D: Driver>() -> Entry {
        Entry {
            name: D::NAME,
            keys: D::KEYS,
            check: check_as::<D>,
        }
    }
}

fn check_as<D: Driver>(keys: &Keys<'_>, problems: &mut dyn Problems) -> Option<DriverConfig> {
    D::check(keys, problems).map(Into::into)
}

/// Every driver's keys with their types, in registry order.
pub fn keys() -> impl Iterator<Item = (&'static str, KeyType)> {
    ALL.iter().flat_map(|e| e.keys.iter().copied())
}

impl DriverConfig {
    /// The driver a `[[link]]` names, with its keys checked. None, each
    /// problem reported, when no driver has that name, a key of another
    /// driver is given, or the driver's own keys are not usable.
    pub fn check(keys: &Keys<'_>, problems: &mut dyn Problems) -> Option<DriverConfig> {
        let driver = keys.driver.get_ref().as_str();
        let Some(entry) = ALL.iter().find(|e| e.name == driver) else {
            let names: Vec<&str> = ALL.iter().map(|e| e.name).collect();
            problems.hinted(
                keys.driver.span(),
                &format!("link \"{}\": unknown driver \"{driver}\"", keys.link),
                &format!("driver is one of: {}", names.join(", ")),
            );
            return None;
        };
        let mut ok = true;
        for owner in ALL.iter().filter(|e| e.name != driver) {
            for (key, _) in owner.keys {
                if let Some(span) = keys.span(key) {
                    problems.hinted(
                        span,
                        &format!(
                            "link \"{}\": key `{key}` does not apply to driver \"{driver}\"",
                            keys.link
                        ),
                        &format!(
                            "`{key}` is for driver \"{}\"; remove it or change the driver",
                            owner.name
                        ),
                    );
                    ok = false;
                }
            }
        }
        let d = (entry.check)(keys, problems)?;
        ok.then_some(d)
    }
}

/// Generates [`DriverConfig`] from the list of drivers and its dispatch to
/// each driver's [`Driver`] implementation.
macro_rules! registry {
    ($($module:ident :: $driver:ident),+ $(,)?) => {
        /// A link's driver with its checked settings: one variant per
        /// driver, named like the driver's type.
        #[derive(Clone, Debug, PartialEq)]
        pub enum DriverConfig {
            $($driver($module::$driver),)+
        }

        $(
            impl From<$module::$driver> for DriverConfig {
                fn from(d: $module::$driver) -> DriverConfig {
                    DriverConfig::$driver(d)
                }
            }
        )+

        /// Every driver, in the order `check` names them.
        const ALL: &[Entry] = &[$(Entry::of::<$module::$driver>(),)+];

        impl DriverConfig {
            /// Its name in `driver = "..."`.
            pub fn name(&self) -> &'static str {
                match self {
                    $(DriverConfig::$driver(_) => <$module::$driver as Driver>::NAME,)+
                }
            }

            /// What the engine and the config's defaults know of it.
            pub fn profile(&self) -> Profile {
                match self {
                    $(DriverConfig::$driver(_) => <$module::$driver as Driver>::PROFILE,)+
                }
            }

            /// Its keys as `routebackup check` prints them (after `driver`).
            pub fn normalised(&self) -> Vec<(&'static str, toml::Value)> {
                match self {
                    $(DriverConfig::$driver(d) => d.normalised(),)+
                }
            }

            pub(super) async fn up(&self, task: &mut Task) {
                match self {
                    $(DriverConfig::$driver(d) => d.up(task).await,)+
                }
            }

            pub(super) async fn down(&self, task: &mut Task) {
                match self {
                    $(DriverConfig::$driver(d) => d.down(task).await,)+
                }
            }
        }
    };
}

registry! {
    pppd::Pppd,
    command::Command,
    interface::Interface,
    always_up::AlwaysUp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_driver_has_its_own_name() {
        let mut names = std::collections::HashSet::new();
        for e in ALL {
            assert!(names.insert(e.name), "two drivers are named {}", e.name);
        }
    }
}
