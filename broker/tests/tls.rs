//! The LAN listener over TLS, over real TCP: a certificate made at test time with rcgen,
//! rumqttc as the TLS client trusting only that certificate.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pvbus_broker::{BrokerConfig, BrokerError, BrokerUser, EmbeddedBroker, LanListener, TlsFiles};
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Packet, QoS,
    TlsConfiguration, Transport,
};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

/// The LAN listener's address: loopback, but not the loopback listener's 127.0.0.1.
const LAN_IP: &str = "127.0.0.2";

struct Pki {
    cert_pem: String,
    key_pem: String,
    cert_der: CertificateDer<'static>,
}

fn self_signed() -> Pki {
    let certified = rcgen::generate_simple_self_signed(vec![LAN_IP.to_owned()]).unwrap();
    Pki {
        cert_pem: certified.cert.pem(),
        key_pem: certified.key_pair.serialize_pem(),
        cert_der: certified.cert.der().clone(),
    }
}

fn write_files(dir: &Path, cert_pem: &str, key_pem: &str) -> TlsFiles {
    let files = TlsFiles {
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
    };
    std::fs::write(&files.cert, cert_pem).unwrap();
    std::fs::write(&files.key, key_pem).unwrap();
    files
}

fn tls_config(dir: &Path, tls: TlsFiles) -> BrokerConfig {
    BrokerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.join("data"),
        lan: Some(LanListener {
            listen: format!("{LAN_IP}:0").parse().unwrap(),
            users: vec![BrokerUser {
                username: "ha".into(),
                password_hash: pvbus_broker::hash_password("s3cret").unwrap(),
            }],
            tls: Some(tls),
        }),
        ..BrokerConfig::default()
    }
}

fn client_config(ca: &CertificateDer<'static>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

fn tls_client(
    id: &str,
    addr: SocketAddr,
    ca: &CertificateDer<'static>,
    login: Option<(&str, &str)>,
) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
        client_config(ca),
    )));
    if let Some((user, password)) = login {
        options.set_credentials(user, password);
    }
    AsyncClient::new(options, 16)
}

async fn start(config: BrokerConfig) -> EmbeddedBroker {
    tokio::task::spawn_blocking(move || EmbeddedBroker::start(config).unwrap())
        .await
        .unwrap()
}

