//! Where tokens come from: a client secret, a certificate, workload identity, managed
//! identity, the Azure CLI, or the chain the Azure SDKs call `DefaultAzureCredential`.
//!
//! Each source is a sans-IO [`TokenExchange`]: it says what to do next ([`Step`]: an HTTP
//! request, a file to read, a process to run) and takes the result; time comes in as an
//! argument. Both clients run the same steps with their own IO, so both get every source
//! without code of their own. The engine's token cache decides *when* to fetch (refresh,
//! single flight, expiry); this module only says *how*.
//!
//! ```text
//!  new(source, endpoints, picked)
//!    │ poll_step(now, wall)
//!    ├─► Step::ReadFile(path) ──handle_file──┐   (a certificate PEM, a federated token)
//!    ├─► Step::Run(command) ──handle_process─┤   (az account get-access-token)
//!    ├─► Step::Http(request) ──handle_http───┤   (the token endpoint, managed identity)
//!    │                                       ▼
//!    │               the source's answer: a token, or why not; in a chain a failure
//!    │               moves to the next source, and the last failure lists them all
//!    └─► Step::Done(Ok(Fetched { token, source }) | Err(error))
//! ```
//!
//! Nothing secret (a secret, a key, an assertion, a token, the identity header) reaches
//! `Debug`, `Display` or an error.
//!
//! ```
//! use defender_core::credential::{Step, TokenExchange, TokenSource};
//! use defender_core::surface::{Cloud, Endpoints, Surface};
//! use std::time::{Instant, SystemTime};
//!
//! let source = TokenSource::managed_identity_imds(None);
//! let endpoints = Endpoints::new(Surface::DefenderXdr, Cloud::Global);
//! let mut ex = TokenExchange::new(&source, &endpoints, None);
//! # #[allow(clippy::disallowed_methods)]
//! let (now, wall) = (Instant::now(), SystemTime::now());
//! let Step::Http { request, .. } = ex.poll_step(now, wall) else { panic!() };
//! assert_eq!(request.headers()["Metadata"], "true");
//! assert!(request.uri().query().unwrap().contains("resource=https%3A%2F%2Fapi.security.microsoft.com"));
//! let body = br#"{"access_token":"x","expires_in":"3599","resource":"r","token_type":"Bearer"}"#;
//! ex.handle_http(Ok(http::Response::new(body.to_vec())), now, wall);
//! let Step::Done(Ok(fetched)) = ex.poll_step(now, wall) else { panic!() };
//! assert_eq!(fetched.source, "managed identity (IMDS)");
//! ```

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use crate::error::{Error, TransportError};
use crate::incidents::percent_encode;
use crate::surface::{is_secure_url, Endpoints};
use crate::token::{parse_token_response, AccessToken, Secret};

/// The IMDS token endpoint (Azure VMs, AKS nodes, Arc); plain HTTP on a link-local address
/// that never leaves the host.
pub const IMDS_ENDPOINT: &str = "http://169.254.169.254/metadata/identity/oauth2/token";

/// The `client_assertion_type` of a JWT client assertion (RFC 7523).
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How long a certificate's client assertion is valid: ten minutes, as MSAL makes them.
pub const ASSERTION_LIFETIME: Duration = Duration::from_secs(600);

