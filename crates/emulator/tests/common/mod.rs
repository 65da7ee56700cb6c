//! Helpers shared by the HTTP-level tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use defender_emulator::{
    Clock, Emulator, EmulatorBuilder, EmulatorHandle, DEFAULT_CLIENT_ID, DEFAULT_SECRET,
    DEFAULT_TENANT,
};
use reqwest::{Client, Response, StatusCode};
use serde_json::Value;

/// 2026-01-01T00:00:00Z.
pub const START_MS: i64 = 1_767_225_600_000;

pub const XDR_HUNT: &str = "/api/advancedhunting/run";
pub const MDE_HUNT: &str = "/api/advancedqueries/run";
pub const GRAPH_HUNT: &str = "/v1.0/security/runHuntingQuery";

/// A small, fast emulator on a manual clock.
pub fn small() -> EmulatorBuilder {
    Emulator::builder()
        .rows_per_table(300)
        .incidents(120)
        .clock(Clock::manual(START_MS))
}

pub const XDR_SCOPE: &str = "https://api.security.microsoft.com/.default";
pub const MDE_SCOPE: &str = "https://api.securitycenter.microsoft.com/.default";
pub const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";

/// The scope of the API that serves `path` (tokens carry their audience).
pub fn scope_of(path: &str) -> &'static str {
    let p = path.to_ascii_lowercase();
    if p.starts_with("/v1.0/") {
        GRAPH_SCOPE
    } else if p.starts_with("/api/advancedqueries") {
        MDE_SCOPE
    } else {
        XDR_SCOPE
    }
}

pub struct Env {
    pub emu: EmulatorHandle,
    pub http: Client,
    pub base: String,
    /// The app behind each token `token_of` handed out, so the request helpers can send
    /// that app's token for the API of the path (a token is for one API only).
    apps: Mutex<HashMap<String, (String, String, String)>>,
    /// (token from `token_of`, scope) -> the same app's token for that scope.
    swapped: Mutex<HashMap<(String, &'static str), String>>,
}

impl Env {
    pub async fn start(b: EmulatorBuilder) -> Env {
        // The workspace's reqwest brings no crypto provider; the tests talk plain HTTP
        // but the client still wants one installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let emu = b.spawn().await.expect("the emulator starts");
        let base = emu.base_url();
        Env {
            emu,
            http: Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            base,
            apps: Mutex::new(HashMap::new()),
            swapped: Mutex::new(HashMap::new()),
        }
    }

    pub fn clock(&self) -> Clock {
        self.emu.clock()
    }

    pub async fn token_for(&self, tenant: &str, client: &str, secret: &str) -> Response {
        self.token_request(tenant, client, secret, XDR_SCOPE).await
    }

