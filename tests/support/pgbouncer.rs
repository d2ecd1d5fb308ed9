//! PgBouncer (Debian's `pgbouncer`) in transaction mode in front of the test
//! PostgreSQL, for the tests of what the relay does behind a pooler.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::Duration;

use sea_orm::sqlx::postgres::PgConnectOptions;

use crate::kafka::free_address;

/// A PgBouncer of the test's own, pooling in transaction mode. Killed on drop.
#[derive(Debug)]
pub struct Pooler {
    child: Child,
    dir: PathBuf,
    /// The URL of the pooled database (the upstream's database and user).
    pub url: String,
}

impl Pooler {
    /// Starts PgBouncer on a free port in front of the PostgreSQL of `upstream` (a
    /// `postgres://` URL whose server trusts local connections), and waits until it
    /// listens.
    pub async fn transaction_mode(upstream: &str) -> Self {
        let upstream = PgConnectOptions::from_str(upstream).expect("a PostgreSQL URL");
        let address = free_address();
        let (host, port) = address.split_once(':').expect("host:port");
        let dir = std::env::temp_dir().join(format!("outbox-pgbouncer-{port}"));
        std::fs::create_dir_all(&dir).expect("pgbouncer directory");
        let user = upstream.get_username();
        let database = upstream.get_database().unwrap_or(user);
        let log = dir.join("pgbouncer.log");
        std::fs::write(dir.join("users.txt"), format!("\"{user}\" \"\"\n")).expect("users");
        std::fs::write(
            dir.join("pgbouncer.ini"),
            format!(
                "[databases]\n* = host={} port={}\n\n[pgbouncer]\nlisten_addr = {host}\n\
                 listen_port = {port}\nauth_type = trust\nauth_file = {}\npool_mode = transaction\n\
                 unix_socket_dir =\nlogfile = {}\nignore_startup_parameters = extra_float_digits,options\n",
                upstream.get_host(),
                upstream.get_port(),
                dir.join("users.txt").display(),
                log.display(),
            ),
        )
        .expect("pgbouncer.ini");
        // PgBouncer refuses to run as root: as root, it runs as `nobody`, which reads
        // the files above and writes its log in `dir`.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
                .expect("pgbouncer directory mode");
        }
        let mut command = Command::new("pgbouncer");
        if is_root() {
            command.args(["-u", "nobody"]);
        }
        let mut child = command
            .arg(dir.join("pgbouncer.ini"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pgbouncer is not installed: run scripts/deps.sh (scripts/test.sh does)");
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(&address).await.is_ok() {
                let url = format!("postgres://{user}@{address}/{database}");
                return Pooler { child, dir, url };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "pgbouncer exited at start ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("pgbouncer did not listen on {address} within 5 s");
    }
}

impl Drop for Pooler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.starts_with(b"0\n"))
}
