//! `cargo xtask demo`: a failover end to end in a lab of network namespaces,
//! printed as a timeline. `--keep` leaves the lab (and the agent) running.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use routebackup_tests::lab::{Backup, Lab, DEST_ADDR, LAN_HOST, SEGMENT};
use routebackup_tests::traffic::{report, Receiver, Sender};

const RATE: u32 = 2_000;
const HOLD: &str = "3s";

struct Timeline {
    start: Instant,
}

impl Timeline {
    fn say(&self, what: &str) {
        let t = self.start.elapsed().as_secs_f64();
        println!("[{t:7.3}s] {what}");
    }
}

/// Watches status and the stream; prints whatever changed, until `until` returns true or `max` passes.
struct Watch<'a> {
    lab: &'a Lab,
    rx: &'a Receiver,
    via_primary: u32,
    via_backup: u32,
    last_state: String,
    last_link: String,
    last_path: &'static str,
    seen: usize,
}

impl Watch<'_> {
    fn poll(&mut self, tl: &Timeline) {
        if let Ok(s) = self.lab.status() {
            let g = &s["groups"][0];
            let state = g["state"].as_str().unwrap_or("?").to_string();
            if state != self.last_state {
                let steered = g["segments"][0]["steered"].as_bool().unwrap_or(false);
                tl.say(&format!(
                    "group \"dest\": state {} → {state} (steered: {steered}, active link: {})",
                    self.last_state,
                    g["active_link"].as_str().unwrap_or("none")
                ));
                self.last_state = state;
            }
            let link = &s["links"][0];
            let ls = link["state"].as_str().unwrap_or("?").to_string();
            if ls != self.last_link {
                tl.say(&format!("link \"backup\" (bk0): {} → {ls}", self.last_link));
                self.last_link = ls;
            }
        }
        let arrivals = self.rx.arrivals();
        for a in &arrivals[self.seen.min(arrivals.len())..] {
            let path = if a.ifindex == self.via_primary {
                "primary"
            } else if a.ifindex == self.via_backup {
                "backup"
            } else {
                "?"
            };
            if path != self.last_path {
                tl.say(&format!(
                    "traffic now arrives via the {path} router (packet #{})",
                    a.seq
                ));
                self.last_path = path;
            }
        }
        self.seen = arrivals.len();
    }

    fn run_for(&mut self, tl: &Timeline, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.poll(tl);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn until(&mut self, tl: &Timeline, max: Duration, mut f: impl FnMut(&Self) -> bool) -> bool {
        let end = Instant::now() + max;
        while Instant::now() < end {
            self.poll(tl);
            if f(self) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

fn main() -> Result<()> {
    let keep = std::env::args().any(|a| a == "--keep");
    println!("routebackup demo: edge box with a primary uplink and a dial-up backup\n");
    println!(
        "  lan ({LAN_HOST}) ── lan0 [edge: routebackup, XDP+TC on lan0] wan0 ── [primary] ──┐"
    );
    println!(
        "                                               bk0 ── [backup]  ──┴─ [dest] {DEST_ADDR}"
    );
    println!(
        "\n  group \"dest\" monitors {SEGMENT}; the primary route is a proto-bgp route via wan0;"
    );
    println!(
        "  the backup link is dialed by a `command` driver (a script that creates the veth bk0);"
    );
    println!("  hold timer (deactivate_delay) {HOLD}.\n");

    let mut lab = Lab::new(Backup::Dialed).context("building the lab (needs root)")?;
    let cfg = lab.config(HOLD, "auto", "");
    let tl = Timeline {
        start: Instant::now(),
    };
    lab.start_agent(&cfg, &[])?;
    tl.say(&format!(
        "agent running in namespace {} (config {})",
        lab.edge.name,
        lab.config_path().display()
    ));

    let (via_primary, via_backup) = lab.dest_ifindexes()?;
    let rx = Receiver::start(&lab.dest.path(), "0.0.0.0:9000".parse()?)?;
    let dst: SocketAddr = format!("{DEST_ADDR}:9000").parse()?;
    let tx = Sender::start(&lab.lan.path(), dst, RATE)?;
    tl.say(&format!(
        "UDP stream {LAN_HOST} → {DEST_ADDR}:9000 at {RATE} packets/s"
    ));
    let mut w = Watch {
        lab: &lab,
        rx: &rx,
        via_primary,
        via_backup,
        last_state: "-".into(),
        last_link: "-".into(),
        last_path: "-",
        seen: 0,
    };
    w.run_for(&tl, Duration::from_secs(2));

    tl.say(&format!("withdrawing the primary route (ip route del {SEGMENT} proto bgp): the BGP session went down"));
    let lost_at = rx.arrivals().len();
    lab.withdraw_primary()?;
    let ok = w.until(&tl, Duration::from_secs(15), |w| w.last_path == "backup");
    if !ok {
        println!(
            "\nthe backup never carried traffic; agent log:\n{}",
            lab.log()
        );
        anyhow::bail!("failover did not happen");
    }
    w.run_for(&tl, Duration::from_secs(2));

    tl.say(&format!(
        "restoring the primary route (ip route add {SEGMENT} via 10.0.1.2 proto bgp)"
    ));
    lab.restore_primary()?;
    w.until(&tl, Duration::from_secs(5), |w| w.last_path == "primary");
    w.until(&tl, Duration::from_secs(10), |w| {
        w.last_state == "primary" && !w.lab.bk0_exists()
    });
    tl.say(&format!("bk0 exists: {}", lab.bk0_exists()));
    w.run_for(&tl, Duration::from_millis(500));
    drop(w);

    let sent = tx.stop();
    std::thread::sleep(Duration::from_millis(200));
    let arrivals = rx.stop();
    let r = report(&sent, &arrivals);
    println!(
        "\nstream: {} sent, {} received, {} lost ({} packets arrived before the withdrawal)",
        r.sent, r.received, r.lost, lost_at
    );
    println!("lost packets are those sent between the withdrawal and the dial-up completing (dial time),");
    println!("plus at most a few around each map update.\n");
    println!("agent log (decisions):");
    for line in lab
        .log()
        .lines()
        .filter(|l| l.contains("INFO") || l.contains("WARN") || l.contains("ERROR"))
    {
        println!("  {line}");
    }
    if keep {
        println!("\n--keep: the lab stays up. Explore with:");
        println!(
            "  {} status --socket {}",
            routebackup_tests::agent_bin().display(),
            lab.socket().display()
        );
        println!(
            "  bpftool map dump pinned {}/routebackup/v1/segments_v4",
            lab.bpffs.path().display()
        );
        println!("  ip netns exec {} ip route", lab.edge.name);
        let names = [&lab.lan, &lab.edge, &lab.primary, &lab.backup, &lab.dest]
            .map(|n| n.name.clone())
            .join(" ");
        println!("When done, tear it down with:");
        println!(
            "  kill {}; for n in {names}; do ip netns del $n; done; umount {}",
            lab.agent_pid().unwrap_or(0),
            lab.bpffs.path().display()
        );
        // Leave the namespaces, the bpffs, the files and the agent in place.
        std::mem::forget(lab);
    }
    Ok(())
}
