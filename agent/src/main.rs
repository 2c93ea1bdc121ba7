//! The `routebackup` command line: `run`, `check`, `status`.
fn main() -> std::process::ExitCode {
    eprintln!("routebackup: not implemented yet");
    std::process::ExitCode::FAILURE
}
