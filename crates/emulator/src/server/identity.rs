//! Identity as Entra ID and the managed identity endpoints speak it: the v1 and v2 token
//! endpoints (client secret, certificate assertion, federated token), the OpenID
//! configuration documents, App Service's `/msi/token` and IMDS's
//! `/metadata/identity/oauth2/token`.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use webpki::EndEntityCert;

use super::*;

/// The `client_assertion_type` of a JWT client assertion.
pub(crate) const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The identity platform's endpoint version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    /// `/{tenant}/oauth2/token` with `resource=`.
    V1,
    /// `/{tenant}/oauth2/v2.0/token` with `scope=`.
    V2,
}

/// The identity GET routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IdRoute {
    /// `/{tenant}[/v2.0]/.well-known/openid-configuration`.
    OpenId(String, Version),
    /// `/{tenant}/discovery[/v2.0]/keys`.
    Keys(String),
    /// App Service's managed identity endpoint, `/msi/token`.
    AppService,
    /// IMDS's managed identity endpoint, `/metadata/identity/oauth2/token`.
    Imds,
}

/// What the built-in app is known by besides its secret.
pub(crate) struct Identity {
    /// The registered certificate (DER), checked to parse at start.
    certificate: Option<CertificateDer<'static>>,
    /// The federated token written at start, accepted as the app's assertion.
    federated_token: Option<String>,
    pub(crate) identity_header: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("certificate", &self.certificate.is_some())
            .field(
                "federated_token",
                &self.federated_token.as_ref().map(|_| "<redacted>"),
            )
            .field("identity_header", &"<redacted>")
            .finish()
    }
}

impl Identity {
    pub(crate) fn new(cfg: &Config, random: u64, primary: &App) -> Result<Identity, EmulatorError> {
        let certificate = match &cfg.client_certificate {
            None => None,
            Some(source) => {
                let pem = source.read("client certificate")?;
                let der = CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| {
                    EmulatorError::Config(format!(
                        "the client certificate is not a PEM certificate: {e}"
                    ))
                })?;
                EndEntityCert::try_from(&der).map_err(|e| {
                    EmulatorError::Config(format!("the client certificate does not parse: {e}"))
                })?;
                Some(der)
            }
        };
        let identity_header = match &cfg.identity_header {
            Some(s) => s.read("identity header")?,
            None => format!("{:016x}{:016x}", mix(random ^ 0x1d), mix(random ^ 0x2e)),
        };
        if identity_header.is_empty() {
            return Err(EmulatorError::Config(
                "the identity header must not be empty".into(),
            ));
        }
        let federated_token = match &cfg.federated_token_out {
            None => None,
            Some(path) => {
                let token = federated_token(random, primary);
                std::fs::write(path, &token).map_err(|e| {
                    EmulatorError::Config(format!(
                        "could not write the federated token to {}: {e}",
                        path.display()
                    ))
                })?;
                Some(token)
            }
        };
        Ok(Identity {
            certificate,
            federated_token,
            identity_header,
        })
    }
}

/// A token in the shape of a Kubernetes service account token (a JWT) for the app; the
/// emulator compares it whole and does not read it.
fn federated_token(random: u64, app: &App) -> String {
    let header = b64url_encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let claims = json!({
        "aud": ["api://AzureADTokenExchange"],
        "iss": "https://defender-emulator.invalid/federation",
        "sub": format!("system:serviceaccount:default:{}", app.client_id),
    });
    let payload = b64url_encode(claims.to_string().as_bytes());
    let mut sig = Vec::new();
    for i in 0..4u64 {
        sig.extend_from_slice(&mix(random ^ (0xfed0 + i)).to_be_bytes());
    }
    format!("{header}.{payload}.{}", b64url_encode(&sig))
}

