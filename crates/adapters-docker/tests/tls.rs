//! A Docker engine over `tcp://` with TLS, configured the way the docker CLI is: the CA, the
//! client certificate and its key from one directory (`ca.pem`, `cert.pem`, `key.pem`).
//!
//! The test starts a second dockerd of its own, listening on loopback port 23760 with
//! `--tlsverify` and certificates made by `openssl` at test time, its state in a temporary
//! directory (no bridge, no iptables), and stops it at the end, also when the test fails.
//! Without dockerd (or root) it says it skipped; with `SANDKEEPER_REQUIRE_DOCKER=1` it fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sandkeeper_adapters_docker::{DockerConfig, DockerRuntime};
use sandkeeper_ports::{Report, RuntimeError, SandboxRuntime};

const HOST: &str = "tcp://127.0.0.1:23760";

/// A dockerd of the test's own, killed and its directory removed when dropped.
struct TlsEngine {
    dir: PathBuf,
    dockerd: Child,
}

impl TlsEngine {
    /// `None` (after saying why) when no second engine can be started here, unless required.
    fn start(test: &str) -> Option<Self> {
        let found = |probe: &str| {
            Command::new("sh").args(["-c", probe]).output().is_ok_and(|out| out.status.success())
        };
        let missing = if !found("command -v dockerd") {
            Some("dockerd is not installed")
        } else if !found("command -v openssl") {
            Some("the openssl command is not installed")
        } else if !found("[ \"$(id -u)\" = 0 ]") {
            Some("starting a dockerd needs root")
        } else {
            None
        };
        if let Some(why) = missing {
            assert!(
                !std::env::var("SANDKEEPER_REQUIRE_DOCKER").is_ok_and(|value| value == "1"),
                "{test}: SANDKEEPER_REQUIRE_DOCKER=1 but {why}"
            );
            eprintln!("skipped {test}: {why}");
            return None;
        }
        let dir = std::env::temp_dir().join(format!("sandkeeper-tls-{}", uuid::Uuid::new_v4()));
        for sub in ["certs/engine", "certs/client", "certs/stranger", "certs/wrong-ca", "data"] {
            std::fs::create_dir_all(dir.join(sub)).expect("the engine's directories");
        }
        make_certs(&dir.join("certs"));
        std::fs::write(dir.join("daemon.json"), "{}").expect("an empty daemon.json");
        let certs = dir.join("certs/engine");
        let log = std::fs::File::create(dir.join("dockerd.log")).expect("dockerd.log");
        let mut dockerd = Command::new("dockerd");
        let files = [
            // Its own (empty) configuration file: the host's may set a data root of its own.
            ("--config-file", dir.join("daemon.json")),
            ("--tlscacert", certs.join("ca.pem")),
            ("--tlscert", certs.join("cert.pem")),
            ("--tlskey", certs.join("key.pem")),
            ("--data-root", dir.join("data")),
            ("--exec-root", dir.join("exec")),
            ("--pidfile", dir.join("docker.pid")),
        ];
        for (flag, path) in files {
            dockerd.arg(flag).arg(path);
        }
        let dockerd = dockerd
            .arg("--tlsverify")
            .args(["-H", HOST, "-H"])
            .arg(format!("unix://{}", dir.join("docker.sock").display()))
            .args(["--bridge=none", "--iptables=false", "--ip-masq=false"])
            .args(["--storage-driver", "vfs"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dockerd.log"))
            .stderr(log)
            .spawn()
            .expect("dockerd starts");
        Some(Self { dir, dockerd })
    }

    /// A runtime on this engine whose TLS files are those of `certs/<name>`.
    fn runtime(&self, name: &str) -> DockerRuntime {
        let config = DockerConfig {
            docker_host: Some(HOST.to_owned()),
            docker_cert_path: Some(self.dir.join("certs").join(name)),
            ..DockerConfig::new("sandkeeper-tls-test/absent:latest", "tls-test")
        };
        DockerRuntime::new(config).expect("a valid TLS configuration")
    }

    /// Waits until the engine answers the trusted client, or fails with dockerd's log.
    async fn ready(&mut self, runtime: &DockerRuntime) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let answer = runtime.ping().await;
            if answer.is_ok() {
                return;
            }
            let exited = self.dockerd.try_wait().expect("dockerd's status");
            if exited.is_some() || Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
                panic!("the TLS engine did not come up ({exited:?}, {answer:?}):\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for TlsEngine {
    fn drop(&mut self) {
        // SIGTERM lets dockerd stop the containerd it started; SIGKILL if it does not go.
        let _ = Command::new("kill").arg(self.dockerd.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while matches!(self.dockerd.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.dockerd.kill();
        let _ = self.dockerd.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Two CAs, and certificates in the docker CLI's layout (`ca.pem`, `cert.pem`, `key.pem`):
/// `engine` (signed by the CA, for 127.0.0.1), `client` (signed by the CA), `stranger` (a
/// client signed by the other CA) and `wrong-ca` (the right client, trusting the other CA).
fn make_certs(certs: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(certs).output().expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    for ca in ["ca", "other-ca"] {
        let (key, pem, subject) = (format!("{ca}.key"), format!("{ca}.pem"), format!("/CN={ca}"));
        openssl(&[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", &subject,
            "-keyout", &key, "-out", &pem,
        ]);
    }
    let sign = |name: &str, ca: &str, extensions: &str| {
        std::fs::write(certs.join(name).join("ext"), extensions).expect("extensions");
        let (key, csr) = (format!("{name}/key.pem"), format!("{name}/req.csr"));
        let subject = format!("/CN=sandkeeper test {name}");
        openssl(&[
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", &subject, "-keyout", &key, "-out",
            &csr,
        ]);
        let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
        let (ext, cert) = (format!("{name}/ext"), format!("{name}/cert.pem"));
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ]);
    };
    sign("engine", "ca", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
    sign("client", "ca", "extendedKeyUsage=clientAuth\n");
    sign("stranger", "other-ca", "extendedKeyUsage=clientAuth\n");
    let copy = |from: &str, to: &str| {
        std::fs::copy(certs.join(from), certs.join(to)).expect("copy a certificate");
    };
    copy("ca.pem", "engine/ca.pem");
    copy("ca.pem", "client/ca.pem");
    copy("ca.pem", "stranger/ca.pem");
    copy("other-ca.pem", "wrong-ca/ca.pem");
    copy("client/cert.pem", "wrong-ca/cert.pem");
    copy("client/key.pem", "wrong-ca/key.pem");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_engine_over_tls_answers_the_trusted_client_only() {
    let test = "an_engine_over_tls_answers_the_trusted_client_only";
    let Some(mut engine) = TlsEngine::start(test) else {
        return;
    };

    // The client the engine trusts, trusting the engine: it pings, lists, and reaches the
    // engine's own answers (no image is loaded there).
    let trusted = engine.runtime("client");
    engine.ready(&trusted).await;
    assert_eq!(trusted.endpoint(), HOST);
    let managed = trusted.list_managed().await.expect("list over TLS");
    assert!(managed.is_empty(), "{managed:?}");
    match trusted.create(&common::spec()).await {
        Err(RuntimeError::ImageMissing { image }) => {
            assert_eq!(image, "sandkeeper-tls-test/absent:latest");
        }
        other => panic!("a create without the image answered {other:?}"),
    }

    // A client certificate of another CA: the engine refuses it, and the error says TLS.
    let stranger = engine.runtime("stranger");
    let error = stranger.ping().await.expect_err("a client of another CA is refused");
    let message = Report(&error).to_string();
    assert!(matches!(error, RuntimeError::Unavailable(_)), "{message}");
    assert!(message.contains(HOST), "names the engine: {message}");
    assert!(message.contains("TLS"), "says TLS failed: {message}");
    assert!(message.contains("cert.pem"), "points at the client certificate: {message}");

    // The right client, trusting another CA: it refuses the engine's certificate.
    let doubting = engine.runtime("wrong-ca");
    let error = doubting.ping().await.expect_err("an engine of an untrusted CA is refused");
    let message = Report(&error).to_string();
    assert!(matches!(error, RuntimeError::Unavailable(_)), "{message}");
    assert!(message.contains("TLS"), "says TLS failed: {message}");
    assert!(message.contains("not trusted"), "says whose certificate: {message}");
    assert!(message.contains("ca.pem"), "points at the CA file: {message}");
}
