//! Forwarded packets per second of 64-byte UDP at saturation, in a veth lab
//! (tests/src/livegen.rs): the kernel's own forwarding, routebackup's
//! programs attached but not steering, XDP and TC steering, and a trivial
//! XDP redirect (the floor of the setup), alternating configurations within
//! one run (this VM's speed changes by up to 2x from one few-second window
//! to the next), then steering on one core against two with a 2-queue veth.
//! Needs root and at least 2 CPUs. `RB_BENCH_QUICK=1`: fewer, shorter windows.
//! `ROUTEBACKUP_LIVEGEN=live|clone` picks the generator (livegen.rs).
//!
//! A ratio means something only where both configurations were saturated:
//! a window in which the edge did not drop at its ingress and its NAPI CPU
//! was not busy measured the generator. Such windows are listed as
//! generator-bound, ratios use only rounds where both windows were
//! saturated, and a ratio with no such round is printed as generator-bound.
//! `cargo xtask bench --only live`

use std::time::Duration;

use anyhow::{bail, Context, Result};
use routebackup::config::AttachMode;
use routebackup::fastpath::{Fastpath, XdpAttach};
use routebackup_tests::livegen::{median, LiveLab, Window, SEGMENT};

const GENERATOR_BOUND: &str = "generator-bound";

/// The generator's CPU and the edge's (its ingress NAPI thread).
const GEN_CPU: usize = 0;
const FWD_CPU: usize = 1;

fn quick() -> bool {
    std::env::var_os("RB_BENCH_QUICK").is_some_and(|v| v != "0")
}

