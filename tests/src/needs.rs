//! Tests that need a kernel feature ask here, and are skipped on a kernel
//! without it (the kernel matrix boots 5.10 to 6.12), with the feature named.
//! The answer is the agent's own probe (`routebackup kernel --json`), so a
//! test is skipped exactly where the agent itself would do without the
//! feature; a test never guesses from a version number.
//!
//! A skip is a passed test to libtest (it has no run-time skip), so each one
//! is also appended to `$ROUTEBACKUP_SKIP_LOG` (`test<TAB>why`), which
//! `cargo xtask test` and `vmtest` count and print.

use std::io::Write as _;
use std::sync::OnceLock;

use crate::agent_bin;

/// (feature, state) as the probe answered, once per test binary.
fn probed() -> &'static Vec<(String, String)> {
    static PROBED: OnceLock<Vec<(String, String)>> = OnceLock::new();
    PROBED.get_or_init(|| {
        let out = std::process::Command::new(agent_bin())
            .args(["kernel", "--json"])
            .output()
            .expect("cannot run `routebackup kernel --json`");
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "`routebackup kernel --json` printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        doc["capabilities"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                (
                    c["feature"].as_str().unwrap_or_default().to_string(),
                    c["state"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    })
}

/// Which of `features` this kernel lacks (probed "no").
///
/// # Panics
/// On a name the probe does not know (a mistake in the test, not a missing
/// feature), and when the agent cannot say what the kernel offers.
pub fn lacking(features: &[&str]) -> Vec<String> {
    let probed = probed();
    features
        .iter()
        .filter(|f| {
            let state = probed
                .iter()
                .find(|(name, _)| name == *f)
                .unwrap_or_else(|| panic!("the probe knows no feature {f:?}"));
            state.1 == "no"
        })
        .map(ToString::to_string)
        .collect()
}

/// True when `test` must be skipped because the kernel lacks one of
/// `features`; says so on stderr and in `$ROUTEBACKUP_SKIP_LOG`.
pub fn skip_without(test: &str, features: &[&str]) -> bool {
    let missing = lacking(features);
    if missing.is_empty() {
        return false;
    }
    skipped(test, &format!("the kernel lacks {}", missing.join(", ")));
    true
}

/// Records that `test` (or a part of it, named so) was skipped, and why.
pub fn skipped(test: &str, why: &str) {
    eprintln!("SKIPPED {test}: {why}");
    if let Some(path) = std::env::var_os("ROUTEBACKUP_SKIP_LOG") {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{test}\t{why}");
        }
    }
}