/// How long an IMDS probe in the `auto` chain may take: one second, as the Azure SDKs
/// allow, so a machine off Azure moves on to the Azure CLI at once.
pub const IMDS_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The lifetime assumed for an Azure CLI token that gives only `expiresOn` (older CLIs
/// write it in local time, which core cannot know): short, so it is fetched again soon.
pub const AZ_LOCAL_TIME_LIFETIME: Duration = Duration::from_secs(240);

/// Where a token comes from.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum TokenSource {
    /// An app's client secret, on the v2 endpoint (`scope=…/.default`) or the v1 one
    /// (`resource=…`).
    Secret {
        /// The tenant.
        tenant: String,
        /// The app (client) id.
        client_id: String,
        /// The secret.
        secret: Secret,
        /// The v1 endpoint (`/{tenant}/oauth2/token`, `resource=`).
        v1: bool,
    },
    /// A client assertion signed with the app's certificate key (RS256, `x5t#S256`).
    Certificate {
        /// The tenant.
        tenant: String,
        /// The app (client) id.
        client_id: String,
        /// The PEM holding the private key and the certificate.
        pem: Pem,
    },
    /// Workload identity: a federated token, read again at every fetch (it rotates),
    /// is the client assertion.
    WorkloadIdentity {
        /// The tenant.
        tenant: String,
        /// The app (client) id.
        client_id: String,
        /// `AZURE_FEDERATED_TOKEN_FILE`.
        token_file: PathBuf,
        /// `AZURE_AUTHORITY_HOST`, when it differs from the endpoints' login base.
        authority: Option<String>,
    },
    /// Managed identity, over the App Service protocol or IMDS.
    ManagedIdentity {
        /// Which protocol, and where.
        endpoint: ManagedEndpoint,
        /// A user-assigned identity's client id (`None`: the system-assigned one).
        client_id: Option<String>,
    },
    /// `az account get-access-token`, run as a process.
    AzureCli {
        /// The program (`az`, found on `PATH` by the transport, or a full path).
        program: PathBuf,
        /// `--tenant`, when given.
        tenant: Option<String>,
    },
    /// The sources in order; the first that gives a token is used from then on. An
    /// entry that could not be configured carries why. A source that is not there is
    /// skipped; one that is there and fails ends the chain (see the Azure SDKs'
    /// `ChainedTokenCredential`).
    Chain(Vec<ChainEntry>),
}

/// One entry of a [`TokenSource::Chain`].
#[derive(Clone, Debug)]
pub struct ChainEntry {
    /// Its name in messages ("environment secret", …).
    pub name: &'static str,
    /// The source, or why it is not configured.
    pub source: Result<TokenSource, String>,
}

/// A managed identity endpoint.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ManagedEndpoint {
    /// App Service and Functions: `IDENTITY_ENDPOINT` with `X-IDENTITY-HEADER`.
    AppService {
        /// `IDENTITY_ENDPOINT` (HTTPS, or HTTP on loopback as App Service serves it).
        endpoint: String,
        /// `IDENTITY_HEADER`.
        header: Secret,
    },
    /// The instance metadata service.
    Imds {
        /// [`IMDS_ENDPOINT`], or another (an emulator on loopback).
        endpoint: String,
        /// How long the request may take (in the `auto` chain: [`IMDS_PROBE_TIMEOUT`]).
        timeout: Option<Duration>,
    },
}

/// A PEM with a private key and a certificate: a file read at each fetch, or bytes.
#[derive(Clone)]
pub enum Pem {
    /// `AZURE_CLIENT_CERTIFICATE_PATH`.
    File(PathBuf),
    /// The PEM itself.
    Bytes(std::sync::Arc<Vec<u8>>),
}

impl fmt::Debug for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pem::File(p) => f.debug_tuple("File").field(p).finish(),
            Pem::Bytes(_) => f.write_str("Bytes(<redacted>)"),
        }
    }
}

/// A token and the name of the source that gave it.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The token.
    pub token: AccessToken,
    /// The source's name ("client secret", "managed identity (IMDS)", …).
    pub source: &'static str,
    /// In a chain, the entry that gave it (a later fetch asks it alone).
    pub picked: Option<usize>,
}

/// A process for the transport to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Kill it if it has not ended by then (the token timeout): a hung `az` must not
    /// hold the worker that fetches tokens.
    pub timeout: Duration,
}

/// What a process came to.
#[derive(Debug, Clone, Default)]
pub struct ProcessOutput {
    /// Its exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Its standard output.
    pub stdout: Vec<u8>,
    /// Its standard error.
    pub stderr: Vec<u8>,
}

/// What the transport does next.
#[derive(Debug)]
#[must_use]
pub enum Step {
    /// Perform this request within `timeout` and answer with
    /// [`TokenExchange::handle_http`].
    Http {
        /// The request.
        request: http::Request<Vec<u8>>,
        /// The token timeout, or less (an IMDS probe).
        timeout: Duration,
    },
    /// Read this file whole; answer with [`TokenExchange::handle_file`].
    ReadFile(PathBuf),
    /// Run this process; answer with [`TokenExchange::handle_process`].
    Run(Command),
    /// The exchange ended.
    Done(Result<Fetched, Error>),
}