const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn b64url_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(B64URL[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Decodes unpadded base64url (padding is tolerated); `None` for anything else.
fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = B64URL.iter().position(|x| *x == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------
// The token endpoints

/// An Entra refusal: status, `error`, the AADSTS number and the description.
struct Refusal(StatusCode, &'static str, u32, String);

impl Refusal {
    fn reply(self, shared: &Shared) -> Reply {
        aad_error(self.0, self.1, self.2, self.3, shared)
    }
}

fn missing(name: &str) -> Refusal {
    Refusal(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        900144,
        format!("AADSTS900144: The request body must contain the following parameter: '{name}'."),
    )
}

fn invalid_client(code: u32, text: String) -> Refusal {
    Refusal(StatusCode::UNAUTHORIZED, "invalid_client", code, text)
}

/// `POST /{tenant}/oauth2/token` (v1) and `/{tenant}/oauth2/v2.0/token` (v2):
/// client credentials with a secret or a client assertion.
pub(super) fn token(
    shared: &Shared,
    tenant: &str,
    version: Version,
    base: &str,
    body: &[u8],
) -> Reply {
    match grant(shared, tenant, version, base, body) {
        Ok(reply) => reply,
        Err(refusal) => refusal.reply(shared),
    }
}

fn tenant_known(shared: &Shared, tenant: &str) -> Result<(), Refusal> {
    if shared
        .apps
        .iter()
        .any(|a| a.tenant.eq_ignore_ascii_case(tenant))
    {
        Ok(())
    } else {
        Err(Refusal(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            format!("AADSTS90002: Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."),
        ))
    }
}

fn grant(
    shared: &Shared,
    tenant: &str,
    version: Version,
    base: &str,
    body: &[u8],
) -> Result<Reply, Refusal> {
    let form: HashMap<String, String> = crate::form::parse(&String::from_utf8_lossy(body))
        .into_iter()
        .collect();
    let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    tenant_known(shared, tenant)?;
    match get("grant_type") {
        "client_credentials" => {}
        "" => return Err(missing("grant_type")),
        g => {
            return Err(Refusal(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                70003,
                format!("AADSTS70003: The app requested an unsupported grant type '{g}'."),
            ))
        }
    }
    let client_id = get("client_id");
    if client_id.is_empty() {
        return Err(missing("client_id"));
    }
    // What the token is for: v2's `/.default` scope, v1's resource.
    let (wanted, audience) = match version {
        Version::V2 => {
            let scope = get("scope");
            let audience = scope_audience(tenant, scope)?;
            (scope, audience)
        }
        Version::V1 => {
            let resource = get("resource");
            if resource.is_empty() {
                return Err(missing("resource"));
            }
            let audience =
                Audience::of_scope(resource).ok_or_else(|| unknown_resource(resource, tenant))?;
            (resource, audience)
        }
    };
    let Some(app) = shared
        .apps
        .iter()
        .find(|a| a.tenant.eq_ignore_ascii_case(tenant) && a.client_id == client_id)
    else {
        // Entra answers an unknown app with 400 `unauthorized_client`.
        return Err(Refusal(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            format!("AADSTS700016: Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant."),
        ));
    };
    let assertion = get("client_assertion");
    let assertion_type = get("client_assertion_type");
    if !assertion.is_empty() || !assertion_type.is_empty() {
        if assertion_type != JWT_BEARER {
            return Err(Refusal(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                format!("AADSTS900144: The request body must contain the following parameter: 'client_assertion_type' with the value '{JWT_BEARER}'."),
            ));
        }
        if assertion.is_empty() {
            return Err(missing("client_assertion"));
        }
        check_assertion(shared, app, tenant, base, assertion)?;
    } else if get("client_secret").is_empty() {
        return Err(invalid_client(
            7000216,
            "AADSTS7000216: 'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.".into(),
        ));
    } else if get("client_secret") != app.secret {
        return Err(invalid_client(
            7000215,
            format!("AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."),
        ));
    }
    let (token, lifetime, now_ms) = issue(shared, app, audience);
    let secs = lifetime.as_secs();
    let expires_on = now_ms / 1000 + secs as i64;
    Ok(Reply::value(
        StatusCode::OK,
        &match version {
            Version::V2 => json!({
                "token_type": "Bearer",
                "expires_in": secs,
                "ext_expires_in": secs,
                "access_token": token,
            }),
            // v1 answers with strings, and says when and for what.
            Version::V1 => json!({
                "token_type": "Bearer",
                "expires_in": secs.to_string(),
                "ext_expires_in": secs.to_string(),
                "expires_on": expires_on.to_string(),
                "not_before": (now_ms / 1000).to_string(),
                "resource": wanted,
                "access_token": token,
            }),
        },
    ))
}

fn unknown_resource(resource: &str, tenant: &str) -> Refusal {
    Refusal(
        StatusCode::BAD_REQUEST,
        "invalid_resource",
        500011,
        format!("AADSTS500011: The resource principal named {resource} was not found in the tenant named {tenant}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant."),
    )
}

/// The audience of a v2 client-credentials scope: `/.default` of one resource.
fn scope_audience(tenant: &str, scope: &str) -> Result<Audience, Refusal> {
    if scope.is_empty() {
        return Err(Refusal(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90014,
            "AADSTS90014: The required field 'scope' is missing from the credential. Ensure that you have all the necessary parameters for the login request.".into(),
        ));
    }
    if !scope.split_whitespace().all(|s| s.ends_with("/.default")) {
        return Err(Refusal(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            format!("AADSTS1002012: The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."),
        ));
    }
    let audiences: Vec<Option<Audience>> =
        scope.split_whitespace().map(Audience::of_scope).collect();
    match audiences.as_slice() {
        [Some(a), rest @ ..] if rest.iter().all(|r| *r == Some(*a)) => Ok(*a),
        [Some(_), ..] => Err(Refusal(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            28000,
            format!("AADSTS28000: Provided value for the input parameter scope is not valid because it contains more than one resource. Scope {scope} is not valid."),
        )),
        _ => {
            let resource = scope
                .split_whitespace()
                .find(|s| Audience::of_scope(s).is_none())
                .unwrap_or(scope)
                .trim_end_matches("/.default");
            Err(unknown_resource(resource, tenant))
        }
    }
}

/// Issues a token of `app` for `audience`: the token, its lifetime and the clock's now.
fn issue(shared: &Shared, app: &App, audience: Audience) -> (String, Duration, i64) {
    let token = format!(
        "emu.{:016x}{:016x}{:016x}",
        shared.next_random(),
        shared.next_random(),
        shared.next_random()
    );
    let lifetime = shared.cfg.token_lifetime;
    let mut st = lock(&shared.state);
    let now = shared.clock.elapsed();
    // Forget expired tokens so the map does not grow without bound.
    st.tokens.retain(|_, t| t.expires_at > now);
    st.totals.tokens_issued += 1;
    st.tokens.insert(
        token.clone(),
        TokenInfo {
            tenant: app.tenant.clone(),
            client_id: app.client_id.clone(),
            expires_at: now + lifetime,
            audience,
        },
    );
    (token, lifetime, shared.clock.unix_ms())
}

fn malformed(why: &str) -> Refusal {
    Refusal(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        50027,
        format!("AADSTS50027: JWT token is invalid or malformed ({why})."),
    )
}

/// Checks a client assertion of `app`: the federated token written at start, or a JWT
/// signed RS256/PS256 by the registered certificate's key, for this token endpoint, by
/// and about the app, within its time.
fn check_assertion(
    shared: &Shared,
    app: &App,
    tenant: &str,
    base: &str,
    assertion: &str,
) -> Result<(), Refusal> {
    let primary = std::ptr::eq(app, shared.primary());
    if primary && shared.identity.federated_token.as_deref() == Some(assertion) {
        return Ok(());
    }
    let mut parts = assertion.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("not three dot-separated parts"));
    };
    let decode_json = |part: &str| -> Option<Map<String, Value>> {
        match serde_json::from_slice::<Value>(&b64url_decode(part)?).ok()? {
            Value::Object(m) => Some(m),
            _ => None,
        }
    };
    let header = decode_json(h).ok_or_else(|| malformed("the header is not base64url JSON"))?;
    let claims = decode_json(p).ok_or_else(|| malformed("the payload is not base64url JSON"))?;
    let signature = b64url_decode(s).ok_or_else(|| malformed("the signature is not base64url"))?;
    let algorithm: &dyn rustls_pki_types::SignatureVerificationAlgorithm =
        match header.get("alg").and_then(Value::as_str) {
            Some("RS256") => webpki::ring::RSA_PKCS1_2048_8192_SHA256,
            Some("PS256") => webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
            _ => {
                return Err(invalid_client(
                    700027,
                    "AADSTS700027: Client assertion failed signature validation: the algorithm must be RS256 or PS256.".into(),
                ))
            }
        };
    let bad_signature = || {
        invalid_client(
            700027,
            format!("AADSTS700027: Client assertion failed signature validation. The key used to sign it is not registered on application '{}'.", app.client_id),
        )
    };
    let cert = match (&shared.identity.certificate, primary) {
        (Some(der), true) => EndEntityCert::try_from(der).map_err(|_| bad_signature())?,
        _ => return Err(bad_signature()),
    };
    let signed = &assertion.as_bytes()[..h.len() + 1 + p.len()];
    cert.verify_signature(algorithm, signed, &signature)
        .map_err(|_| bad_signature())?;

    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let endpoints = [
        format!("{base}/{tenant}/oauth2/v2.0/token"),
        format!("{base}/{tenant}/oauth2/token"),
    ];
    if !audiences
        .iter()
        .any(|a| endpoints.iter().any(|e| e.eq_ignore_ascii_case(a)))
    {
        return Err(invalid_client(
            700023,
            format!("AADSTS700023: Client assertion audience claim does not match Realm issuer. Expected '{}'.", endpoints[0]),
        ));
    }
    let claim = |k: &str| claims.get(k).and_then(Value::as_str).unwrap_or("");
    if claim("iss") != app.client_id || claim("sub") != app.client_id {
        return Err(invalid_client(
            700021,
            "AADSTS700021: Client assertion application identifier doesn't match 'client_id' parameter. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials .".into(),
        ));
    }
    let now = shared.clock.unix_ms() / 1000;
    let time = |k: &str| claims.get(k).and_then(Value::as_i64);
    let Some(exp) = time("exp") else {
        return Err(malformed("no 'exp' claim"));
    };
    let nbf = time("nbf").unwrap_or(i64::MIN);
    if now >= exp || now < nbf {
        return Err(invalid_client(
            700024,
            format!("AADSTS700024: Client assertion is not within its valid time range. Current time: {}, assertion valid from {}, expiry time of assertion {}.",
                rfc3339_secs(now), if nbf == i64::MIN { "-".to_owned() } else { rfc3339_secs(nbf) }, rfc3339_secs(exp)),
        ));
    }
    Ok(())
}

/// Unix seconds as `2026-01-01T00:00:00Z` (clamped to years 1970 to 9999).
fn rfc3339_secs(secs: i64) -> String {
    let secs = secs.clamp(0, 253_402_300_799) as u64;
    defender_core::timefmt::format_rfc3339(std::time::UNIX_EPOCH + Duration::from_secs(secs))
}

// ---------------------------------------------------------------------------------------
// Metadata documents and managed identity

pub(super) fn get(
    shared: &Shared,
    route: &IdRoute,
    base: &str,
    headers: &HeaderMap,
    query: &str,
) -> Reply {
    match route {
        IdRoute::OpenId(tenant, version) => openid_configuration(shared, tenant, *version, base),
        IdRoute::Keys(tenant) => match tenant_known(shared, tenant) {
            // No key signs the emulator's tokens: they are opaque.
            Ok(()) => Reply::value(StatusCode::OK, &json!({ "keys": [] })),
            Err(r) => r.reply(shared),
        },
        IdRoute::AppService => app_service(shared, headers, query),
        IdRoute::Imds => imds(shared, headers, query),
    }
}

fn openid_configuration(shared: &Shared, tenant: &str, version: Version, base: &str) -> Reply {
    if let Err(Refusal(status, _, code, text)) = tenant_known(shared, tenant) {
        // The metadata documents say `invalid_tenant` where the token endpoint says
        // `invalid_request`.
        return aad_error(status, "invalid_tenant", code, text, shared);
    }
    let (v, issuer) = match version {
        Version::V2 => ("/v2.0", format!("{base}/{tenant}/v2.0")),
        Version::V1 => ("", format!("{base}/{tenant}/")),
    };
    let host = base.split_once("://").map_or(base, |(_, h)| h);
    Reply::value(
        StatusCode::OK,
        &json!({
            "token_endpoint": format!("{base}/{tenant}/oauth2{v}/token"),
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": format!("{base}/{tenant}/discovery{v}/keys"),
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": issuer,
            "request_uri_parameter_supported": false,
            "authorization_endpoint": format!("{base}/{tenant}/oauth2{v}/authorize"),
            "device_authorization_endpoint": format!("{base}/{tenant}/oauth2{v}/devicecode"),
            "end_session_endpoint": format!("{base}/{tenant}/oauth2{v}/logout"),
            "http_logout_supported": true,
            "frontchannel_logout_supported": true,
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid", "oid"],
            "tenant_region_scope": "NA",
            "cloud_instance_name": host,
            "cloud_graph_host_name": host,
            "msgraph_host": host,
        }),
    )
}

/// The audience of a managed identity request's resource (with or without `/.default`).
fn mi_resource(query: &HashMap<String, String>) -> Result<(String, Option<Audience>), ()> {
    let resource = query.get("resource").map(String::as_str).unwrap_or("");
    if resource.is_empty() {
        return Err(());
    }
    Ok((resource.to_owned(), Audience::of_scope(resource)))
}

/// The managed identity asked for: the primary app, unless `client_id` names another.
fn mi_identity<'a>(shared: &'a Shared, query: &HashMap<String, String>) -> Option<&'a App> {
    let app = shared.primary();
    match query.get("client_id").map(String::as_str) {
        None | Some("") => Some(app),
        Some(c) if c == app.client_id => Some(app),
        Some(_) => None,
    }
}

