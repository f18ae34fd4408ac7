//! CGI under nginx: deploy/nginx/fcgiwrap.conf through Debian's nginx and
//! fcgiwrap on 127.0.0.1, at /members/ and at /, with the whole login flow.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};

use support::web::{self, Processes};
use support::{wait_until, Server, STARTUP};

fn log(dir: &Path) -> impl Fn() -> String + '_ {
    move || {
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        format!("--- error.log\n{}--- fcgiwrap.stderr\n{}", read("error.log"), read("fcgiwrap.stderr"))
    }
}

#[test]
fn nginx_and_fcgiwrap_run_the_programs_as_cgi() {
    assert!(Path::new(web::FCGIWRAP).exists(), "fcgiwrap is needed: scripts/test installs Debian's fcgiwrap");
    for mount in ["/members/", "/"] {
        let dir = tempfile::Builder::new().prefix("webauth-fcgiwrap-").tempdir().expect("temp dir");
        let d = dir.path();
        let lib = Path::new(support::bin("index")).parent().expect("the programs' folder");
        let users = web::users_file(d);
        let socket = d.join("fcgiwrap.sock");
        let mut procs = Processes::new();
        let mut command = Command::new(web::FCGIWRAP);
        command.arg("-c").arg("2").arg("-s").arg(format!("unix:{}", socket.display())).stdout(Stdio::null());
        procs.push(Server::spawn("fcgiwrap", command, &d.join("fcgiwrap.stderr")));
        wait_until("fcgiwrap", STARTUP, || socket.exists().then_some(()));
        let port = web::free_port();
        let recipe = web::recipe("nginx/fcgiwrap.conf");
        let recipe = web::fill(&recipe, "listen 80;", &format!("listen 127.0.0.1:{port};"));
        let recipe = web::fill(&recipe, "/usr/local/lib/webauth/", &format!("{}/", lib.display()));
        let recipe = web::fill(&recipe, "/etc/webauth/users.json", &users.display().to_string());
        let recipe = web::fill(&recipe, "/var/lib/webauth/sessions.db", &d.join("sessions.db").display().to_string());
        let recipe = web::fill(&recipe, "unix:/run/fcgiwrap.socket", &format!("unix:{}", socket.display()));
        let recipe = web::fill(&recipe, "/members/", mount);
        web::start_nginx(&mut procs, d, port, &web::nginx_conf(d, &recipe));
        web::login_flow(port, mount, &log(d));
    }
}