/// One fetch of a token from a [`TokenSource`]. See the module docs.
#[derive(Debug)]
pub struct TokenExchange {
    entries: Vec<(Option<usize>, &'static str, Result<TokenSource, String>)>,
    /// The entry being tried.
    at: usize,
    login_base: String,
    scope: String,
    state: State,
    failures: Vec<String>,
    done: Option<Result<Fetched, Error>>,
    timeout: Duration,
}

#[derive(Debug)]
enum State {
    /// The current entry has not started.
    Start,
    /// Waiting for the answer to a step.
    Awaiting(Awaited),
    /// The current entry's file or process answer is in; the next step follows from it.
    Ready(Ready),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Awaited {
    File,
    Process,
    Http { managed: bool },
}

#[derive(Debug)]
enum Ready {
    /// A certificate PEM's bytes.
    Pem(Secret),
    /// A federated token.
    Assertion(Secret),
}

impl TokenExchange {
    /// A fetch from `source` for the audience of `endpoints`. `picked` is the chain entry
    /// that gave the previous token ([`Fetched::picked`]): only it is asked again.
    pub fn new(source: &TokenSource, endpoints: &Endpoints, picked: Option<usize>) -> Self {
        let entries = match source {
            TokenSource::Chain(list) => list
                .iter()
                .enumerate()
                .filter(|(i, _)| picked.is_none_or(|p| p == *i))
                .map(|(i, e)| (Some(i), e.name, e.source.clone()))
                .collect(),
            other => vec![(None, other.name(), Ok(other.clone()))],
        };
        TokenExchange {
            entries,
            at: 0,
            login_base: endpoints.login_base.clone(),
            scope: endpoints.scope.clone(),
            state: State::Start,
            failures: Vec::new(),
            done: None,
            timeout: crate::engine::DEFAULT_TOKEN_TIMEOUT,
        }
    }

    /// Bounds each HTTP step by `timeout` (default
    /// [`DEFAULT_TOKEN_TIMEOUT`](crate::engine::DEFAULT_TOKEN_TIMEOUT)).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// What to do next. After [`Step::Done`] it says `Done` again with an error. `wall`
    /// dates a client assertion; `now` is taken for symmetry with the answers (no step
    /// needs the monotonic clock yet).
    pub fn poll_step(&mut self, now: Instant, wall: SystemTime) -> Step {
        let _ = now;
        loop {
            if let Some(done) = self.done.take() {
                return Step::Done(done);
            }
            let Some((_, _, source)) = self.entries.get(self.at) else {
                let message = if self.failures.is_empty() {
                    "the token exchange already ended".to_owned()
                } else {
                    format!("no credential gave a token: {}", self.failures.join("; "))
                };
                self.failures.clear();
                return Step::Done(Err(Error::TokenUnavailable { message }));
            };
            let source = match source {
                Ok(s) => s.clone(),
                Err(why) => {
                    let why = why.clone();
                    self.fail_entry(Error::TokenUnavailable { message: why });
                    continue;
                }
            };
            let state = std::mem::replace(&mut self.state, State::Start);
            match self.step(&source, state, wall) {
                Ok(Some(step)) => return step,
                Ok(None) => continue,
                Err(e) => self.fail_entry(e),
            }
        }
    }

    /// The answer to [`Step::Http`].
    pub fn handle_http(
        &mut self,
        answer: Result<http::Response<Vec<u8>>, TransportError>,
        now: Instant,
        wall: SystemTime,
    ) {
        let State::Awaiting(Awaited::Http { managed }) = self.state else {
            return;
        };
        self.state = State::Start;
        let result = match answer {
            Err(error) => Err(Error::Transport { attempts: 1, error }),
            Ok(resp) if managed => {
                parse_managed_response(resp.status().as_u16(), resp.body(), now, wall)
            }
            Ok(resp) => parse_token_response(resp.status().as_u16(), resp.body(), now),
        };
        self.settle(result);
    }

    /// The answer to [`Step::ReadFile`]: the bytes, or the IO error's message.
    pub fn handle_file(&mut self, answer: Result<Vec<u8>, String>) {
        if !matches!(self.state, State::Awaiting(Awaited::File)) {
            return;
        }
        self.state = State::Start;
        let path = match self.entries.get(self.at) {
            Some((
                _,
                _,
                Ok(TokenSource::Certificate {
                    pem: Pem::File(p), ..
                }),
            )) => Some(p),
            Some((_, _, Ok(TokenSource::WorkloadIdentity { token_file, .. }))) => Some(token_file),
            _ => None,
        }
        .map(|p| p.display().to_string())
        .unwrap_or_default();
        match answer {
            Err(e) => self.fail_entry(Error::TokenUnavailable {
                message: format!("could not read {path}: {e}"),
            }),
            Ok(bytes) => match self.entries.get(self.at) {
                Some((_, _, Ok(TokenSource::Certificate { .. }))) => {
                    self.state = State::Ready(Ready::Pem(Secret::new(
                        String::from_utf8_lossy(&bytes).into_owned(),
                    )));
                }
                _ => {
                    let token = String::from_utf8_lossy(&bytes).trim().to_owned();
                    if token.is_empty() {
                        self.fail_entry(Error::TokenUnavailable {
                            message: format!("the federated token file {path} is empty"),
                        });
                    } else {
                        self.state = State::Ready(Ready::Assertion(Secret::new(token)));
                    }
                }
            },
        }
    }

