use super::*;
use crate::surface::{Cloud, Surface};

const KEY: &str = include_str!("../../tests/fixtures/app-key.pem");
const CERT: &str = include_str!("../../tests/fixtures/app-cert.pem");

#[allow(clippy::disallowed_methods)] // tests need one real instant to count from
fn clocks() -> (Instant, SystemTime) {
    (
        Instant::now(),
        UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    )
}

fn xdr() -> Endpoints {
    Endpoints::new(Surface::DefenderXdr, Cloud::Global)
}

fn refused(body: &str) -> Result<http::Response<Vec<u8>>, TransportError> {
    let mut r = http::Response::new(body.as_bytes().to_vec());
    *r.status_mut() = http::StatusCode::UNAUTHORIZED;
    Ok(r)
}

fn ok(body: &str) -> Result<http::Response<Vec<u8>>, TransportError> {
    Ok(http::Response::new(body.as_bytes().to_vec()))
}

fn form(req: &http::Request<Vec<u8>>) -> String {
    String::from_utf8(req.body().clone()).unwrap()
}

fn http_step(ex: &mut TokenExchange) -> (http::Request<Vec<u8>>, Duration) {
    let (now, wall) = clocks();
    match ex.poll_step(now, wall) {
        Step::Http { request, timeout } => (request, timeout),
        other => panic!("{other:?}"),
    }
}

fn done(ex: &mut TokenExchange) -> Result<Fetched, Error> {
    let (now, wall) = clocks();
    match ex.poll_step(now, wall) {
        Step::Done(r) => r,
        other => panic!("{other:?}"),
    }
}

const TOKEN: &str = r#"{"access_token":"tok-SECRET","expires_in":3599}"#;

#[test]
fn secret_v2_and_v1() {
    for v1 in [false, true] {
        let src = TokenSource::Secret {
            tenant: "t".into(),
            client_id: "app".into(),
            secret: Secret::new("s&cret-SECRET"),
            v1,
        };
        assert!(!format!("{src:?}").contains("SECRET"));
        let mut ex = TokenExchange::new(&src, &xdr(), None);
        let (req, _) = http_step(&mut ex);
        let body = form(&req);
        assert!(body.contains("client_secret=s%26cret-SECRET"));
        if v1 {
            assert_eq!(
                req.uri(),
                "https://login.microsoftonline.com/t/oauth2/token"
            );
            assert!(body.ends_with("resource=https%3A%2F%2Fapi.security.microsoft.com"));
        } else {
            assert_eq!(
                req.uri(),
                "https://login.microsoftonline.com/t/oauth2/v2.0/token"
            );
            assert!(body.ends_with("scope=https%3A%2F%2Fapi.security.microsoft.com%2F.default"));
        }
        let (now, wall) = clocks();
        ex.handle_http(ok(TOKEN), now, wall);
        let f = done(&mut ex).unwrap();
        assert_eq!(f.token.expires_at, now + Duration::from_secs(3599));
        assert_eq!(f.picked, None);
    }
}

fn verify_jwt(jwt: &str, aud: &str) -> serde_json::Value {
    use rustls_pki_types::pem::PemObject;
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);
    let dec = |s: &str| {
        // base64url decode, test-only
        const A: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut bits = 0u32;
        let mut n = 0;
        let mut out = Vec::new();
        for c in s.chars() {
            bits = (bits << 6) | A.find(c).unwrap() as u32;
            n += 6;
            if n >= 8 {
                n -= 8;
                out.push((bits >> n) as u8);
                bits &= (1 << n) - 1;
            }
        }
        out
    };
    let header: serde_json::Value = serde_json::from_slice(&dec(parts[0])).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&dec(parts[1])).unwrap();
    assert_eq!(header["alg"], "RS256");
    let cert = rustls_pki_types::CertificateDer::from_pem_slice(CERT.as_bytes()).unwrap();
    let thumb = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    assert_eq!(header["x5t#S256"], b64url(thumb.as_ref()));
    let key = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(KEY.as_bytes()).unwrap();
    let pair = ring::signature::RsaKeyPair::from_pkcs8(key.secret_pkcs8_der()).unwrap();
    let public = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        pair.public().as_ref().to_vec(),
    );
    public
        .verify(
            format!("{}.{}", parts[0], parts[1]).as_bytes(),
            &dec(parts[2]),
        )
        .expect("the signature verifies");
    assert_eq!(claims["aud"], aud);
    assert_eq!(claims["iss"], "app");
    assert_eq!(claims["sub"], "app");
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["nbf"].as_u64().unwrap(),
        600
    );
    claims
}

