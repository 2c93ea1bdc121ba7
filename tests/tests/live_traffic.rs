//! The live-traffic bench's lab and generator, briefly (tests/src/livegen.rs):
//! the generated frames really are forwarded by the edge's kernel route to
//! the primary sink, and with rb_xdp steering they reach the backup sink
//! and not the primary. Counts at the sinks, not rates. Every generator
//! the host can run: `clone` always, `live` where the kernel allows live
//! frames; `ROUTEBACKUP_LIVEGEN` narrows it to one.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use routebackup::config::AttachMode;
use routebackup::fastpath::XdpAttach;
use routebackup_tests::livegen::{Generator, LiveLab, Sample, SEGMENT};

/// Frames each phase must deliver at least: far below what the generator
/// sends in half a second even on a loaded machine (hundreds of thousands).
const AT_LEAST: u64 = 10_000;

fn delta(a: &Sample, b: &Sample) -> (u64, u64, u64) {
    (
        b.primary - a.primary,
        b.backup - a.backup,
        b.offered - a.offered,
    )
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn live_generator_follows_the_kernel_route_then_xdp_steering() -> Result<()> {
    let generators = if std::env::var_os("ROUTEBACKUP_LIVEGEN").is_some() {
        vec![Generator::choose()?]
    } else if Generator::for_host() == Generator::Live {
        vec![Generator::Live, Generator::Clone]
    } else {
        vec![Generator::Clone]
    };
    for g in generators {
        eprintln!("live_traffic: generator {}", g.describe());
        follows(g).with_context(|| format!("generator {}", g.name()))?;
    }
    Ok(())
}

fn follows(generator: Generator) -> Result<()> {
    let mut lab = LiveLab::with_generator(1, generator)?;
    let settle = Duration::from_millis(50);
    let window = Duration::from_millis(400);

    // Kernel route: everything delivered arrives at the primary sink.
    let a = lab.sample()?;
    lab.run(&[0], settle, window)?;
    let b = lab.sample()?;
    let (primary, backup, offered) = delta(&a, &b);
    ensure!(
        primary >= AT_LEAST && backup == 0,
        "kernel route: {primary} frames at the primary sink, {backup} at the backup one \
         ({offered} offered)"
    );
    ensure!(
        primary <= offered,
        "more delivered ({primary}) than offered ({offered})"
    );
    // The bench's proof of saturation is the ingress drops: for the clone
    // generator they must be exactly the frames the veth refused it.
    if generator == Generator::Clone {
        let (drops, refused) = (b.ingress_drops - a.ingress_drops, b.refused - a.refused);
        ensure!(
            drops == refused,
            "ingress drops {drops} but rb_bench_amp saw {refused} frames refused"
        );
    }

    // rb_xdp steering the segment to the backup, as the agent attaches it.
    let mut fp = lab.fastpath(AttachMode::Auto)?;
    ensure!(
        fp.attachments().first().map(|a| a.xdp) == Some(XdpAttach::Native),
        "rb_xdp is not attached natively: {:?}",
        fp.attachments()
    );
    fp.set_segment(SEGMENT.parse()?, lab.steer_value())?;
    let a = lab.sample()?;
    let run = lab.run(&[0], settle, window);
    let b = lab.sample()?;
    let stats = fp.group_stats(1)?;
    fp.close(false)?;
    run?;
    let (primary, backup, offered) = delta(&a, &b);
    ensure!(
        backup >= AT_LEAST && primary == 0,
        "XDP steering: {backup} frames at the backup sink, {primary} at the primary one \
         ({offered} offered)"
    );
    ensure!(
        stats.steered_packets >= backup && stats.passed_packets == 0,
        "rb_xdp's counters do not match the deliveries ({backup}): {stats:?}"
    );
    Ok(())
}