    /// The answer to [`Step::Run`]: what the process did, or why it could not start.
    pub fn handle_process(
        &mut self,
        answer: Result<ProcessOutput, String>,
        now: Instant,
        wall: SystemTime,
    ) {
        if !matches!(self.state, State::Awaiting(Awaited::Process)) {
            return;
        }
        self.state = State::Start;
        let result = match answer {
            Err(e) => Err(Error::TokenUnavailable {
                message: format!("the Azure CLI could not be run: {e}"),
            }),
            Ok(out) if out.code != Some(0) => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
                Err(Error::TokenUnavailable {
                    message: format!(
                        "the Azure CLI failed ({}): {}",
                        out.code
                            .map_or("killed".to_owned(), |c| format!("exit {c}")),
                        first.chars().take(200).collect::<String>()
                    ),
                })
            }
            Ok(out) => parse_az_output(&out.stdout, now, wall),
        };
        self.settle(result);
    }

    /// The current entry answered.
    fn settle(&mut self, result: Result<AccessToken, Error>) {
        match result {
            Ok(token) => {
                let (picked, name, _) = &self.entries[self.at];
                self.done = Some(Ok(Fetched {
                    token,
                    source: name,
                    picked: *picked,
                }));
                self.at = self.entries.len();
            }
            Err(e) => self.fail_entry(e),
        }
    }

    /// The current entry failed: alone, the error is the answer. In a chain, as in the
    /// Azure SDKs' `ChainedTokenCredential`, a source that is not there (not configured,
    /// no managed identity endpoint answering, no Azure CLI or no `az login`) is noted
    /// and the next one tried; a source that is there and failed (a refused secret, a
    /// token endpoint that does not answer) ends the chain with its own error, so a wrong
    /// secret is not hidden behind the sources after it.
    fn fail_entry(&mut self, error: Error) {
        self.state = State::Start;
        let (picked, name, source) = &self.entries[self.at];
        let unavailable = match source {
            Err(_) => true,
            // The chain's managed identity is a probe: whatever answers (or does not) at
            // the IMDS address off Azure, the chain goes on, as the Azure SDKs' does.
            Ok(TokenSource::ManagedIdentity { .. } | TokenSource::AzureCli { .. }) => true,
            Ok(_) => false,
        };
        if picked.is_none() || !unavailable {
            self.done = Some(Err(error));
            self.at = self.entries.len();
            return;
        }
        let why = match error {
            Error::TokenUnavailable { message } => message,
            other => other.to_string(),
        };
        self.failures.push(format!("{name}: {why}"));
        self.at += 1;
    }

