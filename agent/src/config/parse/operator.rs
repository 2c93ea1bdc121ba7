//! The operator-facing keys: `[metrics]`, `on_change` hooks and
//! `hook_timeout` (kept apart from the routing keys they sit beside).

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::{Reporter, S};
use crate::config::MetricsConfig;

/// `[agent] hook_timeout` default: a hook still running after this is killed.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    listen: S<String>,
}

/// `[metrics] listen = "ADDRESS:PORT"`.
pub(super) fn metrics_config(
    rep: &mut Reporter,
    raw: Option<&RawMetrics>,
) -> Option<MetricsConfig> {
    let listen = &raw?.listen;
    match listen.get_ref().parse::<SocketAddr>() {
        Ok(listen) => Some(MetricsConfig { listen }),
        Err(_) => {
            rep.hinted(
                listen.span(),
                format!(
                    "metrics.listen = \"{}\" is not an address and port",
                    listen.get_ref()
                ),
                "write an IP address and a port, e.g. listen = \"127.0.0.1:9469\" or \"[::1]:9469\"",
            );
            None
        }
    }
}

/// An `on_change` argv (`owner` is "agent" or `group "hq"`): a program
/// given by absolute path, then its arguments; run without a shell.
pub(super) fn hook_argv(rep: &mut Reporter, argv: &S<Vec<String>>, owner: &str) -> Vec<String> {
    match argv.get_ref().first() {
        None => rep.hinted(
            argv.span(),
            format!("{owner}: on_change is empty"),
            "give the program and its arguments, e.g. on_change = [\"/usr/local/bin/notify\", \"failover\"], or remove the key",
        ),
        Some(program) if !program.starts_with('/') => rep.hinted(
            argv.span(),
            format!("{owner}: on_change program \"{program}\" is not an absolute path"),
            "hooks run without a shell or PATH search; write the program from /, e.g. \"/usr/local/bin/notify\"",
        ),
        Some(_) => return argv.get_ref().clone(),
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, TableNames};
    use crate::ids::GroupId;

    const BASE: &str = r#"
[fastpath]
interfaces = ["lan0"]

[[link]]
name = "lte"
interface = "ppp0"
driver = "always-up"

[[group]]
name = "hq"
segments = ["10.20.0.0/16"]
links = ["lte"]
"#;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse_with_tables(text, "rb.toml", &TableNames::builtin())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn absent_keys_mean_no_metrics_and_no_hooks() {
        let c = parse(BASE).unwrap();
        assert_eq!(c.metrics, None);
        assert_eq!(c.hook_for(GroupId(0)), None);
        assert_eq!(c.agent.hook_timeout, super::DEFAULT_HOOK_TIMEOUT);
    }

    #[test]
    fn group_hook_replaces_the_global_one_and_round_trips() {
        let text = format!(
            "[agent]\non_change = [\"/bin/global\", \"x\"]\nhook_timeout = \"3s\"\n[metrics]\nlisten = \"[::1]:9469\"\n{BASE}\n[[group]]\nname = \"br\"\nsegments = [\"10.30.0.0/16\"]\nlinks = [\"lte\"]\non_change = [\"/bin/own\"]\n"
        );
        let c = parse(&text).unwrap();
        assert_eq!(
            c.hook_for(GroupId(0)),
            Some(&["/bin/global".to_string(), "x".to_string()][..])
        );
        assert_eq!(c.hook_for(GroupId(1)), Some(&["/bin/own".to_string()][..]));
        assert_eq!(c.agent.hook_timeout, std::time::Duration::from_secs(3));
        assert_eq!(c.metrics.as_ref().unwrap().listen.to_string(), "[::1]:9469");
        let normalised = c.normalised();
        assert!(normalised.contains("hook_timeout = \"3s\""), "{normalised}");
        assert_eq!(parse(&normalised).unwrap(), c, "{normalised}");
    }

    #[test]
    fn bad_values_are_rejected_with_a_hint() {
        for (text, want) in [
            (
                "[metrics]\nlisten = \"localhost\"\n",
                "metrics.listen = \"localhost\" is not an address and port",
            ),
            ("[metrics]\nport = 9469\n", "unknown field `port`"),
            ("[agent]\non_change = []\n", "agent: on_change is empty"),
            (
                "[agent]\non_change = [\"notify\"]\n",
                "program \"notify\" is not an absolute path",
            ),
            ("[agent]\nhook_timeout = \"10\"\n", "durations need a unit"),
        ] {
            let e = parse(&format!("{text}{BASE}")).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