/// (rounds, settle, window).
fn plan() -> (usize, Duration, Duration) {
    if quick() {
        (3, Duration::from_millis(300), Duration::from_millis(1500))
    } else {
        (5, Duration::from_millis(500), Duration::from_secs(3))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Config {
    Kernel,
    /// rb_xdp + rb_tc attached (mode auto: native XDP), the segment's entry
    /// says pass: the agent's state while the group is on its primary.
    AttachedPass,
    /// Attached, no entry matches: traffic to destinations nobody monitors.
    AttachedNoEntry,
    XdpSteer,
    TcSteer,
    Trivial,
}

const CONFIGS: [Config; 6] = [
    Config::Kernel,
    Config::AttachedPass,
    Config::AttachedNoEntry,
    Config::XdpSteer,
    Config::TcSteer,
    Config::Trivial,
];

impl Config {
    fn name(self) -> &'static str {
        match self {
            Config::Kernel => "kernel forwarding, no programs",
            Config::AttachedPass => "attached, not steering (pass entry)",
            Config::AttachedNoEntry => "attached, not steering (no entry)",
            Config::XdpSteer => "XDP steering (rb_xdp, cached MACs)",
            Config::TcSteer => "TC steering (mode tc, rb_tc)",
            Config::Trivial => "trivial XDP redirect (rb_bench_redirect)",
        }
    }

    fn steers(self) -> bool {
        matches!(self, Config::XdpSteer | Config::TcSteer | Config::Trivial)
    }
}

/// routebackup's programs on the ingress, attached as the agent does.
fn open(lab: &mut LiveLab, mode: AttachMode) -> Result<Fastpath> {
    let fp = lab.fastpath(mode)?;
    let a = fp.attachments();
    let want = if mode == AttachMode::Tc {
        XdpAttach::None
    } else {
        XdpAttach::Native
    };
    if a.len() != 1 || a[0].xdp != want || !a[0].tc {
        bail!("unexpected attachment: {a:?}");
    }
    Ok(fp)
}

/// Sets `config` up, measures one window, takes it down.
fn window(lab: &mut LiveLab, config: Config, gen_cpus: &[usize]) -> Result<Window> {
    let (_, settle, len) = plan();
    let mut fp = match config {
        Config::Kernel | Config::Trivial => None,
        Config::AttachedPass | Config::AttachedNoEntry | Config::XdpSteer => {
            Some(open(lab, AttachMode::Auto)?)
        }
        Config::TcSteer => Some(open(lab, AttachMode::Tc)?),
    };
    if let Some(fp) = fp.as_mut() {
        match config {
            Config::AttachedPass => fp.set_segment(SEGMENT.parse()?, LiveLab::pass_value())?,
            Config::XdpSteer | Config::TcSteer => {
                fp.set_segment(SEGMENT.parse()?, lab.steer_value())?;
            }
            _ => {}
        }
    }
    if config == Config::Trivial {
        lab.attach_trivial()?;
    }
    let w = lab.run(gen_cpus, settle, len);
    if let Some(fp) = fp {
        fp.close(false)?;
    }
    lab.detach_trivial()?;
    let w = w?;
    // The traffic went where the configuration sends it, all of it.
    let (right, wrong) = if config.steers() {
        (w.backup_pps, w.primary_pps)
    } else {
        (w.primary_pps, w.backup_pps)
    };
    if right <= 0.0 || wrong > right * 0.001 {
        bail!(
            "{}: {:.0} pps to the primary sink, {:.0} to the backup one",
            config.name(),
            w.primary_pps,
            w.backup_pps
        );
    }
    Ok(w)
}

fn delivered(w: &Window) -> f64 {
    w.primary_pps + w.backup_pps
}

fn mpps(x: f64) -> String {
    format!("{:.2}", x / 1e6)
}

/// A ratio of two configurations over the rounds where both were saturated.
struct Ratio {
    /// Median of the per-round ratios, best(a) / best(b) over saturated
    /// windows, and how many rounds counted; None: no round had both
    /// saturated.
    value: Option<(f64, f64, usize)>,
    rounds: usize,
}

impl Ratio {
    /// `napi_cpu`: see [`Window::saturated`].
    fn of(a: &[Window], b: &[Window], napi_cpu: Option<usize>) -> Ratio {
        let pairs: Vec<(&Window, &Window)> = a
            .iter()
            .zip(b)
            .filter(|(x, y)| x.saturated(napi_cpu) && y.saturated(napi_cpu))
            .collect();
        let best = |v: &[Window]| {
            v.iter()
                .filter(|w| w.saturated(napi_cpu))
                .map(delivered)
                .fold(0.0, f64::max)
        };
        let value = (!pairs.is_empty()).then(|| {
            let per_round: Vec<f64> = pairs
                .iter()
                .map(|(x, y)| delivered(x) / delivered(y).max(1.0))
                .collect();
            (median(&per_round), best(a) / best(b).max(1.0), pairs.len())
        });
        Ratio {
            value,
            rounds: a.len().min(b.len()),
        }
    }

    /// Cells: median (with the rounds used), best / best, verdict.
    fn cells(&self, goal: f64, digits: usize) -> (String, String, &'static str) {
        match self.value {
            None => (GENERATOR_BOUND.to_string(), GENERATOR_BOUND.to_string(), ""),
            Some((med, best, n)) => {
                let used = if n == self.rounds {
                    String::new()
                } else {
                    format!(" ({n} of {} rounds saturated)", self.rounds)
                };
                let v = if goal <= 0.0 {
                    ""
                } else if med >= goal {
                    "met"
                } else {
                    "missed"
                };
                (
                    format!("{med:.digits$}{used}"),
                    format!("{best:.digits$}"),
                    v,
                )
            }
        }
    }
}

fn saturation(w: &Window, napi_cpu: Option<usize>) -> &'static str {
    if w.saturated(napi_cpu) {
        "yes"
    } else {
        GENERATOR_BOUND
    }
}

