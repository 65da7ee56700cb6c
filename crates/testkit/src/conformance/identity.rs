//! Token sources against the emulator's identity endpoints, the same in both clients:
//! secret (v2 and v1), certificate (file and bytes), workload identity (its file rotated
//! mid-run), managed identity (App Service and IMDS), the Azure CLI (a stub script given
//! by path: `PATH` is process-global), the `auto` chain picking each in turn and listing
//! every step when none works, and all of it over TLS trusting the written certificate.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use defender_core::credential::{ChainEntry, ManagedEndpoint, Pem, TokenSource};
use defender_core::token::Secret;
use defender_core::{Error, Surface};
use defender_emulator::{Clock, Tls, DEFAULT_CLIENT_ID, DEFAULT_SECRET, DEFAULT_TENANT};

use super::{generous, hunt, post_form, Driver, Env, Tokens};

const APP_CERT: &str = include_str!("../../fixtures/app-cert.pem");
const APP_KEY: &str = include_str!("../../fixtures/app-key.pem");

/// A fresh path in the temporary directory.
fn temp_path(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    std::env::temp_dir().join(format!(
        "defender-identity-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// An emulator that knows the app's certificate and writes a federated token.
fn identity_env(
    f: impl FnOnce(defender_emulator::EmulatorBuilder) -> defender_emulator::EmulatorBuilder,
) -> (Env, PathBuf) {
    let fed = temp_path("federated-token");
    let env = Env::start(|b| {
        f(b.limits(generous())
            .client_certificate_pem(APP_CERT)
            .federated_token_out(fed.clone()))
    });
    (env, fed)
}

/// The key and certificate in one PEM file.
fn pem_file() -> PathBuf {
    let path = temp_path("app.pem");
    std::fs::write(&path, format!("{APP_KEY}{APP_CERT}")).expect("writes the PEM");
    path
}

/// A stub `az` that records its arguments and prints `token` as the CLI does.
fn stub_az(token: &str) -> (PathBuf, PathBuf) {
    let script = temp_path("az");
    let args = temp_path("az-args");
    let expires_on = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
        + 3000;
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$@\" > '{}'\ncat <<'EOF'\n{{\"accessToken\":\"{token}\",\"expiresOn\":\"2030-01-01 00:00:00.000000\",\"expires_on\":{expires_on},\"tenant\":\"{DEFAULT_TENANT}\",\"tokenType\":\"Bearer\"}}\nEOF\n",
            args.display()
        ),
    )
    .expect("writes the stub");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
            .expect("makes the stub runnable");
    }
    (script, args)
}

/// A token for Defender XDR from the emulator (what a logged-in `az` would hold).
fn xdr_token(base: &str) -> String {
    let body = format!(
        "client_id={DEFAULT_CLIENT_ID}&client_secret={DEFAULT_SECRET}&grant_type=client_credentials&scope=https%3A%2F%2Fapi.security.microsoft.com%2F.default"
    );
    let answer = post_form(&format!("{base}/{DEFAULT_TENANT}/oauth2/v2.0/token"), &body);
    let v: serde_json::Value = serde_json::from_str(&answer).expect("a token answer");
    v["access_token"].as_str().expect("a token").to_owned()
}

fn secret(v1: bool) -> TokenSource {
    TokenSource::Secret {
        tenant: DEFAULT_TENANT.into(),
        client_id: DEFAULT_CLIENT_ID.into(),
        secret: Secret::new(DEFAULT_SECRET),
        v1,
    }
}

fn certificate(pem: Pem) -> TokenSource {
    TokenSource::Certificate {
        tenant: DEFAULT_TENANT.into(),
        client_id: DEFAULT_CLIENT_ID.into(),
        pem,
    }
}

fn workload(file: &Path) -> TokenSource {
    TokenSource::WorkloadIdentity {
        tenant: DEFAULT_TENANT.into(),
        client_id: DEFAULT_CLIENT_ID.into(),
        token_file: file.to_owned(),
        authority: None,
    }
}

