//! Secret hygiene: the client secret, tokens, certificate keys, federated tokens and the
//! managed identity header never appear in any `Debug`, `Display`, error or log line
//! (every `tracing` event and span field captured at TRACE), for both clients and every
//! token source, including failures.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use defender_core::credential::{ManagedEndpoint, Pem, TokenSource};
use defender_core::engine::Call;
use defender_core::hunting::HuntRequest;
use defender_core::token::{ClientCredentials, Secret};
use defender_core::{Limits, Surface};
use defender_emulator::{App, Emulator, FaultSpec, ALL_PERMISSIONS};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

const SECRET: &str = "S3cr3t-Do-Not-Print-7f1c";
const APP_CERT: &str = include_str!("../fixtures/app-cert.pem");
const APP_KEY: &str = include_str!("../fixtures/app-key.pem");

/// Records every field of every span and event of our crates, formatted with `Debug`.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<String>>);

struct Fields<'a>(&'a mut String);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={:?}", field.name(), value);
    }
}

impl Subscriber for Capture {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        // Our crates' spans and events, at every level down to TRACE.
        m.target().starts_with("defender")
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut log = self.0.lock().unwrap();
        log.push_str(span.metadata().name());
        span.record(&mut Fields(&mut log));
        log.push('\n');
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, values: &Record<'_>) {
        values.record(&mut Fields(&mut self.0.lock().unwrap()));
    }
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut log = self.0.lock().unwrap();
        event.record(&mut Fields(&mut log));
        log.push('\n');
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn no_secret_or_token_anywhere() {
    let capture = Capture::default();
    tracing::subscriber::set_global_default(capture.clone())
        .expect("the only subscriber of this test binary");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let app = App::new("contoso", "app-1", SECRET, &ALL_PERMISSIONS);
    let faults = FaultSpec::parse("500=0.3,503=0.1").unwrap();
    let limits = Limits::parse("2021,hunting.calls=1000/1m,hunting.runtime=none").unwrap();
    let emu = rt
        .block_on(
            Emulator::builder()
                .app(app)
                .limits(limits.clone())
                .rows_per_table(200)
                .faults(faults)
                .token_lifetime(Duration::from_secs(3599))
                .spawn(),
        )
        .unwrap();
    let base = emu.base_url();
    let policy = defender_policy::StandardPolicy::standard()
        .max_attempts(6)
        .backoff(Duration::from_millis(1), Duration::from_millis(10));

    let mut texts = Vec::new();
    let async_client = {
        let _g = rt.enter();
        defender_async::Client::builder()
            .surface(Surface::DefenderXdr)
            .tenant("contoso")
            .client_id("app-1")
            .client_secret(SECRET)
            .base_url(&base)
            .login_url(&base)
            .limits_value(limits.clone())
            .policy(policy.clone())
            .build()
            .unwrap()
    };
    let blocking_client = defender_blocking::Client::builder()
        .tenant("contoso")
        .client_id("app-1")
        .client_secret(SECRET)
        .base_url(&base)
        .login_url(&base)
        .limits_value(limits)
        .policy(policy)
        .build()
        .unwrap();
    texts.push(format!("{async_client:?} {blocking_client:?}"));
    for i in 0..10 {
        let q = Call::Hunt(HuntRequest::new(format!("AlertInfo | take {i}")));
        let a = rt.block_on(async_client.call(q.clone()));
        let b = blocking_client.call(q);
        for r in [a, b] {
            match r {
                Ok(v) => texts.push(format!("{v:?}")),
                Err(e) => texts.push(format!("{e} {e:?}")),
            }
        }
    }
    // Failures say so without the secret: a wrong one, and a refused one.
    let wrong = defender_blocking::Client::builder()
        .tenant("contoso")
        .client_id("app-1")
        .client_secret(format!("{SECRET}-wrong"))
        .base_url(&base)
        .login_url(&base)
        .build()
        .unwrap();
    let e = wrong.hunt("AlertInfo").unwrap_err();
    texts.push(format!("{e} {e:?}"));
    let creds = ClientCredentials::new("contoso", "app-1", Secret::new(SECRET));
    texts.push(format!("{creds:?} {}", creds.secret));
    let settings = defender_core::settings::Settings::new(Surface::Graph).with_env(|k| match k {
        "AZURE_CLIENT_SECRET" => Some(SECRET.to_owned()),
        _ => Some("x".to_owned()),
    });
    texts.push(format!("{settings:?} {:?}", settings.clone().into_config()));

    // Every token source: a certificate's key, the federated token, the managed identity
    // header and the tokens they bring never show either, on success or failure.
    let fed = std::env::temp_dir().join(format!("defender-secrets-{}-fed", std::process::id()));
    let emu2 = rt
        .block_on(
            Emulator::builder()
                .rows_per_table(50)
                .client_certificate_pem(APP_CERT)
                .federated_token_out(fed.clone())
                .spawn(),
        )
        .unwrap();
    let fed_token = std::fs::read_to_string(&fed).unwrap();
    let base2 = emu2.base_url();
    let key_line = APP_KEY.lines().nth(1).unwrap().to_owned();
    let header = emu2.identity_header().to_owned();
    let (tenant, app) = (
        defender_emulator::DEFAULT_TENANT,
        defender_emulator::DEFAULT_CLIENT_ID,
    );
    let sources = [
        TokenSource::Certificate {
            tenant: tenant.into(),
            client_id: app.into(),
            pem: Pem::Bytes(Arc::new(format!("{APP_KEY}{APP_CERT}").into_bytes())),
        },
        TokenSource::WorkloadIdentity {
            tenant: tenant.into(),
            client_id: app.into(),
            token_file: fed.clone(),
            authority: None,
        },
        TokenSource::ManagedIdentity {
            endpoint: ManagedEndpoint::AppService {
                endpoint: format!("{base2}/msi/token"),
                header: Secret::new(header.clone()),
            },
            client_id: None,
        },
        // Refused: a wrong header, an unknown app's assertion.
        TokenSource::ManagedIdentity {
            endpoint: ManagedEndpoint::AppService {
                endpoint: format!("{base2}/msi/token"),
                header: Secret::new(format!("{header}-wrong")),
            },
            client_id: None,
        },
        TokenSource::Certificate {
            tenant: tenant.into(),
            client_id: "another-app".into(),
            pem: Pem::Bytes(Arc::new(format!("{APP_KEY}{APP_CERT}").into_bytes())),
        },
    ];
    for source in sources {
        texts.push(format!("{source:?}"));
        let a = {
            let _g = rt.enter();
            defender_async::Client::builder()
                .credential(source.clone())
                .base_url(&base2)
                .login_url(&base2)
                .build()
                .unwrap()
        };
        let b = defender_blocking::Client::builder()
            .credential(source)
            .base_url(&base2)
            .login_url(&base2)
            .build()
            .unwrap();
        texts.push(format!("{a:?} {b:?}"));
        let q = Call::Hunt(HuntRequest::new("AlertInfo | take 1"));
        for r in [rt.block_on(a.call(q.clone())), b.call(q)] {
            match r {
                Ok(v) => texts.push(format!("{v:?}")),
                Err(e) => texts.push(format!("{e} {e:?}")),
            }
        }
        match rt.block_on(a.check_credential()) {
            Ok(x) => texts.push(format!("{x:?}")),
            Err(e) => texts.push(format!("{e} {e:?}")),
        }
    }
    rt.block_on(emu2.shutdown());
    let _ = std::fs::remove_file(&fed);

    let log = capture.0.lock().unwrap().clone();
    assert!(
        log.contains("defender.call"),
        "the capture saw the client's spans: {log}"
    );
    assert!(log.lines().count() > 20, "the capture saw the calls");
    for text in texts.iter().chain(std::iter::once(&log)) {
        assert!(!text.contains(SECRET), "the secret leaked: {text}");
        assert!(!text.contains(&key_line), "the key leaked: {text}");
        assert!(
            !text.contains(&fed_token),
            "the federated token leaked: {text}"
        );
        assert!(
            !text.contains(&header),
            "the identity header leaked: {text}"
        );
        assert!(!text.contains("Bearer "), "a bearer token leaked: {text}");
    }
    drop(async_client);
    rt.block_on(emu.shutdown());
}