/// The first event: CONNACK code 0, or the error the connection failed with.
async fn connect_outcome(events: &mut EventLoop) -> Result<(), ConnectionError> {
    let event = tokio::time::timeout(Duration::from_secs(10), events.poll())
        .await
        .expect("an answer in time")?;
    match event {
        Event::Incoming(Packet::ConnAck(connack)) => {
            assert_eq!(connack.code, ConnectReturnCode::Success);
            Ok(())
        }
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_login_connects_and_round_trips_a_publish() {
    let dir = tempfile::tempdir().unwrap();
    let pki = self_signed();
    let files = write_files(dir.path(), &pki.cert_pem, &pki.key_pem);
    let broker = start(tls_config(dir.path(), files)).await;
    let lan = broker.lan_addr().unwrap();

    let (subscriber, mut sub_events) =
        tls_client("ha-sub", lan, &pki.cert_der, Some(("ha", "s3cret")));
    connect_outcome(&mut sub_events).await.unwrap();
    subscriber
        .subscribe("pvbus/tls/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    loop {
        match sub_events.poll().await.unwrap() {
            Event::Incoming(Packet::SubAck(_)) => break,
            Event::Incoming(other) => panic!("expected SUBACK, got {other:?}"),
            Event::Outgoing(_) => {}
        }
    }

    let (publisher, mut pub_events) =
        tls_client("ha-pub", lan, &pki.cert_der, Some(("ha", "s3cret")));
    connect_outcome(&mut pub_events).await.unwrap();
    publisher
        .publish("pvbus/tls/state", QoS::AtLeastOnce, false, "{\"ts\":1}")
        .await
        .unwrap();
    tokio::spawn(async move { while pub_events.poll().await.is_ok() {} });

    let deadline = Instant::now() + Duration::from_secs(10);
    let publish = loop {
        let event = tokio::time::timeout_at(deadline.into(), sub_events.poll())
            .await
            .expect("the publish in time")
            .unwrap();
        if let Event::Incoming(Packet::Publish(publish)) = event {
            break publish;
        }
    };
    assert_eq!(publish.topic, "pvbus/tls/state");
    assert_eq!(&publish.payload[..], b"{\"ts\":1}");

    // Handshake time, reported by `cargo test -- --nocapture` (debug build: slower than a Pi's
    // release build would be).
    let connector = tokio_rustls::TlsConnector::from(client_config(&pki.cert_der));
    let started = Instant::now();
    let rounds = 5;
    for _ in 0..rounds {
        let tcp = tokio::net::TcpStream::connect(lan).await.unwrap();
        let name = ServerName::try_from(LAN_IP).unwrap();
        connector.connect(name, tcp).await.unwrap();
    }
    eprintln!(
        "TLS handshake (TCP connect included): {:?} on average",
        started.elapsed() / rounds
    );
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_refuses_wrong_logins_and_plain_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let pki = self_signed();
    let files = write_files(dir.path(), &pki.cert_pem, &pki.key_pem);
    let broker = start(tls_config(dir.path(), files)).await;
    let lan = broker.lan_addr().unwrap();

    let refusal = |result: Result<(), ConnectionError>| match result {
        Err(ConnectionError::ConnectionRefused(code)) => code,
        other => panic!("expected a refused CONNACK, got {other:?}"),
    };
    let (_client, mut events) = tls_client("ha-bad", lan, &pki.cert_der, Some(("ha", "wrong")));
    assert_eq!(
        refusal(connect_outcome(&mut events).await),
        ConnectReturnCode::BadUserNamePassword
    );
    let (_client, mut events) = tls_client("ha-none", lan, &pki.cert_der, None);
    assert_eq!(
        refusal(connect_outcome(&mut events).await),
        ConnectReturnCode::NotAuthorized
    );

    // A plain MQTT CONNECT on the TLS port gets no CONNACK, and the connection closes.
    let first_byte = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(lan).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        // CONNECT, MQTT 3.1.1, clean session, keep alive 30, client id "plain".
        let connect = [
            0x10, 17, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 30, 0, 5, b'p', b'l', b'a', b'i',
            b'n',
        ];
        stream.write_all(&connect).unwrap();
        let mut answer = Vec::new();
        let read = stream.read_to_end(&mut answer);
        let reset = matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset);
        assert!(read.is_ok() || reset, "not closed: {read:?}");
        answer.first().copied()
    })
    .await
    .unwrap();
    // Nothing, or a TLS alert record (content type 21), never a CONNACK (0x20).
    assert!(
        matches!(first_byte, None | Some(21)),
        "answer starts with {first_byte:?}"
    );

    // The listener still serves TLS clients after that.
    let (_client, mut events) = tls_client("ha-ok", lan, &pki.cert_der, Some(("ha", "s3cret")));
    connect_outcome(&mut events).await.unwrap();
    drop(broker);
}

fn start_error(config: BrokerConfig) -> (String, std::path::PathBuf, String) {
    match EmbeddedBroker::start(config) {
        Err(BrokerError::Tls { key, path, problem }) => (key, path, problem),
        Err(other) => panic!("expected a TLS error, got {other}"),
        Ok(_) => panic!("started with unusable TLS files"),
    }
}

#[test]
fn bad_tls_files_stop_the_start_with_the_key_and_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let pki = self_signed();

    let files = write_files(dir.path(), &pki.cert_pem, "this is not a key\n");
    let (key, path, problem) = start_error(tls_config(dir.path(), files.clone()));
    assert_eq!(key, "broker.lan.tls.key");
    assert_eq!(path, files.key);
    assert!(problem.contains("PEM"), "{problem}");

    let other = self_signed();
    let files = write_files(dir.path(), &pki.cert_pem, &other.key_pem);
    let (key, path, problem) = start_error(tls_config(dir.path(), files.clone()));
    assert_eq!(key, "broker.lan.tls.key");
    assert_eq!(path, files.key);
    assert!(problem.contains("does not match"), "{problem}");

    let files = write_files(dir.path(), &pki.key_pem, &pki.key_pem);
    let (key, _, problem) = start_error(tls_config(dir.path(), files));
    assert_eq!(key, "broker.lan.tls.cert");
    assert!(problem.contains("CERTIFICATE"), "{problem}");

    let missing = TlsFiles {
        cert: dir.path().join("missing.crt"),
        key: dir.path().join("server.key"),
    };
    let (key, path, problem) = start_error(tls_config(dir.path(), missing.clone()));
    assert_eq!(key, "broker.lan.tls.cert");
    assert_eq!(path, missing.cert);
    assert!(problem.contains("cannot read"), "{problem}");

    let message = match EmbeddedBroker::start(tls_config(dir.path(), missing)) {
        Err(error) => error.to_string(),
        Ok(_) => panic!("started without a certificate file"),
    };
    assert!(
        message.contains("broker.lan.tls.cert") && message.contains("missing.crt"),
        "{message}"
    );
}
