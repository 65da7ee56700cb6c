//! `--auth` and `defender auth`: where tokens come from (the Azure SDKs' environment
//! variables and `DefaultAzureCredential`'s order), and a check that shows the source
//! picked, the tenant, app and audience, and the token's expiry, never the token.

use std::io::Write;
use std::time::{Duration, SystemTime};

use defender_async::{Client, ClientBuilder};
use defender_core::credential::{Pem, TokenSource};
use defender_core::limits::format_duration;
use defender_core::timefmt::format_rfc3339;
use serde_json::json;

use crate::output::{Format, OutputArgs};
use crate::{Cli, Failure};

/// Sets the client's token source from `--auth`, the flags and the environment, and the
/// extra root certificate from `--ca-cert` / `SSL_CERT_FILE`.
pub(crate) fn credential(mut builder: ClientBuilder, cli: &Cli) -> Result<ClientBuilder, Failure> {
    if let Some(path) = &cli.ca_cert {
        let pem = std::fs::read(path).map_err(|e| {
            Failure::usage(format!(
                "could not read the CA certificate {}: {e}",
                path.display()
            ))
        })?;
        builder = builder.ca_certificate(pem);
    }
    // --client-secret-file and --client-certificate stand in for their variables.
    let secret = match &cli.client_secret_file {
        Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
            Failure::usage(format!(
                "could not read the secret file {}: {e}",
                path.display()
            ))
        })?),
        None => None,
    };
    let get = |k: &str| match k {
        "AZURE_CLIENT_SECRET" if secret.is_some() => secret.as_ref().map(|s| s.trim().to_owned()),
        "AZURE_CLIENT_CERTIFICATE_PATH" if cli.client_certificate.is_some() => cli
            .client_certificate
            .as_ref()
            .map(|p| p.display().to_string()),
        _ => std::env::var(k).ok(),
    };
    let mut source = TokenSource::from_env(
        &cli.auth,
        cli.tenant.as_deref(),
        cli.client_id.as_deref(),
        &get,
    )
    .map_err(|why| Failure {
        code: 3,
        message: format!(
            "--auth {}: {why}; or add --emulator to run against a local emulator.",
            cli.auth
        ),
    })?;
    // Token requests go where --login-url says, also for workload identity.
    if let (Some(_), TokenSource::WorkloadIdentity { authority, .. }) =
        (&cli.login_url, &mut source)
    {
        *authority = None;
    }
    Ok(builder.credential(source))
}

/// `defender auth`: fetches a token and shows where it came from.
pub(crate) async fn show(client: &Client, out: &OutputArgs) -> Result<(), Failure> {
    let (source, fetched, endpoints) = client.check_credential().await?;
    let picked = source.picked(fetched.picked);
    let (tenant, app) = picked.identity();
    let audience = picked.audience(&endpoints);
    let valid_for = fetched
        .token
        .expires_at
        .saturating_duration_since(fetched.token.obtained_at);
    let expires = SystemTime::now() + valid_for;
    let certificate = match picked {
        TokenSource::Certificate {
            pem: Pem::File(p), ..
        } => Some(p.display().to_string()),
        _ => None,
    };
    let (mut w, _) = out.writer()?;
    let written = match out.format(Format::Table) {
        Format::Json | Format::Ndjson => {
            let doc = json!({
                "source": fetched.source,
                "tenant": tenant,
                "client_id": app,
                "audience": audience,
                "certificate": certificate,
                "expires": format_rfc3339(expires),
                "valid_for_s": valid_for.as_secs(),
            });
            writeln!(w, "{doc}")
        }
        _ => {
            let mut text = format!("source:    {}\n", fetched.source);
            text.push_str(&format!("tenant:    {}\n", tenant.unwrap_or("-")));
            text.push_str(&format!("client id: {}\n", app.unwrap_or("-")));
            text.push_str(&format!("audience:  {audience}\n"));
            if let Some(c) = &certificate {
                text.push_str(&format!("cert file: {c}\n"));
            }
            text.push_str(&format!(
                "expires:   {} (in {})\n",
                format_rfc3339(expires),
                format_duration(Duration::from_secs(valid_for.as_secs()))
            ));
            w.write_all(text.as_bytes())
        }
    };
    written.and_then(|()| w.flush()).map_err(Failure::output)
}