fn main() -> Result<()> {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    if cpus < 2 {
        bail!("the live-traffic bench needs 2 CPUs (generator and forwarding apart); this machine has {cpus}");
    }
    let (rounds, _, len) = plan();
    let mut lab = LiveLab::new(1).context("build the live-traffic lab")?;
    let generator = lab.generator;
    eprintln!("bench-live: generator {}", generator.describe());
    let mut results: Vec<Vec<Window>> = vec![Vec::new(); CONFIGS.len()];
    let mut rows = Vec::new();
    for round in 1..=rounds {
        for (i, &c) in CONFIGS.iter().enumerate() {
            lab.pin_napi(&[FWD_CPU])?;
            let w = window(&mut lab, c, &[GEN_CPU])?;
            eprintln!(
                "bench-live: round {round} {}: {} Mpps",
                c.name(),
                mpps(delivered(&w))
            );
            rows.push((round, c, w.clone()));
            results[i].push(w);
        }
    }
    drop(lab);

    println!(
        "\n### Live traffic (64-byte UDP frames, generator `{}` on CPU {GEN_CPU}; the edge's \
         forwarding, the threaded NAPI of its ingress veth, pinned to CPU {FWD_CPU}; {rounds} \
         rounds of {:.1} s windows, configurations alternating)\n",
        generator.name(),
        len.as_secs_f64()
    );
    println!("Generator: {}.\n", generator.describe());
    println!("Each window: forwarded = frames counted at the sink (XDP program, per interface); offered = frames the generator transmitted; ingress drops = frames the edge's ingress veth had no room for (rx dropped of the ingress for live frames, tx dropped of g0 for the clone generator's skbs: the edge is the bottleneck); CPU {FWD_CPU} busy from /proc/stat. Saturated: ingress drops ≥ 1 % of offered or CPU {FWD_CPU} busy ≥ 98 %; otherwise the window measured the generator (generator-bound).\n");
    println!("| round | configuration | forwarded Mpps | offered Mpps | ingress drops Mpps | CPU {FWD_CPU} busy | saturated |");
    println!("|---:|---|---:|---:|---:|---:|---|");
    let napi = Some(FWD_CPU);
    for (round, c, w) in &rows {
        println!(
            "| {round} | {} | {} | {} | {} | {:.0} % | {} |",
            c.name(),
            mpps(delivered(w)),
            mpps(w.offered_pps),
            mpps(w.drops_pps),
            100.0 * w.busy.get(FWD_CPU).copied().unwrap_or(0.0),
            saturation(w, napi)
        );
    }
    println!("\n| configuration | median Mpps | best Mpps | saturated windows |");
    println!("|---|---:|---:|---|");
    for (i, c) in CONFIGS.iter().enumerate() {
        let v: Vec<f64> = results[i].iter().map(delivered).collect();
        let sat = results[i].iter().filter(|w| w.saturated(napi)).count();
        let note = if sat == results[i].len() {
            String::new()
        } else {
            format!(" ({GENERATOR_BOUND} in {})", results[i].len() - sat)
        };
        println!(
            "| {} | {} | {} | {sat} of {}{note} |",
            c.name(),
            mpps(median(&v)),
            mpps(v.iter().copied().fold(0.0, f64::max)),
            results[i].len()
        );
    }
    let idx = |c: Config| CONFIGS.iter().position(|&x| x == c).unwrap_or(0);
    let r = |a: Config, b: Config| Ratio::of(&results[idx(a)], &results[idx(b)], napi);
    let goals = [
        (
            "XDP steering / kernel",
            r(Config::XdpSteer, Config::Kernel),
            3.0,
            "≥ 3×",
        ),
        (
            "attached, not steering (pass entry) / kernel",
            r(Config::AttachedPass, Config::Kernel),
            0.95,
            "≥ 95 %",
        ),
        (
            "attached, not steering (no entry) / kernel",
            r(Config::AttachedNoEntry, Config::Kernel),
            0.95,
            "≥ 95 %",
        ),
        (
            "XDP steering / trivial redirect",
            r(Config::XdpSteer, Config::Trivial),
            0.9,
            "≥ 90 %",
        ),
        (
            "TC steering / kernel",
            r(Config::TcSteer, Config::Kernel),
            0.0,
            "-",
        ),
    ];
    println!("\n| ratio | median of per-round ratios | best / best | goal | |");
    println!("|---|---:|---:|---|---|");
    for (name, ratio, goal, goal_text) in goals {
        let (med, best, v) = ratio.cells(goal, 3);
        println!("| {name} | {med} | {best} | {goal_text} | {v} |");
    }

    multi_queue(rounds)
}

