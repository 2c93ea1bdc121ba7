//! `BPF_PROG_TEST_RUN` of the loaded programs: tests and the bench measure
//! the very programs the agent attaches, with the maps it writes.

use std::time::Duration;

use aya::programs::{SchedClassifier, TestRun, TestRunOptions, Xdp};
use aya::Ebpf;
use routebackup_common::{PROG_FLOOR, PROG_TC, PROG_XDP};

use super::{program, program_mut, FastpathError, Result};

/// Result of one `BPF_PROG_TEST_RUN`.
#[derive(Clone, Debug)]
pub struct TestRunOutput {
    /// The program's return value (XDP action or TC verdict).
    pub verdict: u32,
    /// The frame as the program left it.
    pub data: Vec<u8>,
    /// Average run time per repetition as reported by the kernel.
    pub duration: Duration,
    /// XDP only: the program left the "already counted" marker in the
    /// metadata area (removed from `data`).
    pub meta_counted: bool,
}

/// Bytes of the metadata marker `rb_xdp` writes (u32 0x52425031, native order).
const META_COUNTED: [u8; 4] = routebackup_common::META_COUNTED.to_ne_bytes();

/// Runs `rb_xdp` on `frame`.
pub(super) fn xdp(ebpf: &Ebpf, frame: &[u8], repeat: u32) -> Result<TestRunOutput> {
    let xdp: &Xdp = program(ebpf, PROG_XDP)?;
    let mut out = run(xdp, PROG_XDP, frame, repeat)?;
    // The kernel returns the frame from the start of the metadata area.
    if out.data.len() == frame.len() + META_COUNTED.len() && out.data.starts_with(&META_COUNTED) {
        out.data.drain(..META_COUNTED.len());
        out.meta_counted = true;
    }
    Ok(out)
}

/// Runs the trivial `rb_floor` (XDP_PASS), loading it on first use.
pub(super) fn floor(ebpf: &mut Ebpf, frame: &[u8], repeat: u32) -> Result<TestRunOutput> {
    let floor: &mut Xdp = program_mut(ebpf, PROG_FLOOR)?;
    if floor.fd().is_err() {
        floor.load().map_err(|source| FastpathError::Verifier {
            program: PROG_FLOOR,
            source,
        })?;
    }
    run(&*floor, PROG_FLOOR, frame, repeat)
}

/// Runs `rb_tc` on `frame`.
pub(super) fn tc(ebpf: &Ebpf, frame: &[u8], repeat: u32) -> Result<TestRunOutput> {
    let tc: &SchedClassifier = program(ebpf, PROG_TC)?;
    run(tc, PROG_TC, frame, repeat)
}

fn run<P>(prog: &P, name: &'static str, frame: &[u8], repeat: u32) -> Result<TestRunOutput>
where
    for<'b> P: TestRun<Opts<'b> = TestRunOptions<'b>, Result = aya::programs::TestRunResult>,
{
    // Room for a frame that grows (it never does today) plus headroom.
    let mut out = vec![0u8; frame.len() + 256];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.data_out = Some(&mut out);
    opts.repeat = repeat;
    let r = prog
        .test_run(opts)
        .map_err(|source| FastpathError::TestRun {
            program: name,
            source,
        })?;
    let len = (r.data_size_out as usize).min(out.len());
    out.truncate(len);
    Ok(TestRunOutput {
        verdict: r.return_value,
        data: out,
        duration: r.duration,
        meta_counted: false,
    })
}