    /// The next step of the current entry (`None`: look again).
    fn step(
        &mut self,
        source: &TokenSource,
        state: State,
        wall: SystemTime,
    ) -> Result<Option<Step>, Error> {
        let resource = self.scope.trim_end_matches("/.default").to_owned();
        match (source, state) {
            (_, State::Awaiting(a)) => {
                // Asked again before the answer: keep waiting (the transport answers once).
                self.state = State::Awaiting(a);
                Err(Error::Internal {
                    message: "a token step was polled before its answer".into(),
                })
            }
            (TokenSource::Chain(_), _) => Err(Error::TokenUnavailable {
                message: "a chain inside a chain".into(),
            }),
            (
                TokenSource::Secret {
                    tenant,
                    client_id,
                    secret,
                    v1,
                },
                _,
            ) => {
                let audience = if *v1 {
                    format!("resource={}", percent_encode(&resource))
                } else {
                    format!("scope={}", percent_encode(&self.scope))
                };
                let body = format!(
                    "client_id={}&client_secret={}&grant_type=client_credentials&{audience}",
                    percent_encode(client_id),
                    percent_encode(secret.expose()),
                );
                let uri = token_endpoint(&self.login_base, tenant, *v1);
                self.http_post(&uri, body)
            }
            (TokenSource::Certificate { pem, .. }, State::Start) => match pem {
                Pem::File(path) => {
                    self.state = State::Awaiting(Awaited::File);
                    Ok(Some(Step::ReadFile(path.clone())))
                }
                Pem::Bytes(b) => {
                    self.state = State::Ready(Ready::Pem(Secret::new(
                        String::from_utf8_lossy(b).into_owned(),
                    )));
                    Ok(None)
                }
            },
            (
                TokenSource::Certificate {
                    tenant, client_id, ..
                },
                State::Ready(Ready::Pem(pem)),
            ) => {
                let uri = token_endpoint(&self.login_base, tenant, false);
                let assertion = sign_assertion(pem.expose().as_bytes(), client_id, &uri, wall)?;
                self.assertion_request(&uri, client_id, &assertion)
            }
            (TokenSource::WorkloadIdentity { token_file, .. }, State::Start) => {
                self.state = State::Awaiting(Awaited::File);
                Ok(Some(Step::ReadFile(token_file.clone())))
            }
            (
                TokenSource::WorkloadIdentity {
                    tenant,
                    client_id,
                    authority,
                    ..
                },
                State::Ready(Ready::Assertion(token)),
            ) => {
                let base = authority.as_deref().unwrap_or(&self.login_base);
                let uri = token_endpoint(base, tenant, false);
                self.assertion_request(&uri, client_id, &token)
            }
            (
                TokenSource::ManagedIdentity {
                    endpoint,
                    client_id,
                },
                _,
            ) => {
                let mut query = match endpoint {
                    ManagedEndpoint::AppService { .. } => "api-version=2019-08-01",
                    ManagedEndpoint::Imds { .. } => "api-version=2018-02-01",
                }
                .to_owned();
                query.push_str(&format!("&resource={}", percent_encode(&resource)));
                if let Some(id) = client_id {
                    query.push_str(&format!("&client_id={}", percent_encode(id)));
                }
                let (url, header, timeout) = match endpoint {
                    ManagedEndpoint::AppService { endpoint, header } => {
                        if !is_secure_url(endpoint) {
                            return Err(Error::InsecureUrl {
                                url: endpoint.clone(),
                            });
                        }
                        (endpoint, ("X-IDENTITY-HEADER", header.expose()), None)
                    }
                    ManagedEndpoint::Imds { endpoint, timeout } => {
                        if !is_secure_url(endpoint) && !is_imds(endpoint) {
                            return Err(Error::InsecureUrl {
                                url: endpoint.clone(),
                            });
                        }
                        (endpoint, ("Metadata", "true"), *timeout)
                    }
                };
                let sep = if url.contains('?') { '&' } else { '?' };
                let request = http::Request::get(format!("{url}{sep}{query}"))
                    .header(header.0, header.1)
                    .header(http::header::ACCEPT, "application/json")
                    .body(Vec::new())
                    .map_err(|_| {
                        Error::InvalidRequest(format!("bad managed identity endpoint `{url}`"))
                    })?;
                self.state = State::Awaiting(Awaited::Http { managed: true });
                let timeout = timeout.map_or(self.timeout, |t| t.min(self.timeout));
                Ok(Some(Step::Http { request, timeout }))
            }
            (TokenSource::AzureCli { program, tenant }, _) => {
                let mut args: Vec<String> =
                    ["account", "get-access-token", "--resource", &resource]
                        .iter()
                        .map(|s| (*s).to_owned())
                        .collect();
                if let Some(t) = tenant {
                    args.extend(["--tenant".to_owned(), t.clone()]);
                }
                args.extend(["-o".to_owned(), "json".to_owned()]);
                self.state = State::Awaiting(Awaited::Process);
                Ok(Some(Step::Run(Command {
                    program: program.clone(),
                    args,
                    // Killed a little before the engine stops waiting, so the caller
                    // hears why.
                    timeout: self.timeout.mul_f64(0.9),
                })))
            }
            (_, State::Ready(_)) => Err(Error::Internal {
                message: "a token step out of order".into(),
            }),
        }
    }

    fn assertion_request(
        &mut self,
        uri: &str,
        client_id: &str,
        assertion: &Secret,
    ) -> Result<Option<Step>, Error> {
        let body = format!(
            "client_id={}&client_assertion_type={}&client_assertion={}&grant_type=client_credentials&scope={}",
            percent_encode(client_id),
            percent_encode(JWT_BEARER),
            percent_encode(assertion.expose()),
            percent_encode(&self.scope),
        );
        self.http_post(uri, body)
    }

