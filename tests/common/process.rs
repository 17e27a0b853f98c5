//! The gateway binary as a user runs it (`image-gateway serve`), in a process of its own.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_image-gateway");

/// The project whose member the tests of the binary call its embedded store as.
pub const PROJECT: &str = "0123456789abcdef";

/// `request` with the identity headers of a member of [`PROJECT`].
pub fn as_member(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    request.header("x-project-id", PROJECT).header("x-roles", "member,reader")
}

/// A running `image-gateway serve`, killed when dropped.
pub struct Process {
    pub child: std::process::Child,
    pub base: String,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Process {
    pub fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Process {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut child = Command::new(BIN)
            .arg("serve")
            .args(args)
            .current_dir(dir)
            .env("IMAGE_GATEWAY_LISTEN", format!("127.0.0.1:{port}"))
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening") {
                    let _ = tx.send(());
                }
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let started = rx.recv_timeout(Duration::from_secs(20)).is_ok();
        let served = Process { child, base: format!("http://127.0.0.1:{port}"), log };
        assert!(started, "gateway did not start: {}", served.log());
        served
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The log as soon as `ready` holds for it, or after 5 s.
    pub fn log_once(&self, ready: impl Fn(&str) -> bool) -> String {
        for _ in 0..100 {
            let log = self.log();
            if ready(&log) {
                return log;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.log()
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