fn app_service(env: &Env) -> TokenSource {
    TokenSource::ManagedIdentity {
        endpoint: ManagedEndpoint::AppService {
            endpoint: format!("{}/msi/token", env.emulator.base_url()),
            header: Secret::new(env.emulator.identity_header()),
        },
        client_id: None,
    }
}

fn imds(env: &Env) -> TokenSource {
    TokenSource::ManagedIdentity {
        endpoint: ManagedEndpoint::Imds {
            endpoint: format!("{}/metadata/identity/oauth2/token", env.emulator.base_url()),
            timeout: None,
        },
        client_id: None,
    }
}

/// Every source gets a token the API takes, on Defender XDR and Graph, and says which it
/// was; the Azure CLI is asked for the API's resource.
pub fn every_token_source_gets_a_token<D: Driver>() {
    let (env, fed) = identity_env(|b| b);
    let pem = pem_file();
    let (az, az_args) = stub_az(&xdr_token(&env.emulator.base_url()));
    let sources = [
        (secret(false), "client secret"),
        (secret(true), "client secret (v1)"),
        (certificate(Pem::File(pem.clone())), "certificate"),
        (
            certificate(Pem::Bytes(std::sync::Arc::new(
                format!("{APP_KEY}{APP_CERT}").into_bytes(),
            ))),
            "certificate",
        ),
        (workload(&fed), "workload identity"),
        (app_service(&env), "managed identity (App Service)"),
        (imds(&env), "managed identity (IMDS)"),
        (
            TokenSource::AzureCli {
                program: az.clone(),
                tenant: Some(DEFAULT_TENANT.into()),
            },
            "Azure CLI",
        ),
    ];
    for (source, name) in sources {
        let surfaces: &[Surface] = if name == "Azure CLI" {
            &[Surface::DefenderXdr] // the stub holds one token
        } else {
            &[Surface::DefenderXdr, Surface::Graph]
        };
        for &surface in surfaces {
            let mut spec = env.spec(surface, generous());
            spec.tokens = Tokens::Source {
                source: source.clone(),
                ca: None,
            };
            let d = D::connect(&spec, &env.rt);
            assert_eq!(d.token_source(), None, "{}: none before the first", D::NAME);
            d.call(hunt("AlertInfo | take 1"))
                .unwrap_or_else(|e| panic!("{} {name} on {surface:?}: {e}", D::NAME));
            assert_eq!(d.token_source(), Some(name), "{}", D::NAME);
        }
    }
    let args = std::fs::read_to_string(&az_args).expect("the stub ran");
    assert_eq!(
        args.trim(),
        format!("account get-access-token --resource https://api.security.microsoft.com --tenant {DEFAULT_TENANT} -o json")
    );
    for p in [fed, pem, az, az_args] {
        let _ = std::fs::remove_file(p);
    }
}

/// Workload identity reads its federated token file at every refresh: rotated to a token
/// the emulator does not know, the next refresh is refused; rotated back, it works.
pub fn workload_identity_reads_the_rotated_file<D: Driver>() {
    let clock = Clock::manual_now();
    let (env, fed) = identity_env(|b| {
        b.clock(clock.clone())
            .token_lifetime(Duration::from_secs(3599))
    });
    let good = std::fs::read_to_string(&fed).expect("the emulator wrote the token");
    let mut spec = env.spec(Surface::DefenderXdr, generous());
    spec.tokens = Tokens::Source {
        source: workload(&fed),
        ca: None,
    };
    let d = D::connect(&spec, &env.rt);
    d.call(hunt("AlertInfo | take 1")).expect("the first token");
    // The file rotates; the server's clock passes the token's expiry (the client learns
    // of it from a 401) and the refresh sends the new file's token.
    std::fs::write(&fed, "rotated-token-the-emulator-does-not-know").expect("rotates");
    clock.advance(Duration::from_secs(3600));
    match d.call(hunt("AlertInfo | take 1")) {
        Err(e @ Error::Auth(_)) => assert!(
            !e.to_string().contains("rotated-token"),
            "{}: the assertion is never shown: {e}",
            D::NAME
        ),
        other => panic!(
            "{}: expected the rotated token refused, got {other:?}",
            D::NAME
        ),
    }
    std::fs::write(&fed, &good).expect("rotates back");
    d.call(hunt("AlertInfo | take 1"))
        .unwrap_or_else(|e| panic!("{}: after rotating back: {e}", D::NAME));
    assert_eq!(env.stats().tokens_issued, 2, "{}", D::NAME);
    let _ = std::fs::remove_file(fed);
}

