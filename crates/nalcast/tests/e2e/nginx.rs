//! A real nginx run as the tests' child (the reverse proxy of behind_proxy.rs, the
//! RTMP server of publish.rs), each with a config of its own in a temp dir.
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Debian's nginx.
pub const NGINX: &str = "/usr/sbin/nginx";

/// A free loopback port for nginx to listen on.
pub fn free_addr() -> SocketAddr {
    let probe = TcpListener::bind("127.0.0.1:0").expect("free port");
    probe.local_addr().expect("addr")
}

/// The settings every test nginx runs with: in the foreground, one process, its pid
/// file and error log in `dir`.
pub fn process_settings(dir: &Path) -> String {
    format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\n\
         pid {dir}/nginx.pid;\nerror_log {dir}/error.log info;\n",
        dir = dir.display()
    )
}

/// nginx as our child; stopped (and reaped) when dropped.
pub struct Nginx {
    child: Child,
    dir: PathBuf,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Nginx {
    /// Runs nginx in `dir` with `config` (written to `dir/nginx.conf`) and waits
    /// until it accepts on `addr`.
    pub async fn run(dir: &Path, addr: SocketAddr, config: &str) -> Nginx {
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, config).expect("nginx.conf");
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts");
        let mut nginx = Nginx {
            child,
            dir: dir.to_owned(),
            addr,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                panic!("nginx exited ({status}): {}", nginx.log());
            }
            assert!(Instant::now() < deadline, "nginx does not listen on {addr}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        nginx
    }

    /// Its error log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    /// Its process id (to pause it with SIGSTOP).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The directory it runs in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops it and waits for it to exit.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}