fn app_service(shared: &Shared, headers: &HeaderMap, query: &str) -> Reply {
    let q: HashMap<String, String> = crate::form::parse(query).into_iter().collect();
    let refuse = |status: StatusCode, message: String| {
        Reply::value(
            status,
            &json!({
                "statusCode": status.as_u16(),
                "message": message,
                "correlationId": shared.uuid(),
            }),
        )
    };
    let header = headers
        .get("x-identity-header")
        .and_then(|v| v.to_str().ok());
    if header != Some(shared.identity.identity_header.as_str()) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "The request must carry the X-IDENTITY-HEADER header with the value of IDENTITY_HEADER.".into(),
        );
    }
    match q.get("api-version").map(String::as_str) {
        Some("2019-08-01") => {}
        other => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!(
                    "The api-version '{}' is not supported; use 2019-08-01.",
                    other.unwrap_or("")
                ),
            )
        }
    }
    let Ok((resource, audience)) = mi_resource(&q) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "The query parameter 'resource' is required.".into(),
        );
    };
    let Some(app) = mi_identity(shared, &q) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "Unable to load the proper Managed Identity.".into(),
        );
    };
    let Some(audience) = audience else {
        return refuse(
            StatusCode::BAD_REQUEST,
            unknown_resource(&resource, &app.tenant).3,
        );
    };
    let (token, lifetime, now_ms) = issue(shared, app, audience);
    Reply::value(
        StatusCode::OK,
        &json!({
            "access_token": token,
            "expires_on": (now_ms / 1000 + lifetime.as_secs() as i64).to_string(),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": app.client_id,
        }),
    )
}