    fn http_post(&mut self, uri: &str, body: String) -> Result<Option<Step>, Error> {
        if !is_secure_url(uri) {
            return Err(Error::InsecureUrl {
                url: uri.to_owned(),
            });
        }
        let request = http::Request::post(uri)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json")
            .body(body.into_bytes())
            .map_err(|_| Error::InvalidRequest(format!("bad token endpoint `{uri}`")))?;
        self.state = State::Awaiting(Awaited::Http { managed: false });
        Ok(Some(Step::Http {
            request,
            timeout: self.timeout,
        }))
    }
}

impl TokenSource {
    /// The system-assigned (or, with `client_id`, a user-assigned) managed identity over
    /// IMDS.
    pub fn managed_identity_imds(client_id: Option<String>) -> TokenSource {
        TokenSource::ManagedIdentity {
            endpoint: ManagedEndpoint::Imds {
                endpoint: IMDS_ENDPOINT.to_owned(),
                timeout: None,
            },
            client_id,
        }
    }

    /// Its name in messages and in `defender auth`.
    pub fn name(&self) -> &'static str {
        match self {
            TokenSource::Secret { v1: false, .. } => "client secret",
            TokenSource::Secret { v1: true, .. } => "client secret (v1)",
            TokenSource::Certificate { .. } => "certificate",
            TokenSource::WorkloadIdentity { .. } => "workload identity",
            TokenSource::ManagedIdentity {
                endpoint: ManagedEndpoint::AppService { .. },
                ..
            } => "managed identity (App Service)",
            TokenSource::ManagedIdentity { .. } => "managed identity (IMDS)",
            TokenSource::AzureCli { .. } => "Azure CLI",
            TokenSource::Chain(_) => "auto",
        }
    }

    /// One source from the Azure SDKs' environment variables, read through `get` (pure):
    /// `kind` is one of `secret`, `certificate`, `workload-identity`, `managed-identity`,
    /// `azure-cli`, or `auto` for the chain `DefaultAzureCredential` tries, in its order
    /// (environment secret, environment certificate, workload identity, managed identity,
    /// Azure CLI). `tenant` and `client_id` given here win over the environment's.
    pub fn from_env(
        kind: &str,
        tenant: Option<&str>,
        client_id: Option<&str>,
        get: &dyn Fn(&str) -> Option<String>,
    ) -> Result<TokenSource, String> {
        let var = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let need = |k: &str| var(k).ok_or_else(|| format!("{k} is not set"));
        let tenant_id = || {
            tenant
                .map(str::to_owned)
                .or_else(|| var("AZURE_TENANT_ID"))
                .ok_or_else(|| "AZURE_TENANT_ID is not set".to_owned())
        };
        let app = || {
            client_id
                .map(str::to_owned)
                .or_else(|| var("AZURE_CLIENT_ID"))
                .ok_or_else(|| "AZURE_CLIENT_ID is not set".to_owned())
        };
        match kind {
            "secret" => Ok(TokenSource::Secret {
                tenant: tenant_id()?,
                client_id: app()?,
                secret: Secret::new(need("AZURE_CLIENT_SECRET")?),
                v1: false,
            }),
            "certificate" => Ok(TokenSource::Certificate {
                tenant: tenant_id()?,
                client_id: app()?,
                pem: Pem::File(need("AZURE_CLIENT_CERTIFICATE_PATH")?.into()),
            }),
            "workload-identity" => Ok(TokenSource::WorkloadIdentity {
                tenant: tenant_id()?,
                client_id: app()?,
                token_file: need("AZURE_FEDERATED_TOKEN_FILE")?.into(),
                authority: var("AZURE_AUTHORITY_HOST"),
            }),
            "managed-identity" => Ok(TokenSource::ManagedIdentity {
                endpoint: match (var("IDENTITY_ENDPOINT"), var("IDENTITY_HEADER")) {
                    (Some(endpoint), Some(header)) => ManagedEndpoint::AppService {
                        endpoint,
                        header: Secret::new(header),
                    },
                    _ => ManagedEndpoint::Imds {
                        endpoint: IMDS_ENDPOINT.to_owned(),
                        timeout: None,
                    },
                },
                client_id: client_id.map(str::to_owned).or_else(|| var("AZURE_CLIENT_ID")),
            }),
            "azure-cli" => Ok(TokenSource::AzureCli {
                program: "az".into(),
                tenant: tenant.map(str::to_owned).or_else(|| var("AZURE_TENANT_ID")),
            }),
            "auto" => {
                let entry = |name, kind: &str| ChainEntry {
                    name,
                    source: TokenSource::from_env(kind, tenant, client_id, get),
                };
                let mut managed = entry("managed identity", "managed-identity");
                if let Ok(TokenSource::ManagedIdentity {
                    endpoint: ManagedEndpoint::Imds { timeout, .. },
                    ..
                }) = &mut managed.source
                {
                    *timeout = Some(IMDS_PROBE_TIMEOUT);
                }
                Ok(TokenSource::Chain(vec![
                    entry("environment secret", "secret"),
                    entry("environment certificate", "certificate"),
                    entry("workload identity", "workload-identity"),
                    managed,
                    entry("Azure CLI", "azure-cli"),
                ]))
            }
            other => Err(format!(
                "unknown credential `{other}` (use auto, secret, certificate, workload-identity, managed-identity or azure-cli)"
            )),
        }
    }