/// XDP steering with a 2-queue ingress: one core against two. The
/// generator transmits into the ingress queue of the CPU it runs on, so
/// spreading over both queues takes a generator on each CPU; on a 2-core
/// machine each core then runs one generator and one queue's NAPI thread.
/// "1 core": one generator and the NAPI threads on CPU 0 (CPU 1 idle);
/// "2 cores": the same on each CPU. Both halves share their core alike, so
/// the ratio is how the steering scales with cores.
fn multi_queue(rounds: usize) -> Result<()> {
    let mut lab = LiveLab::new(2).context("build the 2-queue lab")?;
    let mut fp = open(&mut lab, AttachMode::Auto)?;
    fp.set_segment(SEGMENT.parse()?, lab.steer_value())?;
    let (_, settle, len) = plan();
    let napi = lab.napi_threads()?.len();
    if napi != 2 {
        bail!("expected 2 NAPI threads for the 2-queue ingress, found {napi}");
    }
    let mut one = Vec::new();
    let mut two = Vec::new();
    let measured = (|| -> Result<()> {
        for round in 1..=rounds {
            lab.pin_napi(&[0])?;
            let w = lab.run(&[0], settle, len)?;
            eprintln!(
                "bench-live: 2 queues, round {round}, 1 core: {} Mpps",
                mpps(w.backup_pps)
            );
            one.push(w);
            lab.pin_napi(&[0, 1])?;
            let w = lab.run(&[0, 1], settle, len)?;
            eprintln!(
                "bench-live: 2 queues, round {round}, 2 cores: {} Mpps",
                mpps(w.backup_pps)
            );
            two.push(w);
        }
        Ok(())
    })();
    fp.close(false)?;
    measured?;
    if one
        .iter()
        .chain(&two)
        .any(|w| w.primary_pps > w.backup_pps * 0.001)
    {
        bail!("2-queue lab: traffic reached the primary sink while steering");
    }
    println!("\n### Live traffic, 2-queue veth: XDP steering on 1 core and on 2 ({rounds} rounds of {:.1} s windows, alternating)\n", len.as_secs_f64());
    println!("The generator transmits into the ingress queue of the CPU it runs on, so both queues need a generator on each CPU: on this 2-core machine every core runs a generator and a queue's NAPI thread, sharing it. 1 core: one generator and the NAPI threads on CPU 0 (CPU 1 left idle); 2 cores: the same on each CPU, one queue each. Each core is shared alike in both, so the ratio measures how steering scales with cores (per-CPU counters, no shared cache lines), not the edge against a dedicated generator.\n");
    println!("Generator: {}. Every CPU runs a generator, so busy CPUs prove nothing here: a window is saturated only with ingress drops ≥ 1 % of offered.\n", lab.generator.describe());
    println!("| round | cores | forwarded Mpps | offered Mpps | ingress drops Mpps | queue 0 / queue 1 Mpps | CPU 0 busy | CPU 1 busy | saturated |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for (i, (a, b)) in one.iter().zip(&two).enumerate() {
        for (cores, w) in [(1, a), (2, b)] {
            println!(
                "| {} | {cores} | {} | {} | {} | {} / {} | {:.0} % | {:.0} % | {} |",
                i + 1,
                mpps(delivered(w)),
                mpps(w.offered_pps),
                mpps(w.drops_pps),
                mpps(w.queue_pps.first().copied().unwrap_or(0.0)),
                mpps(w.queue_pps.get(1).copied().unwrap_or(0.0)),
                100.0 * w.busy.first().copied().unwrap_or(0.0),
                100.0 * w.busy.get(1).copied().unwrap_or(0.0),
                saturation(w, None)
            );
        }
    }
    let (med, best, v) = Ratio::of(&two, &one, None).cells(1.8, 2);
    let m = |v: &[Window]| median(&v.iter().map(delivered).collect::<Vec<_>>());
    println!(
        "\n| | 1 core median Mpps | 2 cores median Mpps | 2 cores / 1 core (median of per-round ratios) | best / best | goal | |"
    );
    println!("|---|---:|---:|---:|---:|---|---|");
    println!(
        "| XDP steering | {} | {} | {med} | {best} | ≥ 1.8× | {v} |",
        mpps(m(&one)),
        mpps(m(&two)),
    );
    Ok(())
}
