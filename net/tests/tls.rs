//! TLS on the client port against the real `shoal` binary: a rustls client and
//! `redis-cli --tls` talk to `--tls-port`, the plain port keeps working, a
//! client that speaks plain text to the TLS port is cut off without harming
//! anyone, and bad certificate files stop the start with the file named.

mod common;

use common::{free_port, temp_dir, tls_fixture as fixture, ShoalProcess};
use redis::Commands;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

fn tls_args(port: u16) -> Vec<String> {
    vec![
        "--tls-port".into(),
        port.to_string(),
        "--tls-cert-file".into(),
        fixture("cert.pem"),
        "--tls-key-file".into(),
        fixture("key.pem"),
    ]
}

/// A rustls client trusting the test CA.
fn tls_client(port: u16) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls::pki_types::CertificateDer::pem_file_iter(fixture("ca.pem")).unwrap() {
        roots.add(ca.unwrap()).unwrap();
    }
    let provider = Arc::new(shoal_net::tls::ring_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = "localhost".try_into().unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    rustls::StreamOwned::new(conn, sock)
}

/// Send one RESP request and read until `want` bytes of reply arrived.
fn round_trip(
    stream: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    request: &[u8],
    want: usize,
) -> String {
    stream.write_all(request).unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 256];
    while reply.len() < want {
        let n = stream.read(&mut buf).expect("TLS read");
        assert!(n > 0, "the server closed the TLS connection");
        reply.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(reply).unwrap()
}

#[test]
fn tls_clients_and_plain_clients_share_one_keyspace() {
    let dir = temp_dir("tls");
    let tls_port = free_port();
    let args = tls_args(tls_port);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let node = ShoalProcess::start(&dir, &args);

    // Plain text on the TLS port is not TLS: that connection alone ends.
    let mut plain_on_tls = TcpStream::connect(("127.0.0.1", tls_port)).unwrap();
    plain_on_tls
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    plain_on_tls.write_all(b"PING\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = plain_on_tls.read_to_end(&mut answer);
    assert!(!String::from_utf8_lossy(&answer).contains("PONG"));

    let mut tls = tls_client(tls_port);
    assert_eq!(round_trip(&mut tls, b"PING\r\n", 7), "+PONG\r\n");
    assert_eq!(
        round_trip(
            &mut tls,
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$6\r\nsecret\r\n",
            5
        ),
        "+OK\r\n"
    );
    let mut plain = node.client();
    assert_eq!(plain.get::<_, String>("k").unwrap(), "secret");
    let _: () = plain.set("p", "plain").unwrap();
    assert_eq!(
        round_trip(&mut tls, b"*2\r\n$3\r\nGET\r\n$1\r\np\r\n", 11),
        "$5\r\nplain\r\n"
    );
    redis_cli_tls(tls_port);
}

/// `redis-cli --tls` PINGs through the TLS port (skipped when redis-cli is not
/// installed, unless SHOAL_REQUIRE_REDIS_CLI is set).
fn redis_cli_tls(port: u16) {
    let out = Command::new("redis-cli")
        .args(["--tls", "--cacert", &fixture("ca.pem"), "-h", "localhost"])
        .args(["-p", &port.to_string(), "PING"])
        .output();
    match out {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            assert_eq!(
                text.trim(),
                "PONG",
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(e) => {
            assert!(
                std::env::var_os("SHOAL_REQUIRE_REDIS_CLI").is_none(),
                "redis-cli: {e}"
            );
            eprintln!("redis-cli not installed: its TLS PING is skipped");
        }
    }
}

#[test]
fn bad_tls_files_stop_the_start_and_name_the_file() {
    let dir = temp_dir("tls-bad");
    let missing = fixture("no-such-cert.pem");
    let cases: [(&str, &str, &str); 3] = [
        (&missing, "key.pem", "no-such-cert.pem"),
        ("cert.pem", "cert.pem", "tls_key_file"),
        ("key.pem", "key.pem", "tls_cert_file"),
    ];
    for (cert, key, named) in cases {
        let cert = if cert.starts_with('/') {
            cert.to_string()
        } else {
            fixture(cert)
        };
        let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args(["server", "--port", &free_port().to_string()])
            .arg("--data-dir")
            .arg(&*dir)
            .args(["--tls-port", &free_port().to_string()])
            .args(["--tls-cert-file", &cert, "--tls-key-file", &fixture(key)])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "started with {cert} / {key}");
        assert!(stderr.contains(named), "{named} not named: {stderr}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["server", "--port", &free_port().to_string()])
        .arg("--data-dir")
        .arg(&*dir)
        .args(["--tls-port", &free_port().to_string()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("tls_cert_file and tls_key_file"));
}