fn assertion_of(req: &http::Request<Vec<u8>>) -> String {
    let body = form(req);
    assert!(body.contains(
        "client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer"
    ));
    let a = body
        .split('&')
        .find_map(|kv| kv.strip_prefix("client_assertion="))
        .unwrap();
    a.replace("%2D", "-")
        .replace("%5F", "_")
        .replace("%2E", ".")
}

#[test]
fn certificate_from_a_file_and_from_bytes() {
    let pem = format!("{KEY}{CERT}");
    let (now, wall) = clocks();
    // From a file: read at every fetch.
    let src = TokenSource::Certificate {
        tenant: "t".into(),
        client_id: "app".into(),
        pem: Pem::File("/secrets/app.pem".into()),
    };
    let mut jtis = Vec::new();
    for _ in 0..2 {
        let mut ex = TokenExchange::new(&src, &xdr(), None);
        let Step::ReadFile(p) = ex.poll_step(now, wall) else {
            panic!()
        };
        assert_eq!(p, PathBuf::from("/secrets/app.pem"));
        ex.handle_file(Ok(pem.clone().into_bytes()));
        let (req, _) = http_step(&mut ex);
        let aud = "https://login.microsoftonline.com/t/oauth2/v2.0/token";
        assert_eq!(req.uri(), aud);
        let claims = verify_jwt(&assertion_of(&req), aud);
        assert_eq!(claims["nbf"], 1_800_000_000u64);
        jtis.push(claims["jti"].clone());
        ex.handle_http(ok(TOKEN), now, wall);
        assert_eq!(done(&mut ex).unwrap().source, "certificate");
    }
    assert_ne!(jtis[0], jtis[1], "a fresh jti each time");
    // From bytes: no step before the request; nothing of the PEM in Debug.
    let src = TokenSource::Certificate {
        tenant: "t".into(),
        client_id: "app".into(),
        pem: Pem::Bytes(std::sync::Arc::new(pem.clone().into_bytes())),
    };
    assert!(!format!("{src:?}").contains("BEGIN"));
    let mut ex = TokenExchange::new(&src, &xdr(), None);
    let (req, _) = http_step(&mut ex);
    verify_jwt(
        &assertion_of(&req),
        "https://login.microsoftonline.com/t/oauth2/v2.0/token",
    );
    // A file that holds no key, or is missing: a clear error, no PEM in it.
    let mut ex = TokenExchange::new(&src_file(), &xdr(), None);
    let _ = ex.poll_step(now, wall);
    ex.handle_file(Ok(CERT.as_bytes().to_vec()));
    let e = done(&mut ex).unwrap_err().to_string();
    assert!(e.contains("no private key"), "{e}");
    let mut ex = TokenExchange::new(&src_file(), &xdr(), None);
    let _ = ex.poll_step(now, wall);
    ex.handle_file(Err("No such file or directory".into()));
    let e = done(&mut ex).unwrap_err().to_string();
    assert!(
        e.contains("could not read /secrets/app.pem: No such file"),
        "{e}"
    );
}

fn src_file() -> TokenSource {
    TokenSource::Certificate {
        tenant: "t".into(),
        client_id: "app".into(),
        pem: Pem::File("/secrets/app.pem".into()),
    }
}

