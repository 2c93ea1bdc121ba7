//! The drivers' `[[link]]` keys between the config parser and the drivers:
//! the parser reads each with the type its driver gave it ([`KeyType`] is
//! the serde seed, so a wrong type gets serde's usual message at the value),
//! and a driver's check sees them through [`Keys`].

use std::ops::Range;
use std::path::PathBuf;

use serde::de::{Deserialize, DeserializeSeed, Deserializer};
use toml::Spanned;

/// The types a driver's key can take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    /// A string (`peer = "lte"`).
    Text,
    /// A program and its arguments (`up = ["/usr/local/sbin/dial", "lte"]`).
    Argv,
}

/// A driver's key as read, with its place in the file.
#[derive(Clone, Debug)]
pub enum KeyValue {
    Text(Spanned<String>),
    Argv(Spanned<Vec<String>>),
}

impl KeyValue {
    fn span(&self) -> Range<usize> {
        match self {
            KeyValue::Text(v) => v.span(),
            KeyValue::Argv(v) => v.span(),
        }
    }
}

impl<'de> DeserializeSeed<'de> for KeyType {
    type Value = KeyValue;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<KeyValue, D::Error> {
        Ok(match self {
            KeyType::Text => KeyValue::Text(Spanned::deserialize(d)?),
            KeyType::Argv => KeyValue::Argv(Spanned::deserialize(d)?),
        })
    }
}

/// The drivers' keys given in one `[[link]]`.
#[derive(Clone, Debug, Default)]
pub struct DriverKeys(Vec<(&'static str, KeyValue)>);

impl DriverKeys {
    /// The key `name` if a driver owns it, with the type it takes.
    pub fn owned(name: &str) -> Option<(&'static str, KeyType)> {
        super::keys().find(|(k, _)| *k == name)
    }

    /// Whether `key` was given.
    pub fn contains(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn insert(&mut self, key: &'static str, value: KeyValue) {
        self.0.push((key, value));
    }

    fn get(&self, key: &str) -> Option<&KeyValue> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

/// One `[[link]]` as a driver's check sees it.
pub struct Keys<'a> {
    /// The link's name, for the messages.
    pub link: &'a str,
    /// `driver = "..."`: problems without a key of their own point here.
    pub driver: &'a Spanned<String>,
    /// The drivers' keys given.
    pub given: &'a DriverKeys,
}

impl Keys<'_> {
    /// Where `key` was given, if it was.
    pub fn span(&self, key: &str) -> Option<Range<usize>> {
        self.given.get(key).map(KeyValue::span)
    }

    /// The string key `key`, if given.
    pub fn text(&self, key: &str) -> Option<&Spanned<String>> {
        match self.given.get(key)? {
            KeyValue::Text(v) => Some(v),
            KeyValue::Argv(_) => None,
        }
    }

    /// Reports that the driver needs `key` (`hint` says how to write it).
    pub fn missing(&self, key: &str, hint: &str, problems: &mut dyn Problems) {
        problems.hinted(
            self.driver.span(),
            &format!(
                "link \"{}\": driver \"{}\" needs `{key}`",
                self.link,
                self.driver.get_ref()
            ),
            hint,
        );
    }

    /// The argv key `key`, if given.
    pub fn argv(&self, key: &str) -> Option<&Spanned<Vec<String>>> {
        match self.given.get(key)? {
            KeyValue::Argv(v) => Some(v),
            KeyValue::Text(_) => None,
        }
    }
}

/// Where a driver's check reports what is wrong: the config parser's list
/// of problems, each with its place in the file.
pub trait Problems {
    /// A problem at `span` (byte offsets into the file), with its fix in words.
    fn hinted(&mut self, span: Range<usize>, message: &str, hint: &str);

    /// `value` as a path, reported (named `key`) when it is not absolute.
    fn absolute_path(&mut self, value: &Spanned<String>, key: &str) -> PathBuf;
}
