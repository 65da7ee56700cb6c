//! Building the HTTP request of a call (or of an update's read-back or comment step).

use super::*;

impl Engine {
    /// The request for `call`; with `read_back`, an update's read-back (a GET of the
    /// incident) instead of the update itself.
    pub(super) fn build_request(
        &self,
        call: &Call,
        read_back: bool,
        step: UpdateStep,
        token: &str,
    ) -> Result<http::Request<Vec<u8>>, Error> {
        let surface = self.config.surface;
        let base = &self.config.endpoints.api_base;
        let unsupported = |operation| Error::Unsupported { surface, operation };
        // An update's read-back is a get of what it changes.
        let read_call;
        let call = match Change::of(call) {
            Some(change) if read_back => {
                read_call = change.read_call();
                &read_call
            }
            _ => call,
        };
        let (method, uri, body) = match call {
            Call::Hunt(req) | Call::HuntWindow(req) | Call::HuntStream(req) => {
                if surface != Surface::Graph && req.timespan.is_some() {
                    // Dropping it would widen the query to 30 days without a word.
                    return Err(Error::Unsupported {
                        surface,
                        operation: "Timespan parameter (scope the query: HuntRequest::scoped)",
                    });
                }
                let req = req.clone();
                let body =
                    serde_json::to_vec(&req).map_err(|e| Error::InvalidRequest(e.to_string()))?;
                (
                    http::Method::POST,
                    format!("{base}{}", surface.hunting_path()),
                    Some(body),
                )
            }
            Call::ListIncidents(q) => {
                let path = surface
                    .incidents_path()
                    .ok_or_else(|| unsupported("incidents"))?;
                if let Some(field) = q.filter.unsupported_on(surface) {
                    return Err(Error::InvalidRequest(format!(
                        "{surface} does not filter incidents on {}; filter the list yourself",
                        field.name(surface)
                    )));
                }
                let mut q = q.clone();
                let max = max_top(surface);
                q.top = Some(q.top.unwrap_or(max).min(max));
                (
                    http::Method::GET,
                    format!("{base}{}", q.path_and_query(path, surface)),
                    None,
                )
            }
            Call::NextIncidents(link) => {
                surface
                    .incidents_path()
                    .ok_or_else(|| unsupported("incidents"))?;
                if !same_origin(link, base) {
                    return Err(Error::ForeignLink { url: link.clone() });
                }
                (http::Method::GET, link.clone(), None)
            }
            Call::GetIncident(id) => {
                let path = surface
                    .incidents_path()
                    .ok_or_else(|| unsupported("incidents"))?;
                (
                    http::Method::GET,
                    format!("{base}{path}/{}", id.check()?),
                    None,
                )
            }
            Call::ListAlerts(q) => {
                if let Some(field) = q.filter.unsupported_on(surface) {
                    return Err(Error::InvalidRequest(format!(
                        "{surface} does not filter alerts on {}; filter the list yourself",
                        field.name(surface)
                    )));
                }
                let mut q = q.clone();
                let max = alerts::max_top(surface);
                q.top = Some(q.top.unwrap_or(max).min(max));
                (
                    http::Method::GET,
                    format!("{base}{}", q.path_and_query(surface.alerts_path(), surface)),
                    None,
                )
            }
            Call::NextAlerts(link) => {
                if !same_origin(link, base) {
                    return Err(Error::ForeignLink { url: link.clone() });
                }
                (http::Method::GET, link.clone(), None)
            }
            Call::GetAlert(id) => (
                http::Method::GET,
                format!("{base}{}/{}", surface.alerts_path(), id.check()?),
                None,
            ),
            Call::UpdateIncident(..) | Call::UpdateAlert(..) => {
                let change = Change::of(call).expect("an update"); // matched an update
                let path = change.path(surface)?;
                if step == UpdateStep::Comment {
                    let body = change
                        .comment_body()
                        .ok_or_else(|| Error::InvalidRequest("no comment to post".into()))?;
                    let body = serde_json::to_vec(&body)
                        .map_err(|e| Error::InvalidRequest(e.to_string()))?;
                    (
                        http::Method::POST,
                        format!("{base}{path}/comments"),
                        Some(body),
                    )
                } else {
                    if change.is_empty() {
                        return Err(Error::InvalidRequest("the update changes nothing".into()));
                    }
                    let body = serde_json::to_vec(&change.patch_body(surface))
                        .map_err(|e| Error::InvalidRequest(e.to_string()))?;
                    (http::Method::PATCH, format!("{base}{path}"), Some(body))
                }
            }
        };
        let mut bearer = http::HeaderValue::try_from(format!("Bearer {token}"))
            .map_err(|_| Error::InvalidRequest("the access token is not a valid header".into()))?;
        // Marked sensitive: `http` then prints it as `Sensitive` in any `Debug`.
        bearer.set_sensitive(true);
        let mut b = http::Request::builder()
            .method(method)
            .uri(&uri)
            .header(http::header::AUTHORIZATION, bearer)
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::USER_AGENT, &self.config.user_agent);
        if body.is_some() {
            b = b.header(
                http::header::CONTENT_TYPE,
                "application/json; charset=utf-8",
            );
        }
        b.body(body.unwrap_or_default())
            .map_err(|_| Error::InvalidRequest(format!("`{uri}` is not a valid URL")))
    }
}

pub(super) fn same_origin(link: &str, base: &str) -> bool {
    match (link.parse::<http::Uri>(), base.parse::<http::Uri>()) {
        (Ok(l), Ok(b)) => {
            l.scheme() == b.scheme() && l.authority() == b.authority() && l.authority().is_some()
        }
        _ => false,
    }
}