/// The `auto` chain in `DefaultAzureCredential`'s order picks the first source that is
/// there (environment secret, certificate, workload identity, managed identity, Azure
/// CLI); with none, the error lists every step and why.
pub fn auto_picks_each_source_in_turn<D: Driver>() {
    let (env, fed) = identity_env(|b| b);
    let pem = pem_file();
    let (az, _) = stub_az(&xdr_token(&env.emulator.base_url()));
    let base = env.emulator.base_url();
    let msi = format!("{base}/msi/token");
    let header = env.emulator.identity_header().to_owned();
    let fed_s = fed.display().to_string();
    let pem_s = pem.display().to_string();
    let ids: [(&str, &str); 2] = [
        ("AZURE_TENANT_ID", DEFAULT_TENANT),
        ("AZURE_CLIENT_ID", DEFAULT_CLIENT_ID),
    ];
    let cases: [(Vec<(&str, &str)>, &str); 5] = [
        (
            vec![
                ("AZURE_CLIENT_SECRET", DEFAULT_SECRET),
                ("AZURE_CLIENT_CERTIFICATE_PATH", &pem_s),
            ],
            "environment secret",
        ),
        (
            vec![
                ("AZURE_CLIENT_CERTIFICATE_PATH", &pem_s),
                ("AZURE_FEDERATED_TOKEN_FILE", &fed_s),
            ],
            "environment certificate",
        ),
        (
            vec![
                ("AZURE_FEDERATED_TOKEN_FILE", &fed_s),
                ("IDENTITY_ENDPOINT", &msi),
            ],
            "workload identity",
        ),
        (
            vec![("IDENTITY_ENDPOINT", &msi), ("IDENTITY_HEADER", &header)],
            "managed identity",
        ),
        (vec![], "Azure CLI"),
    ];
    for (vars, name) in cases {
        let vars: Vec<(&str, &str)> = ids.iter().copied().chain(vars).collect();
        let get = |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        };
        let source = auto(&get, &az);
        let mut spec = env.spec(Surface::DefenderXdr, generous());
        spec.tokens = Tokens::Source { source, ca: None };
        let d = D::connect(&spec, &env.rt);
        d.call(hunt("AlertInfo | take 1"))
            .unwrap_or_else(|e| panic!("{} auto → {name}: {e}", D::NAME));
        assert_eq!(d.token_source(), Some(name), "{}", D::NAME);
    }
    // Nothing works: every step and why.
    let missing = temp_path("no-such-az");
    let get = |_: &str| None;
    let source = auto(&get, &missing);
    let mut spec = env.spec(Surface::DefenderXdr, generous());
    spec.tokens = Tokens::Source { source, ca: None };
    let d = D::connect(&spec, &env.rt);
    match d.call(hunt("AlertInfo | take 1")) {
        Err(e @ Error::TokenUnavailable { .. }) => {
            let e = e.to_string();
            for part in [
                "environment secret: AZURE_TENANT_ID is not set",
                "environment certificate: AZURE_TENANT_ID is not set",
                "workload identity: AZURE_TENANT_ID is not set",
                "managed identity: not on Azure here",
                "Azure CLI: the Azure CLI could not be run",
            ] {
                assert!(e.contains(part), "{}: {part} in {e}", D::NAME);
            }
        }
        other => panic!("{}: expected every step listed, got {other:?}", D::NAME),
    }
    for p in [fed, pem, az] {
        let _ = std::fs::remove_file(p);
    }
}

