//! A real nginx on a loopback port, with a generated config serving files
//! of 1 KiB, 1 MiB and 100 MiB; stopped and cleaned up when dropped. Used
//! by the interop suite and the HTTP benchmark (needs `apt-get install nginx`).
//! Configured as its users serve static files (Debian's default config has
//! `sendfile on` and `tcp_nopush on`; the latter raised its 1 MiB rate from
//! about 1,800 to 2,900 requests/s here), with keep-alive limits raised.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The files served, by name and size.
pub const FILES: &[(&str, u64)] = &[
    ("1k.bin", 1024),
    ("1m.bin", 1 << 20),
    ("100m.bin", 100 << 20),
];

/// A running nginx.
pub struct Nginx {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its directory (`submit.log` there logs every request to /submit:
    /// method, path, request length with the body, status).
    pub dir: PathBuf,
}

/// The byte at `offset` of every served file.
pub fn file_byte(offset: u64) -> u8 {
    b'a' + (offset % 26) as u8
}

impl Nginx {
    /// Starts nginx with one worker, pinned to `cpu` if given; `None` when
    /// nginx is not installed.
    pub fn start(cpu: Option<usize>) -> Option<Nginx> {
        Command::new("nginx").arg("-v").output().ok()?;
        // One directory per instance: tests in one binary run in parallel.
        static INSTANCES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ringcore-nginx-{}-{}-{}",
            std::process::id(),
            cpu.map_or(9, |c| c),
            INSTANCES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let www = dir.join("www");
        std::fs::create_dir_all(&www).expect("nginx dir");
        // WebDAV PUTs land here, written by nginx's unprivileged worker.
        let upload = www.join("upload");
        std::fs::create_dir_all(&upload).expect("upload dir");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&upload, std::fs::Permissions::from_mode(0o777))
            .expect("open the upload dir to nginx's worker");
        for (name, size) in FILES {
            let data: Vec<u8> = (0..*size).map(file_byte).collect();
            std::fs::write(www.join(name), data).expect("write a served file");
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let d = dir.display();
        let config = format!(
            "daemon off;\nmaster_process on;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  keepalive_requests 10000000;\n\
             client_body_temp_path {d}/tmp_body;\n  proxy_temp_path {d}/tmp_proxy;\n  fastcgi_temp_path {d}/tmp_fcgi;\n\
             uwsgi_temp_path {d}/tmp_uwsgi;\n  scgi_temp_path {d}/tmp_scgi;\n\
             log_format lengths '$request_method $uri $request_length $status';\n\
             server {{ listen 127.0.0.1:{port}; root {d}/www;\n\
               location = /submit {{ access_log {d}/submit.log lengths; return 200 \"accepted\\n\"; }}\n\
               location /upload/ {{ dav_methods PUT; create_full_put_path on; client_max_body_size 1m; }}\n\
             }}\n}}\n"
        );
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, config).expect("write nginx.conf");
        let mut command = match cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.args(["-c", &cpu.to_string(), "nginx"]);
                c
            }
            None => Command::new("nginx"),
        };
        let child = command
            .args(["-c", &conf.to_string_lossy(), "-p", &dir.to_string_lossy()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .ok()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().ok()?;
        let nginx = Nginx { child, dir, addr };
        // Wait until it accepts connections (bounded).
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx did not start; see {}/error.log",
                nginx.dir.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(nginx)
    }

    /// The URL of a served file.
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{name}", self.addr)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SAFETY: signals our own child (the nginx master): a quick shutdown.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
