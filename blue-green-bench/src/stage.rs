//! The stage both phases play on: the demo-app image and an nginx on loopback whose upstream
//! block lives in a file of its own (the router's file, or the baseline's two-server block).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("could not find a free port on 127.0.0.1: {e}"))
}

/// An nginx master on loopback, stopped on drop.
pub struct Nginx {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Nginx {
    /// Starts nginx in `dir`, listening on a free loopback port and proxying everything to the
    /// upstream `upstream`, which `upstream_conf` (written to `upstream.conf`) must define.
    pub fn start(dir: &Path, upstream: &str, upstream_conf: &str) -> Result<Nginx, String> {
        let port = free_port()?;
        std::fs::create_dir_all(dir.join("tmp"))
            .map_err(|e| format!("could not create {}: {e}", dir.display()))?;
        std::fs::write(dir.join("upstream.conf"), upstream_conf)
            .map_err(|e| format!("could not write the upstream file: {e}"))?;
        let d = dir.display();
        let conf = format!(
            "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/tmp/body;\n  proxy_temp_path {d}/tmp/proxy;\n  fastcgi_temp_path {d}/tmp/fastcgi;\n  uwsgi_temp_path {d}/tmp/uwsgi;\n  scgi_temp_path {d}/tmp/scgi;\n\
               include {d}/upstream.conf;\n\
               server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://{upstream};\n      proxy_set_header Host $host;\n    }}\n  }}\n}}\n"
        );
        std::fs::write(dir.join("nginx.conf"), conf)
            .map_err(|e| format!("could not write nginx.conf: {e}"))?;
        let mut nginx = Nginx {
            dir: dir.to_path_buf(),
            port,
            child: None,
        };
        let child = Command::new("/usr/sbin/nginx")
            .args(nginx.base_args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                format!("could not start /usr/sbin/nginx (apt-get install nginx-light): {e}")
            })?;
        nginx.child = Some(child);
        let until = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > until {
                return Err(format!(
                    "nginx did not listen on 127.0.0.1:{port} within 10 s; see {}/error.log",
                    nginx.dir.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(nginx)
    }

    fn base_args(&self) -> Vec<String> {
        vec![
            "-p".into(),
            self.dir.display().to_string(),
            "-c".into(),
            self.dir.join("nginx.conf").display().to_string(),
            "-e".into(),
            self.dir.join("error.log").display().to_string(),
        ]
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The file with the upstream block.
    pub fn upstream_file(&self) -> PathBuf {
        self.dir.join("upstream.conf")
    }

    /// argv of `nginx -t` for this nginx.
    pub fn test_command(&self) -> Vec<String> {
        let mut v = vec!["/usr/sbin/nginx".to_string()];
        v.extend(self.base_args());
        v.push("-t".into());
        v
    }

    /// argv of `nginx -s reload` for this nginx.
    pub fn reload_command(&self) -> Vec<String> {
        let mut v = vec!["/usr/sbin/nginx".to_string()];
        v.extend(self.base_args());
        v.extend(["-s".to_string(), "reload".to_string()]);
        v
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGQUIT: graceful shutdown of master and workers; then make sure.
            // SAFETY: plain syscall on our own child's pid (not yet reaped).
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGQUIT) };
            let until = Instant::now() + Duration::from_secs(5);
            while Instant::now() < until {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