#[test]
fn workload_identity_reads_the_file_every_time() {
    let src = TokenSource::WorkloadIdentity {
        tenant: "t".into(),
        client_id: "app".into(),
        token_file: "/var/run/token".into(),
        authority: Some("https://login.example.com/".into()),
    };
    let (now, wall) = clocks();
    for token in ["fed-one", "fed-two"] {
        let mut ex = TokenExchange::new(&src, &xdr(), None);
        let Step::ReadFile(p) = ex.poll_step(now, wall) else {
            panic!()
        };
        assert_eq!(p, PathBuf::from("/var/run/token"));
        ex.handle_file(Ok(format!("{token}\n").into_bytes()));
        let (req, _) = http_step(&mut ex);
        assert_eq!(req.uri(), "https://login.example.com/t/oauth2/v2.0/token");
        assert_eq!(assertion_of(&req), token);
        ex.handle_http(
            refused(r#"{"error":"invalid_client","error_description":"AADSTS700213: no"}"#),
            now,
            wall,
        );
        assert!(matches!(done(&mut ex), Err(Error::Auth(_))));
    }
}

#[test]
fn managed_identity_both_protocols() {
    let (now, wall) = clocks();
    let app = TokenSource::ManagedIdentity {
        endpoint: ManagedEndpoint::AppService {
            endpoint: "http://127.0.0.1:41000/msi/token".into(),
            header: Secret::new("hdr-SECRET"),
        },
        client_id: Some("uami".into()),
    };
    assert!(!format!("{app:?}").contains("SECRET"));
    let graph = Endpoints::new(Surface::Graph, Cloud::Global);
    let mut ex = TokenExchange::new(&app, &graph, None);
    let (req, timeout) = http_step(&mut ex);
    assert_eq!(timeout, crate::engine::DEFAULT_TOKEN_TIMEOUT);
    assert_eq!(req.method(), http::Method::GET);
    assert_eq!(
        req.uri(),
        "http://127.0.0.1:41000/msi/token?api-version=2019-08-01&resource=https%3A%2F%2Fgraph.microsoft.com&client_id=uami"
    );
    assert_eq!(req.headers()["X-IDENTITY-HEADER"], "hdr-SECRET");
    // App Service: expires_on, epoch seconds as a string.
    ex.handle_http(
        ok(r#"{"access_token":"x","expires_on":"1800003000","resource":"r","token_type":"Bearer","client_id":"uami"}"#),
        now,
        wall,
    );
    assert_eq!(
        done(&mut ex).unwrap().token.expires_at,
        now + Duration::from_secs(3000)
    );
    // IMDS only at its link-local address, or loopback.
    let imds = TokenSource::managed_identity_imds(None);
    let mut ex = TokenExchange::new(&imds, &xdr(), None);
    let (req, _) = http_step(&mut ex);
    assert_eq!(
        req.uri(),
        "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fapi.security.microsoft.com"
    );
    ex.handle_http(
        ok(r#"{"access_token":"x","expires_in":"86399"}"#),
        now,
        wall,
    );
    assert_eq!(
        done(&mut ex).unwrap().token.expires_at,
        now + Duration::from_secs(86399)
    );
    for url in [
        "http://10.0.0.4/msi/token",
        "http://169.254.169.254.evil.com/x",
    ] {
        for src in [
            TokenSource::ManagedIdentity {
                endpoint: ManagedEndpoint::AppService {
                    endpoint: url.into(),
                    header: Secret::new("h"),
                },
                client_id: None,
            },
            TokenSource::ManagedIdentity {
                endpoint: ManagedEndpoint::Imds {
                    endpoint: url.into(),
                    timeout: None,
                },
                client_id: None,
            },
        ] {
            let mut ex = TokenExchange::new(&src, &xdr(), None);
            assert!(
                matches!(done(&mut ex), Err(Error::InsecureUrl { .. })),
                "{url}"
            );
        }
    }
}

#[test]
fn azure_cli() {
    let (now, wall) = clocks();
    let src = TokenSource::AzureCli {
        program: "/opt/az".into(),
        tenant: Some("t".into()),
    };
    let mut ex = TokenExchange::new(&src, &xdr(), None);
    let Step::Run(cmd) = ex.poll_step(now, wall) else {
        panic!()
    };
    assert_eq!(cmd.program, PathBuf::from("/opt/az"));
    assert_eq!(
        cmd.args.join(" "),
        "account get-access-token --resource https://api.security.microsoft.com --tenant t -o json"
    );
    let out = br#"{"accessToken":"x","expiresOn":"2027-01-15 08:00:00.000000","expires_on":1800001000,"tenant":"t","tokenType":"Bearer"}"#;
    ex.handle_process(
        Ok(ProcessOutput {
            code: Some(0),
            stdout: out.to_vec(),
            stderr: vec![],
        }),
        now,
        wall,
    );
    assert_eq!(
        done(&mut ex).unwrap().token.expires_at,
        now + Duration::from_secs(1000)
    );
    // Only the local-time form: a short lifetime.
    let t = parse_az_output(
        br#"{"accessToken":"x","expiresOn":"2027-01-15 08:00:00.000000"}"#,
        now,
        wall,
    )
    .unwrap();
    assert_eq!(t.expires_at, now + AZ_LOCAL_TIME_LIFETIME);
    // A failing CLI: its first error line, never stdout.
    let mut ex = TokenExchange::new(&src, &xdr(), None);
    let _ = ex.poll_step(now, wall);
    ex.handle_process(
        Ok(ProcessOutput {
            code: Some(1),
            stdout: b"tok-SECRET".to_vec(),
            stderr: b"\nERROR: Please run 'az login' to setup account.\n".to_vec(),
        }),
        now,
        wall,
    );
    let e = done(&mut ex).unwrap_err().to_string();
    assert!(e.contains("exit 1): ERROR: Please run 'az login'"), "{e}");
    assert!(!e.contains("SECRET"));
}

fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |k| {
        vars.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| (*v).to_owned())
    }
}

#[test]
fn auto_tries_each_in_order_and_lists_every_failure() {
    let (now, wall) = clocks();
    // Nothing configured: the environment sources say what is missing; managed identity
    // (an IMDS probe with a short timeout) and the CLI fail when tried.
    let src = TokenSource::from_env("auto", None, None, &env(&[])).unwrap();
    let mut ex = TokenExchange::new(&src, &xdr(), None);
    let (req, timeout) = http_step(&mut ex);
    assert_eq!(req.uri().host(), Some("169.254.169.254"));
    assert_eq!(timeout, IMDS_PROBE_TIMEOUT);
    ex.handle_http(
        Err(TransportError::new(
            crate::error::TransportErrorKind::Timeout,
            "no answer within 1s",
        )),
        now,
        wall,
    );
    let Step::Run(cmd) = ex.poll_step(now, wall) else {
        panic!()
    };
    assert_eq!(cmd.program, PathBuf::from("az"));
    ex.handle_process(Err("No such file or directory".into()), now, wall);
    let e = done(&mut ex).unwrap_err().to_string();
    for part in [
        "environment secret: AZURE_TENANT_ID is not set; ",
        "environment certificate: AZURE_TENANT_ID is not set; ",
        "workload identity: AZURE_TENANT_ID is not set; ",
        "managed identity: ",
        "no answer within 1s",
        "Azure CLI: the Azure CLI could not be run: No such file",
    ] {
        assert!(e.contains(part), "{part} in {e}");
    }
    // A secret in the environment is there: refused, it ends the chain with its error.
    let vars: &'static [(&'static str, &'static str)] = &[
        ("AZURE_TENANT_ID", "t"),
        ("AZURE_CLIENT_ID", "app"),
        ("AZURE_CLIENT_SECRET", "s-SECRET"),
        ("AZURE_FEDERATED_TOKEN_FILE", "/f"),
    ];
    let src = TokenSource::from_env("auto", None, None, &env(vars)).unwrap();
    assert!(!format!("{src:?}").contains("SECRET"));
    let mut ex = TokenExchange::new(&src, &xdr(), None);
    let (req, _) = http_step(&mut ex);
    assert!(form(&req).contains("client_secret="));
    ex.handle_http(
        refused(r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided."}"#),
        now,
        wall,
    );
    assert!(matches!(done(&mut ex), Err(Error::Auth(_))));
    // Without it, workload identity is the first there: picked; the next fetch asks it
    // alone.
    let vars: &'static [(&'static str, &'static str)] = &[
        ("AZURE_TENANT_ID", "t"),
        ("AZURE_CLIENT_ID", "app"),
        ("AZURE_FEDERATED_TOKEN_FILE", "/f"),
    ];
    let src = TokenSource::from_env("auto", None, None, &env(vars)).unwrap();
    let mut ex = TokenExchange::new(&src, &xdr(), None);
    let Step::ReadFile(p) = ex.poll_step(now, wall) else {
        panic!()
    };
    assert_eq!(p, PathBuf::from("/f"));
    ex.handle_file(Ok(b"fed".to_vec()));
    let _ = http_step(&mut ex);
    ex.handle_http(ok(TOKEN), now, wall);
    let f = done(&mut ex).unwrap();
    assert_eq!((f.source, f.picked), ("workload identity", Some(2)));
    let mut ex = TokenExchange::new(&src, &xdr(), f.picked);
    assert!(matches!(ex.poll_step(now, wall), Step::ReadFile(_)));
    // Unknown kinds are refused with the list.
    assert!(TokenSource::from_env("kerberos", None, None, &env(&[]))
        .unwrap_err()
        .contains("managed-identity"));
}