    /// A token request for `scope`.
    pub async fn token_request(
        &self,
        tenant: &str,
        client: &str,
        secret: &str,
        scope: &str,
    ) -> Response {
        let scope = scope.replace(':', "%3A").replace('/', "%2F");
        let body = format!(
            "client_id={client}&client_secret={secret}&grant_type=client_credentials&scope={scope}"
        );
        self.http
            .post(format!("{}/{tenant}/oauth2/v2.0/token", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// A Defender XDR token of the app; the request helpers swap it for the same app's
    /// token of the path's API (use `scoped_token` and `http` to send a token as it is).
    pub async fn token_of(&self, tenant: &str, client: &str, secret: &str) -> String {
        let t = self.scoped_token(tenant, client, secret, XDR_SCOPE).await;
        self.apps.lock().unwrap().insert(
            t.clone(),
            (tenant.to_owned(), client.to_owned(), secret.to_owned()),
        );
        t
    }

    /// A token for `scope`, used as it is by the helpers.
    pub async fn scoped_token(
        &self,
        tenant: &str,
        client: &str,
        secret: &str,
        scope: &str,
    ) -> String {
        let r = self.token_request(tenant, client, secret, scope).await;
        assert_eq!(r.status(), StatusCode::OK);
        let v: Value = r.json().await.unwrap();
        v["access_token"].as_str().unwrap().to_owned()
    }

    /// The token to send to `path`: `token` itself, or, for a token from `token_of` and a
    /// path of another API, the same app's token for that API.
    pub async fn for_path(&self, token: &str, path: &str) -> String {
        let scope = scope_of(path);
        if scope == XDR_SCOPE {
            return token.to_owned();
        }
        let app = self.apps.lock().unwrap().get(token).cloned();
        let Some((tenant, client, secret)) = app else {
            return token.to_owned();
        };
        let key = (token.to_owned(), scope);
        if let Some(t) = self.swapped.lock().unwrap().get(&key) {
            return t.clone();
        }
        let r = self.token_request(&tenant, &client, &secret, scope).await;
        if r.status() != StatusCode::OK {
            return token.to_owned();
        }
        let v: Value = r.json().await.unwrap();
        let t = v["access_token"].as_str().unwrap().to_owned();
        self.swapped.lock().unwrap().insert(key, t.clone());
        t
    }

    pub async fn token(&self) -> String {
        self.token_of(DEFAULT_TENANT, DEFAULT_CLIENT_ID, DEFAULT_SECRET)
            .await
    }

    pub async fn hunt(&self, token: &str, path: &str, query: &str) -> Response {
        let token = self.for_path(token, path).await;
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("content-type", "application/json; charset=utf-8")
            .body(serde_json::json!({ "Query": query }).to_string())
            .send()
            .await
            .unwrap()
    }

    pub async fn post_json(&self, token: &str, path: &str, body: &Value) -> Response {
        let token = self.for_path(token, path).await;
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, token: &str, path: &str) -> Response {
        self.get_url(token, &format!("{}{path}", self.base)).await
    }

    pub async fn get_url(&self, token: &str, url: &str) -> Response {
        let path = url.strip_prefix(&self.base).unwrap_or(url);
        let token = self.for_path(token, path).await;
        self.http.get(url).bearer_auth(token).send().await.unwrap()
    }

    /// A control request that changes state (`/_emulator/reset`, `/_emulator/clock/advance`),
    /// with the control header and a token, as the emulator requires.
    pub async fn control(&self, path: &str, body: &str) -> Response {
        let token = self.token().await;
        self.http
            .post(format!("{}{path}", self.base))
            .header(
                defender_emulator::CONTROL_HEADER,
                defender_emulator::CONTROL_HEADER_VALUE,
            )
            .bearer_auth(token)
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }

    pub async fn patch(&self, token: &str, path: &str, body: &Value) -> Response {
        let token = self.for_path(token, path).await;
        self.http
            .patch(format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }
}

/// The status and the JSON body.
pub async fn json(r: Response) -> (StatusCode, Value) {
    let s = r.status();
    let text = r.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (s, v)
}

/// Follows `@odata.nextLink` from `first` to the last page: every item, and the number of
/// pages.
pub async fn all_pages(env: &Env, token: &str, first: &str) -> (Vec<Value>, usize) {
    let mut url = format!("{}{first}", env.base);
    let mut out = Vec::new();
    let mut pages = 0;
    loop {
        let (s, v) = json(env.get_url(token, &url).await).await;
        assert_eq!(s, StatusCode::OK, "{url}: {v}");
        pages += 1;
        out.extend(v["value"].as_array().unwrap().iter().cloned());
        match v["@odata.nextLink"].as_str() {
            Some(next) => {
                assert!(next.starts_with(&env.base), "{next}");
                url = next.to_owned();
            }
            None => break,
        }
    }
    (out, pages)
}

/// Percent-encodes a query value such as a `$filter`.
pub fn urlenc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~'():".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Asserts the `{"error":{"code","message",...}}` envelope and returns the message.
pub fn envelope(v: &Value, code: &str) -> String {
    assert_eq!(v["error"]["code"], code, "{v}");
    v["error"]["message"]
        .as_str()
        .expect("a message")
        .to_owned()
}
