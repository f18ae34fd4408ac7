//! A real `redis-server` (Debian's) on a free loopback port with its data in
//! a temporary directory, stopped by PID; and a client to look inside it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::web::{free_port, wait_for_port};
use super::{temp_dir, wait_until, Server, STARTUP};

const REDIS_SERVER: &str = "/usr/bin/redis-server";

pub struct Redis {
    pub port: u16,
    dir: tempfile::TempDir,
    server: Option<Server>,
    /// With TLS only: the CA that signed its certificate (for 127.0.0.1).
    pub ca: Option<PathBuf>,
}

impl Redis {
    /// Starts a Redis that keeps its data across a restart (append-only file).
    pub fn start() -> Redis {
        assert!(
            Path::new(REDIS_SERVER).exists(),
            "redis-server is needed: scripts/test installs Debian's redis-server"
        );
        let mut redis = Redis { port: free_port(), dir: temp_dir(), server: None, ca: None };
        redis.restart();
        redis
    }

    /// A Redis that speaks only TLS, with a certificate for 127.0.0.1 from a
    /// CA made for the test with `openssl` (see [`Redis::ca`]).
    pub fn start_tls() -> Redis {
        let dir = temp_dir();
        let d = dir.path();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl").args(args).current_dir(d).output().expect("openssl");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        openssl(
            &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem"]
                .into_iter()
                .chain(["-days", "2", "-subj", "/CN=webauth test CA"])
                .collect::<Vec<_>>(),
        );
        openssl(
            &["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "redis.key", "-out", "redis.csr"]
                .into_iter()
                .chain(["-subj", "/CN=127.0.0.1"])
                .collect::<Vec<_>>(),
        );
        std::fs::write(d.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").expect("write san.ext");
        openssl(
            &["x509", "-req", "-in", "redis.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"]
                .into_iter()
                .chain(["-out", "redis.pem", "-days", "2", "-extfile", "san.ext"])
                .collect::<Vec<_>>(),
        );
        let ca = d.join("ca.pem");
        let mut redis = Redis { port: free_port(), dir, server: None, ca: Some(ca) };
        redis.restart();
        redis
    }

    /// `redis://127.0.0.1:PORT/0` (`rediss://` with TLS), for `WEBAUTH_STORE`.
    pub fn url(&self) -> String {
        let scheme = if self.ca.is_some() { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Starts the server (again) on the same port and data.
    pub fn restart(&mut self) {
        assert!(self.server.is_none(), "stop Redis before starting it again");
        let mut command = Command::new(REDIS_SERVER);
        let port = self.port.to_string();
        if self.ca.is_some() {
            let d = self.dir.path();
            command
                .args(["--port", "0", "--tls-port", &port, "--tls-auth-clients", "no"])
                .arg("--tls-cert-file")
                .arg(d.join("redis.pem"))
                .arg("--tls-key-file")
                .arg(d.join("redis.key"))
                .arg("--tls-ca-cert-file")
                .arg(d.join("ca.pem"));
        } else {
            command.args(["--port", &port]);
        }
        command
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--daemonize", "no", "--protected-mode", "yes"])
            .stdout(Stdio::null());
        let server = Server::spawn("redis-server", command, &self.dir.path().join("redis.stderr"));
        self.server = Some(server);
        wait_for_port("redis-server", self.port);
        if self.ca.is_some() {
            return;
        }
        // Listening precedes loading the append-only file: wait for PING.
        wait_until("redis-server answers PING", STARTUP, || {
            self.client().get_connection().ok().and_then(|mut c| redis::cmd("PING").query::<String>(&mut c).ok())
        });
    }

    /// Stops the server (SIGTERM, waited for).
    pub fn stop(&mut self) {
        drop(self.server.take());
    }

    pub fn pid(&self) -> u32 {
        self.server.as_ref().expect("Redis runs").pid()
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("a Redis URL")
    }

    /// Every key under `webauth:`.
    pub fn keys(&self) -> Vec<String> {
        let mut c = self.client().get_connection().expect("connect to Redis");
        let mut keys: Vec<String> = redis::cmd("KEYS").arg("webauth:*").query(&mut c).expect("KEYS");
        keys.sort();
        keys
    }

    /// The seconds a key has to live (-2: gone, -1: no expiry).
    pub fn ttl(&self, key: &str) -> i64 {
        let mut c = self.client().get_connection().expect("connect to Redis");
        redis::cmd("TTL").arg(key).query(&mut c).expect("TTL")
    }

    /// Everything Redis holds under `key`, as it would be dumped.
    pub fn hash(&self, key: &str) -> Vec<(String, String)> {
        let mut c = self.client().get_connection().expect("connect to Redis");
        redis::cmd("HGETALL").arg(key).query(&mut c).expect("HGETALL")
    }

    /// Every string Redis holds under `key`, whatever its type: fields and
    /// values of a hash, members of a set or a sorted set, a plain value.
    pub fn contents(&self, key: &str) -> Vec<String> {
        let mut c = self.client().get_connection().expect("connect to Redis");
        let kind: String = redis::cmd("TYPE").arg(key).query(&mut c).expect("TYPE");
        match kind.as_str() {
            "hash" => redis::cmd("HGETALL").arg(key).query(&mut c).expect("HGETALL"),
            "zset" => redis::cmd("ZRANGE").arg(key).arg(0).arg(-1).arg("WITHSCORES").query(&mut c).expect("ZRANGE"),
            "set" => redis::cmd("SMEMBERS").arg(key).query(&mut c).expect("SMEMBERS"),
            "string" => vec![redis::cmd("GET").arg(key).query(&mut c).expect("GET")],
            "none" => Vec::new(),
            other => panic!("{key}: a {other}, which webauth does not write"),
        }
    }
}