    /// The source that gave a token: in a chain, the entry [`Fetched::picked`] names.
    pub fn picked(&self, picked: Option<usize>) -> &TokenSource {
        match (self, picked) {
            (TokenSource::Chain(list), Some(i)) => match list.get(i).map(|e| &e.source) {
                Some(Ok(s)) => s,
                _ => self,
            },
            _ => self,
        }
    }

    /// What it asks a token for: the v2 scope (`…/.default`) for an app's own
    /// credentials, the resource for v1, managed identity and the Azure CLI.
    pub fn audience(&self, endpoints: &Endpoints) -> String {
        match self {
            TokenSource::Secret { v1: false, .. }
            | TokenSource::Certificate { .. }
            | TokenSource::WorkloadIdentity { .. }
            | TokenSource::Chain(_) => endpoints.scope.clone(),
            _ => endpoints.scope.trim_end_matches("/.default").to_owned(),
        }
    }

    /// The tenant and app it names, when it names them (for display and quota scope).
    pub fn identity(&self) -> (Option<&str>, Option<&str>) {
        match self {
            TokenSource::Secret {
                tenant, client_id, ..
            }
            | TokenSource::Certificate {
                tenant, client_id, ..
            }
            | TokenSource::WorkloadIdentity {
                tenant, client_id, ..
            } => (Some(tenant), Some(client_id)),
            TokenSource::ManagedIdentity { client_id, .. } => (None, client_id.as_deref()),
            TokenSource::AzureCli { tenant, .. } => (tenant.as_deref(), None),
            TokenSource::Chain(_) => (None, None),
        }
    }
}

fn token_endpoint(base: &str, tenant: &str, v1: bool) -> String {
    format!(
        "{}/{}/oauth2/{}token",
        base.trim_end_matches('/'),
        percent_encode(tenant),
        if v1 { "" } else { "v2.0/" }
    )
}

/// Plain HTTP to the link-local IMDS address.
fn is_imds(url: &str) -> bool {
    url.parse::<http::Uri>()
        .is_ok_and(|u| u.scheme_str() == Some("http") && u.host() == Some("169.254.169.254"))
}

/// A client assertion: a JWT signed RS256 with the PEM's key, `x5t#S256` the SHA-256 of
/// the PEM's (first) certificate, valid [`ASSERTION_LIFETIME`] from `wall`, a fresh `jti`.
pub fn sign_assertion(
    pem: &[u8],
    client_id: &str,
    audience: &str,
    wall: SystemTime,
) -> Result<Secret, Error> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &str| Error::TokenUnavailable {
        message: format!("the client certificate PEM {what}"),
    };
    let cert = CertificateDer::pem_slice_iter(pem)
        .next()
        .and_then(Result::ok)
        .ok_or_else(|| bad("holds no certificate"))?;
    let key = PrivateKeyDer::from_pem_slice(pem).map_err(|_| bad("holds no private key"))?;
    let pair = match &key {
        PrivateKeyDer::Pkcs8(k) => ring::signature::RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
        PrivateKeyDer::Pkcs1(k) => ring::signature::RsaKeyPair::from_der(k.secret_pkcs1_der()),
        _ => {
            return Err(bad(
                "holds a key that is not RSA (Entra ID takes RS256 or PS256)",
            ))
        }
    }
    .map_err(|_| bad("holds an RSA key ring cannot use"))?;
    let rng = ring::rand::SystemRandom::new();
    let mut jti = [0u8; 16];
    ring::rand::SecureRandom::fill(&rng, &mut jti)
        .map_err(|_| bad("could not be used: no randomness"))?;
    let thumb = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    let header =
        serde_json::json!({"alg": "RS256", "typ": "JWT", "x5t#S256": b64url(thumb.as_ref())});
    let secs = wall
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let claims = serde_json::json!({
        "aud": audience,
        "iss": client_id,
        "sub": client_id,
        "jti": jti.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        "nbf": secs,
        "iat": secs,
        "exp": secs + ASSERTION_LIFETIME.as_secs(),
    });
    let signed = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let mut sig = vec![0; pair.public().modulus_len()];
    pair.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &rng,
        signed.as_bytes(),
        &mut sig,
    )
    .map_err(|_| bad("key could not sign"))?;
    Ok(Secret::new(format!("{signed}.{}", b64url(&sig))))
}

