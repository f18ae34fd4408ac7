//! The `logout` program: CGI or FastCGI, see `webauth::run`.

fn main() -> std::process::ExitCode {
    webauth::run(webauth::routes::logout)
}
