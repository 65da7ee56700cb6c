//! The `azure-identity` bridge: a credential of Microsoft's own SDK, pointed at the
//! emulator as its authority (over TLS, as the SDK insists), gets the token, and a hunt
//! through the client succeeds with it.

use std::sync::Arc;

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::Secret as AzureSecret;
use azure_core::http::{ClientOptions, Transport};
use azure_identity::{ClientSecretCredential, ClientSecretCredentialOptions};
use defender_async::{AzureCredential, Client, Error};
use defender_core::engine::Call;
use defender_core::hunting::HuntRequest;
use defender_emulator::{Tls, DEFAULT_CLIENT_ID, DEFAULT_SECRET, DEFAULT_TENANT};

/// The SDK's credential with `authority` as its cloud's login host, over a reqwest
/// client that trusts `ca` (the emulator's certificate).
fn credential(authority: &str, ca: &str, secret: &str) -> Arc<ClientSecretCredential> {
    // The process's crypto provider, as the client installs it.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).expect("a PEM"))
        .build()
        .expect("a reqwest client");
    let mut cloud = CustomConfiguration::default();
    cloud.authority_host = authority.to_owned();
    let options = ClientSecretCredentialOptions {
        client_options: ClientOptions {
            transport: Some(Transport::new(Arc::new(http))),
            cloud: Some(Arc::new(CloudConfiguration::from(cloud))),
            ..Default::default()
        },
    };
    ClientSecretCredential::new(
        DEFAULT_TENANT,
        DEFAULT_CLIENT_ID.to_owned(),
        AzureSecret::new(secret.to_owned()),
        Some(options),
    )
    .expect("the credential builds")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_azure_identity_credential_gets_the_token_for_a_hunt() {
    let emu = defender_emulator::Emulator::builder()
        .tls(Tls::Generated { cert_out: None })
        .rows_per_table(50)
        .spawn()
        .await
        .expect("the emulator starts");
    let base = emu.base_url().to_owned();
    assert!(base.starts_with("https://"), "{base}");
    let ca = emu
        .tls_certificate_pem()
        .expect("a generated certificate")
        .to_owned();
    let client = |secret: &str| {
        Client::builder()
            .base_url(&base)
            .login_url(&base)
            .ca_certificate(ca.clone())
            .token_provider(Arc::new(AzureCredential::new(credential(
                &base, &ca, secret,
            ))))
            .build()
            .expect("the client builds")
    };
    let value = client(DEFAULT_SECRET)
        .call(Call::Hunt(HuntRequest::new("DeviceInfo | take 3")))
        .await
        .expect("the hunt runs with the SDK's token");
    let result = value.into_hunt().expect("a hunt result");
    assert_eq!(result.rows.len(), 3);

    // A wrong secret: Entra's refusal comes back through the SDK as a typed error that
    // never repeats the secret.
    match client("not-the-secret")
        .call(Call::Hunt(HuntRequest::new("DeviceInfo | take 1")))
        .await
    {
        Err(e @ Error::TokenUnavailable { .. }) | Err(e @ Error::Auth(_)) => {
            let text = format!("{e} {e:?}");
            assert!(!text.contains("not-the-secret"), "{text}");
        }
        other => panic!("a refused credential, got {other:?}"),
    }
}