fn imds(shared: &Shared, headers: &HeaderMap, query: &str) -> Reply {
    let q: HashMap<String, String> = crate::form::parse(query).into_iter().collect();
    let refuse = |error: &str, description: String| {
        Reply::value(
            StatusCode::BAD_REQUEST,
            &json!({ "error": error, "error_description": description }),
        )
    };
    if headers.get("metadata").and_then(|v| v.to_str().ok()) != Some("true") {
        return refuse(
            "invalid_request",
            "Required metadata header not specified".into(),
        );
    }
    match q.get("api-version").map(String::as_str) {
        None | Some("") => {
            return refuse(
                "invalid_request",
                "Required query variable 'api-version' is missing".into(),
            )
        }
        Some(v) if v < "2018-02-01" => {
            return refuse(
                "invalid_request",
                format!("Invalid version '{v}'; use 2018-02-01 or later"),
            )
        }
        Some(_) => {}
    }
    let Ok((resource, audience)) = mi_resource(&q) else {
        return refuse(
            "invalid_request",
            "Required query variable 'resource' is missing".into(),
        );
    };
    let Some(app) = mi_identity(shared, &q) else {
        return refuse("invalid_request", "Identity not found".into());
    };
    let Some(audience) = audience else {
        return refuse(
            "invalid_resource",
            unknown_resource(&resource, &app.tenant).3,
        );
    };
    let (token, lifetime, now_ms) = issue(shared, app, audience);
    let secs = lifetime.as_secs();
    Reply::value(
        StatusCode::OK,
        &json!({
            "access_token": token,
            "client_id": app.client_id,
            "expires_in": secs.to_string(),
            "expires_on": (now_ms / 1000 + secs as i64).to_string(),
            "ext_expires_in": secs.to_string(),
            "not_before": (now_ms / 1000).to_string(),
            "resource": resource,
            "token_type": "Bearer",
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_round_trips_and_refuses_garbage() {
        for v in [&b""[..], b"f", b"fo", b"foo", b"foob", b"\xff\xfe\x00"] {
            assert_eq!(b64url_decode(&b64url_encode(v)).as_deref(), Some(v));
        }
        assert_eq!(b64url_encode(b"\xfb\xff"), "-_8");
        assert_eq!(b64url_decode("Zm9v=").as_deref(), Some(&b"foo"[..]));
        assert_eq!(b64url_decode("a"), None);
        assert_eq!(b64url_decode("ab+/"), None);
        assert_eq!(b64url_decode("é"), None);
    }
}