/// The chain from these variables, with the stub CLI at `az` and no probe of the real
/// IMDS address (managed identity only from the App Service variables here).
fn auto(get: &dyn Fn(&str) -> Option<String>, az: &Path) -> TokenSource {
    let Ok(TokenSource::Chain(mut entries)) = TokenSource::from_env("auto", None, None, get) else {
        panic!("auto is a chain")
    };
    for ChainEntry { source, .. } in &mut entries {
        match source {
            Ok(TokenSource::AzureCli { program, .. }) => *program = az.to_owned(),
            Ok(TokenSource::ManagedIdentity {
                endpoint: ManagedEndpoint::Imds { .. },
                ..
            }) => *source = Err("not on Azure here".into()),
            _ => {}
        }
    }
    TokenSource::Chain(entries)
}

/// Over `--tls`: a client trusting the certificate the emulator wrote gets its token from
/// a certificate credential and calls the API; one that does not trust it fails with a
/// transport error, not a token.
pub fn tls_trusting_the_written_certificate<D: Driver>() {
    let cert_out = temp_path("tls-cert.pem");
    let (env, fed) = identity_env(|b| {
        b.tls(Tls::Generated {
            cert_out: Some(cert_out.clone()),
        })
    });
    assert!(env.emulator.base_url().starts_with("https://"));
    let ca = std::fs::read_to_string(&cert_out).expect("the emulator wrote its certificate");
    let pem = pem_file();
    for source in [
        certificate(Pem::File(pem.clone())),
        workload(&fed),
        secret(false),
    ] {
        let name = source.name();
        let mut spec = env.spec(Surface::DefenderXdr, generous());
        spec.tokens = Tokens::Source {
            source: source.clone(),
            ca: Some(ca.clone()),
        };
        let d = D::connect(&spec, &env.rt);
        d.call(hunt("AlertInfo | take 1"))
            .unwrap_or_else(|e| panic!("{} {name} over TLS: {e}", D::NAME));
    }
    let mut spec = env.spec(Surface::DefenderXdr, generous());
    spec.tokens = Tokens::Source {
        source: secret(false),
        ca: None,
    };
    let d = D::connect(&spec, &env.rt);
    match d.call(hunt("AlertInfo | take 1")) {
        Err(Error::Transport { .. }) => {}
        other => panic!("{}: an untrusted certificate, got {other:?}", D::NAME),
    }
    for p in [cert_out, fed, pem] {
        let _ = std::fs::remove_file(p);
    }
}

/// An Azure CLI that never answers is killed at the token timeout: the call fails with
/// the reason, and so does the next one, as promptly (the token worker is not held).
pub fn a_hung_azure_cli_is_killed<D: Driver>() {
    let env = Env::start(|b| b.limits(generous()));
    let script = temp_path("az-hangs");
    std::fs::write(&script, "#!/bin/sh\nsleep 30\n").expect("writes the stub");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
            .expect("makes the stub runnable");
    }
    let mut spec = env.spec(Surface::DefenderXdr, generous());
    spec.tokens = Tokens::Source {
        source: TokenSource::AzureCli {
            program: script.clone(),
            tenant: None,
        },
        ca: None,
    };
    spec.timeout = Some(Duration::from_millis(500));
    let d = D::connect(&spec, &env.rt);
    for round in 0..2 {
        let started = std::time::Instant::now();
        match d.call(hunt("AlertInfo | take 1")) {
            Err(Error::TokenUnavailable { .. }) => {}
            other => panic!(
                "{} round {round}: expected no token, got {other:?}",
                D::NAME
            ),
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{} round {round}: took {:?}",
            D::NAME,
            started.elapsed()
        );
    }
    let _ = std::fs::remove_file(script);
}
