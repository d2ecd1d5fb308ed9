//! TLS for real: a certificate authority made at test time with the `openssl` command,
//! and stunnel (Debian's stunnel4) terminating TLS in front of a private broker.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::kafka::{PrivateBroker, free_address};

/// A certificate authority, a server certificate it signed for `localhost` and
/// `127.0.0.1`, and a second authority that signed nothing (a wrong CA). Deleted on drop.
#[derive(Debug)]
pub struct Pki {
    dir: PathBuf,
    /// The CA that signed the server's certificate.
    pub ca: PathBuf,
    /// A CA that did not.
    pub wrong_ca: PathBuf,
    /// The server's certificate.
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
}

impl Pki {
    /// Makes the keys and certificates (about a second).
    pub fn make() -> Self {
        let dir =
            std::env::temp_dir().join(format!("outbox-pki-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).expect("pki dir");
        let pki = Pki {
            ca: dir.join("ca.pem"),
            wrong_ca: dir.join("wrong-ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
            dir,
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        for (name, cn) in [("ca", "outbox test CA"), ("wrong-ca", "outbox wrong CA")] {
            openssl(
                &pki.dir,
                &["req", "-x509"],
                &ec,
                &[
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.pem"),
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN={cn}"),
                ],
            );
        }
        openssl(
            &pki.dir,
            &["req"],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        );
        std::fs::write(
            pki.dir.join("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .expect("server.ext");
        openssl(
            &pki.dir,
            &["x509", "-req"],
            &[],
            &[
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "server.ext",
            ],
        );
        pki
    }
}

fn openssl(dir: &Path, command: &[&str], key: &[&str], args: &[&str]) {
    let output = Command::new("openssl")
        .current_dir(dir)
        .args(command)
        .args(key)
        .args(args)
        .output()
        .expect("run openssl (scripts/deps.sh installs it)");
    assert!(
        output.status.success(),
        "openssl {command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// stunnel accepting TLS on `address` with the [`Pki`]'s server certificate and
/// forwarding the plaintext to an upstream address. Killed on drop.
#[derive(Debug)]
pub struct TlsListener {
    child: Child,
    /// `host:port` that speaks TLS.
    pub address: String,
    log: PathBuf,
}

impl TlsListener {
    /// Starts stunnel on `address`, forwarding to `upstream`, and waits until it listens.
    pub async fn start(address: String, upstream: &str, pki: &Pki) -> Self {
        let name = address.replace([':', '.'], "-");
        let config = pki.dir.join(format!("stunnel-{name}.conf"));
        let log = pki.dir.join(format!("stunnel-{name}.log"));
        std::fs::write(
            &config,
            format!(
                "foreground = yes\npid =\noutput = {}\ndebug = notice\n\n[kafka]\naccept = {address}\n\
                 connect = {upstream}\ncert = {}\nkey = {}\n",
                log.display(),
                pki.cert.display(),
                pki.key.display()
            ),
        )
        .expect("stunnel config");
        let binary = ["stunnel4", "stunnel"]
            .into_iter()
            .find(|binary| {
                Command::new(binary)
                    .arg("-version")
                    .stderr(Stdio::null())
                    .stdout(Stdio::null())
                    .status()
                    .is_ok()
            })
            .expect("stunnel is not installed: run scripts/deps.sh (scripts/test.sh does)");
        let mut child = Command::new(binary)
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start stunnel");
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(&address).await.is_ok() {
                return TlsListener {
                    child,
                    address,
                    log,
                };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "stunnel exited at start ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("stunnel did not listen on {address} within 5 s");
    }

    /// What stunnel logged (handshake failures among it).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private broker that clients reach through TLS only: it advertises the TLS
/// listener's address, so every connection a client makes after bootstrapping goes
/// through stunnel too. With `authentication`, the broker requires SASL.
pub async fn broker_behind_tls(pki: &Pki, authentication: bool) -> (PrivateBroker, TlsListener) {
    let plain = free_address();
    let tls = free_address();
    let listener = TlsListener::start(tls.clone(), &plain, pki).await;
    let extra: &[&str] = if authentication {
        &["--authentication"]
    } else {
        &[]
    };
    let broker = PrivateBroker::start_with(plain, &tls, extra).await;
    (broker, listener)
}

/// TLS client settings for `brokers`: verify the broker's certificate against `ca`
/// (and its name: librdkafka checks the host name by default).
pub fn tls_client(brokers: &str, ca: &Path) -> rdkafka::ClientConfig {
    let mut config = crate::kafka::client_config(brokers);
    config
        .set("security.protocol", "ssl")
        .set("ssl.ca.location", ca.display().to_string());
    config
}
