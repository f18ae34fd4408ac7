//! The `webauth` admin command (users, sessions, the demo); see `webauth::admin`.

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    webauth::admin::main(&args)
}
