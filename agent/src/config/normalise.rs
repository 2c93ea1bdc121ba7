//! `Config` → TOML text with every default spelled out, for `routebackup check`.

use std::fmt::Write;
use std::time::Duration;

use super::tables::TableNames;
use super::{AttachMode, Config, MatchMode};

fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn list(items: impl IntoIterator<Item = String>) -> String {
    let v: Vec<String> = items.into_iter().map(|s| q(&s)).collect();
    format!("[{}]", v.join(", "))
}

fn dur(d: Duration) -> String {
    if d.is_zero() {
        q("0s")
    } else {
        q(&humantime::format_duration(d).to_string())
    }
}

pub fn normalised(c: &Config, names: &TableNames) -> String {
    let mut o = String::new();
    // Writing to a String cannot fail.
    let _ = write_all(&mut o, c, names);
    o
}

fn write_all(o: &mut String, c: &Config, names: &TableNames) -> std::fmt::Result {
    writeln!(o, "[agent]")?;
    writeln!(
        o,
        "pin_path = {}",
        q(&c.agent.pin_path.display().to_string())
    )?;
    writeln!(
        o,
        "control_socket = {}",
        q(&c.agent.control_socket.display().to_string())
    )?;
    let tables: Vec<String> = c.agent.tables.iter().map(ToString::to_string).collect();
    let table_names: Vec<String> = c
        .agent
        .tables
        .iter()
        .map(|t| format!("{t} = {}", names.name(*t).unwrap_or("(no name)")))
        .collect();
    writeln!(
        o,
        "tables = [{}]  # {}",
        tables.join(", "),
        table_names.join(", ")
    )?;
    writeln!(o, "resync_interval = {}", dur(c.agent.resync_interval))?;
    writeln!(
        o,
        "backup_interfaces = {}",
        list(c.agent.backup_interfaces.iter().cloned())
    )?;
    writeln!(
        o,
        "# every backup-enabled interface: {}",
        c.backup_interfaces().join(", ")
    )?;
    if c.agent.on_change.is_empty() {
        writeln!(o, "# on_change: no hook")?;
    } else {
        writeln!(o, "on_change = {}", list(c.agent.on_change.iter().cloned()))?;
    }
    writeln!(o, "hook_timeout = {}", dur(c.agent.hook_timeout))?;
    writeln!(o)?;
    writeln!(o, "[fastpath]")?;
    writeln!(
        o,
        "interfaces = {}",
        list(c.fastpath.interfaces.iter().cloned())
    )?;
    let mode = match c.fastpath.mode {
        AttachMode::Auto => "auto",
        AttachMode::Xdp => "xdp",
        AttachMode::XdpGeneric => "xdp-generic",
        AttachMode::Tc => "tc",
    };
    writeln!(o, "mode = {}", q(mode))?;
    for l in c.links.values() {
        writeln!(o)?;
        writeln!(o, "[[link]]")?;
        writeln!(o, "name = {}", q(&l.name))?;
        writeln!(o, "interface = {}", q(&l.interface))?;
        writeln!(o, "driver = {}", q(l.driver.name()))?;
        for (key, value) in l.driver.normalised() {
            writeln!(o, "{key} = {value}")?;
        }
        if let Some(g) = l.gateway_v4 {
            writeln!(o, "gateway = {}", q(&g.to_string()))?;
        }
        if let Some(g) = l.gateway_v6 {
            writeln!(o, "gateway6 = {}", q(&g.to_string()))?;
        }
        writeln!(o, "require_address = {}", l.require_address)?;
        writeln!(o, "up_timeout = {}", dur(l.up_timeout))?;
        writeln!(o, "retry_interval = {}", dur(l.retry_interval))?;
        writeln!(o, "kernel_routes = {}", l.kernel_routes)?;
        writeln!(o, "route_metric = {}", l.route_metric)?;
        if let Some(v) = &l.verify {
            writeln!(
                o,
                "verify = {{ target = {}, timeout = {} }}",
                q(&v.target.to_string()),
                dur(v.timeout)
            )?;
        }
        writeln!(o, "prearm = {}", l.prearm)?;
    }
    for g in c.groups.values() {
        writeln!(o)?;
        writeln!(o, "[[group]]")?;
        writeln!(o, "name = {}", q(&g.name))?;
        writeln!(
            o,
            "segments = {}",
            list(g.segments.iter().map(ToString::to_string))
        )?;
        let links = g
            .links
            .iter()
            .filter_map(|i| c.links.get(*i))
            .map(|l| l.name.clone());
        writeln!(o, "links = {}", list(links))?;
        let m = match g.match_mode {
            MatchMode::Exact => "exact",
            MatchMode::Covering => "covering",
        };
        writeln!(o, "match = {}", q(m))?;
        writeln!(o, "allow_default = {}", g.allow_default)?;
        writeln!(o, "activate_delay = {}", dur(g.activate_delay))?;
        writeln!(o, "deactivate_delay = {}", dur(g.deactivate_delay))?;
        if let Some(argv) = &g.on_change {
            writeln!(o, "on_change = {}", list(argv.iter().cloned()))?;
        }
        if let Some(p) = &g.probe {
            writeln!(
                o,
                "probe = {{ targets = {}, interval = {}, timeout = {}, down_after = {}, up_after = {} }}",
                list(p.targets.iter().map(ToString::to_string)),
                dur(p.interval),
                dur(p.timeout),
                p.down_after,
                p.up_after
            )?;
        }
    }
    if let Some(m) = &c.metrics {
        writeln!(o)?;
        writeln!(o, "[metrics]")?;
        writeln!(o, "listen = {}", q(&m.listen.to_string()))?;
    }
    Ok(())
}