/// Base64url without padding (RFC 7515).
fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let mut n = 0u32;
        for (i, b) in chunk.iter().enumerate() {
            n |= u32::from(*b) << (16 - 8 * i);
        }
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// A number, or a string holding one (managed identity gives strings).
fn seconds(v: &Option<serde_json::Value>) -> Option<u64> {
    match v {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
}

#[derive(Deserialize)]
struct ManagedBody {
    access_token: String,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
    #[serde(default)]
    expires_on: Option<serde_json::Value>,
}

/// A managed identity answer: `expires_in` (IMDS, a string) or `expires_on` (App
/// Service, epoch seconds as a string). A refusal reads as the token endpoint's.
pub fn parse_managed_response(
    status: u16,
    body: &[u8],
    now: Instant,
    wall: SystemTime,
) -> Result<AccessToken, Error> {
    if !(200..300).contains(&status) {
        return parse_token_response(status, body, now);
    }
    let parsed: ManagedBody = serde_json::from_slice(body).map_err(|e| Error::Decode {
        what: "managed identity token",
        len: body.len(),
        message: e.to_string(),
    })?;
    if parsed.access_token.is_empty() {
        return Err(Error::Decode {
            what: "managed identity token",
            len: body.len(),
            message: "empty access_token".into(),
        });
    }
    let wall_secs = wall
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let secs = seconds(&parsed.expires_in)
        .or_else(|| seconds(&parsed.expires_on).map(|on| on.saturating_sub(wall_secs)))
        .unwrap_or(3599)
        .min(86_400 * 7);
    Ok(AccessToken::new(
        Secret::new(parsed.access_token),
        now,
        now + Duration::from_secs(secs),
    ))
}

#[derive(Deserialize)]
struct AzBody {
    #[serde(rename = "accessToken")]
    access_token: String,
    #[serde(default)]
    expires_on: Option<serde_json::Value>,
    #[serde(default, rename = "expiresOn")]
    expires_on_local: Option<String>,
}

/// `az account get-access-token -o json`: `accessToken`, and `expires_on` (epoch seconds)
/// or, from older CLIs, only `expiresOn` in local time (then the token is taken as good
/// for [`AZ_LOCAL_TIME_LIFETIME`]).
pub fn parse_az_output(
    stdout: &[u8],
    now: Instant,
    wall: SystemTime,
) -> Result<AccessToken, Error> {
    let parsed: AzBody = serde_json::from_slice(stdout).map_err(|e| Error::Decode {
        what: "Azure CLI token",
        len: stdout.len(),
        message: e.to_string(),
    })?;
    if parsed.access_token.is_empty() {
        return Err(Error::Decode {
            what: "Azure CLI token",
            len: stdout.len(),
            message: "empty accessToken".into(),
        });
    }
    let wall_secs = wall
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let life = match seconds(&parsed.expires_on) {
        Some(on) => Duration::from_secs(on.saturating_sub(wall_secs).min(86_400 * 7)),
        None if parsed.expires_on_local.is_some() => AZ_LOCAL_TIME_LIFETIME,
        None => {
            return Err(Error::Decode {
                what: "Azure CLI token",
                len: stdout.len(),
                message: "no expires_on or expiresOn".into(),
            })
        }
    };
    Ok(AccessToken::new(
        Secret::new(parsed.access_token),
        now,
        now + life,
    ))
}

#[cfg(test)]
mod tests;
