//! Outbound HTTP over `wasi:http`, with JSON helpers.
//!
//! Every request must match a destination declared in the manifest's
//! `[capabilities.http]` (and granted to the connection); anything else comes
//! back as [`Error::AccessDenied`]. Credentials are added by the host at send
//! time, to the destinations the manifest binds them to: a request of yours to
//! such a destination that sets the credential's header (`Authorization`, or
//! the API-key header) or query parameter is refused with
//! [`Error::AccessDenied`]. If the tenant has not set the credential, or it was
//! refused for good, the host answers with a 401 without sending anything, so
//! [`Response::error_for_status`] gives [`Error::Unauthorized`].
//! Redirects are returned to you, never followed.

use crate::Error;
use crate::bindings::wasi::http::outgoing_handler;
use crate::bindings::wasi::http::types::{
    ErrorCode, Fields, IncomingBody, Method as WitMethod, OutgoingBody, OutgoingRequest,
    RequestOptions, Scheme,
};
use crate::bindings::wasi::io::streams::StreamError;
use serde::{Serialize, de::DeserializeOwned};
use std::time::Duration;

/// Largest response body the helpers read (the host enforces its own cap too).
const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// An HTTP method.
///
/// ```no_run
/// let m = patchbay_sdk::http::Method::Post;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)] // the names are the methods
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
    Head,
}

/// An outbound request, built fluently and sent with [`Request::send`].
///
/// ```no_run
/// use patchbay_sdk::http::Request;
/// let resp = Request::post("https://api.example.com/v1/search")
///     .header("accept", "application/json")
///     .json(&serde_json::json!({"q": "ada"}))?
///     .timeout(std::time::Duration::from_secs(2))
///     .send()?;
/// # Ok::<(), patchbay_sdk::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: Option<Duration>,
}

impl Request {
    /// A request with `method` to `url` (`scheme://host[:port]/path?query`).
    ///
    /// ```no_run
    /// let r = patchbay_sdk::http::Request::new(patchbay_sdk::http::Method::Patch, "https://x.example/a");
    /// ```
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        Self {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: None,
        }
    }

    /// A GET request.
    ///
    /// ```no_run
    /// let r = patchbay_sdk::http::Request::get("https://x.example/a");
    /// ```
    pub fn get(url: impl Into<String>) -> Self {
        Self::new(Method::Get, url)
    }

    /// A POST request.
    ///
    /// ```no_run
    /// let r = patchbay_sdk::http::Request::post("https://x.example/a");
    /// ```
    pub fn post(url: impl Into<String>) -> Self {
        Self::new(Method::Post, url)
    }

    /// Add a header.
    ///
    /// ```no_run
    /// let r = patchbay_sdk::http::Request::get("https://x.example/a").header("accept", "application/json");
    /// ```
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Append query parameters to the URL, form-encoded (`a b&c` becomes
    /// `a+b%26c`), after any the URL already has. Values are data: nothing in
    /// them can add a parameter or change the path.
    ///
    /// ```no_run
    /// let r = patchbay_sdk::http::Request::get("https://x.example/search")
    ///     .query(&[("q", "email:\"ada@example.com\""), ("limit", "1")]);
    /// ```
    pub fn query(mut self, pairs: &[(&str, &str)]) -> Self {
        if pairs.is_empty() {
            return self;
        }
        let encoded = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        // A fragment is never sent; drop it rather than put the query after it.
        if let Some(hash) = self.url.find('#') {
            self.url.truncate(hash);
        }
        let joiner = match self.url.find('?') {
            None => '?',
            Some(at) if at + 1 == self.url.len() || self.url.ends_with('&') => {
                self.url.push_str(&encoded);
                return self;
            }
            Some(_) => '&',
        };
        self.url.push(joiner);
        self.url.push_str(&encoded);
        self
    }

    /// Set a JSON body and the `content-type` header.
    ///
    /// ```no_run
    /// let r = patchbay_sdk::http::Request::post("https://x.example/a").json(&[1, 2, 3])?;
    /// # Ok::<(), patchbay_sdk::Error>(())
    /// ```
    pub fn json<T: Serialize + ?Sized>(mut self, body: &T) -> Result<Self, Error> {
        self.body = serde_json::to_vec(body)
            .map_err(|e| Error::internal(format!("encoding request body: {e}")))?;
        self.headers
            .push(("content-type".into(), "application/json".into()));
        Ok(self)
    }

    /// Set a raw body.
    ///
    /// ```no_run
    /// let r = patchbay_sdk::http::Request::post("https://x.example/a").body(b"raw".to_vec());
    /// ```
    pub fn body(mut self, body: Vec<u8>) -> Self {
        self.body = body;
        self
    }

    /// Bound connecting and waiting for the first byte and between bytes by
    /// `timeout` each (the host's per-call deadline still applies).
    ///
    /// ```no_run
    /// let r = patchbay_sdk::http::Request::get("https://x.example/a").timeout(std::time::Duration::from_millis(800));
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Send the request and read the whole response.
    ///
    /// ```no_run
    /// let resp = patchbay_sdk::http::Request::get("https://x.example/a").send()?;
    /// println!("{}", resp.status());
    /// # Ok::<(), patchbay_sdk::Error>(())
    /// ```
    pub fn send(self) -> Result<Response, Error> {
        let target = Target::parse(&self.url)?;
        let headers = Fields::new();
        if !self.body.is_empty()
            && !self
                .headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        {
            // The size is known: say so, rather than streaming chunked, which some upstreams refuse.
            headers
                .append("content-length", self.body.len().to_string().as_bytes())
                .map_err(|e| Error::internal(format!("content-length header: {e:?}")))?;
        }
        for (name, value) in &self.headers {
            headers
                .append(name, value.as_bytes())
                .map_err(|e| Error::invalid_input(format!("header {name:?}: {e:?}")))?;
        }
        let request = OutgoingRequest::new(headers);
        let method = match self.method {
            Method::Get => WitMethod::Get,
            Method::Post => WitMethod::Post,
            Method::Put => WitMethod::Put,
            Method::Patch => WitMethod::Patch,
            Method::Delete => WitMethod::Delete,
            Method::Head => WitMethod::Head,
        };
        let invalid =
            |what: &str| Error::invalid_input(format!("url {:?}: invalid {what}", self.url));
        request
            .set_method(&method)
            .map_err(|()| invalid("method"))?;
        request
            .set_scheme(Some(&target.scheme))
            .map_err(|()| invalid("scheme"))?;
        request
            .set_authority(Some(target.authority))
            .map_err(|()| invalid("authority"))?;
        request
            .set_path_with_query(Some(&target.path_and_query))
            .map_err(|()| invalid("path"))?;

        let options = RequestOptions::new();
        if let Some(timeout) = self.timeout {
            let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
            // Errors mean the host does not support that timeout kind; the deadline still holds.
            let _ = options.set_connect_timeout(Some(nanos));
            let _ = options.set_first_byte_timeout(Some(nanos));
            let _ = options.set_between_bytes_timeout(Some(nanos));
        }

        let body = request
            .body()
            .map_err(|()| Error::internal("request body already taken"))?;
        let pending = outgoing_handler::handle(request, Some(options)).map_err(map_error_code)?;
        // If the host refused the request, writing the body fails too; the
        // response future then carries the real reason, so it decides the error.
        let sent = match write_body(&body, &self.body) {
            Ok(()) => OutgoingBody::finish(body, None).map_err(map_error_code),
            Err(e) => {
                drop(body);
                Err(e)
            }
        };
        let response = loop {
            match pending.get() {
                Some(Ok(Ok(response))) => break Ok(response),
                Some(Ok(Err(code))) => break Err(map_error_code(code)),
                Some(Err(())) => break Err(Error::internal("response already taken")),
                None => pending.subscribe().block(),
            }
        };
        let response = match (sent, response) {
            (_, Err(refused)) => return Err(refused),
            (Err(write_error), Ok(_)) => return Err(write_error),
            (Ok(()), Ok(response)) => response,
        };
        let status = response.status();
        let headers = response
            .headers()
            .entries()
            .into_iter()
            .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
            .collect();
        let incoming = response
            .consume()
            .map_err(|()| Error::internal("response body already taken"))?;
        let body = read_body(incoming)?;
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

fn write_body(body: &OutgoingBody, bytes: &[u8]) -> Result<(), Error> {
    if bytes.is_empty() {
        return Ok(());
    }
    let stream = body
        .write()
        .map_err(|()| Error::internal("request body stream already taken"))?;
    // blocking-write-and-flush accepts at most 4096 bytes per call.
    for chunk in bytes.chunks(4096) {
        stream
            .blocking_write_and_flush(chunk)
            .map_err(map_stream_error)?;
    }
    Ok(())
}

fn read_body(incoming: IncomingBody) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    {
        let stream = incoming
            .stream()
            .map_err(|()| Error::internal("response stream already taken"))?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => {
                    if out.len() + chunk.len() > MAX_RESPONSE_BYTES {
                        return Err(Error::internal(format!(
                            "response body larger than {MAX_RESPONSE_BYTES} bytes"
                        )));
                    }
                    out.extend_from_slice(&chunk);
                }
                Err(StreamError::Closed) => break,
                Err(e) => return Err(map_stream_error(e)),
            }
        }
    }
    let _trailers = IncomingBody::finish(incoming);
    Ok(out)
}

fn map_stream_error(e: StreamError) -> Error {
    match e {
        StreamError::Closed => Error::Upstream {
            status: 0,
            message: "connection closed".into(),
        },
        StreamError::LastOperationFailed(err) => Error::Upstream {
            status: 0,
            message: err.to_debug_string(),
        },
    }
}

fn map_error_code(code: ErrorCode) -> Error {
    match code {
        ErrorCode::DestinationUnavailable => Error::Upstream {
            status: 0,
            message: "destination unavailable: the host's circuit breaker is open after repeated failures".into(),
        },
        ErrorCode::DestinationIpProhibited => {
            Error::AccessDenied("destination address refused by host policy".into())
        }
        ErrorCode::HttpRequestDenied => {
            Error::AccessDenied("outbound request denied by host policy".into())
        }
        ErrorCode::ConnectionTimeout
        | ErrorCode::ConnectionReadTimeout
        | ErrorCode::ConnectionWriteTimeout => Error::Timeout(format!("{code:?}")),
        ErrorCode::HttpRequestUriInvalid => Error::invalid_input("invalid request uri"),
        other => Error::Upstream {
            status: 0,
            message: format!("{other:?}"),
        },
    }
}

struct Target<'a> {
    scheme: Scheme,
    authority: &'a str,
    path_and_query: String,
}

impl<'a> Target<'a> {
    fn parse(url: &'a str) -> Result<Self, Error> {
        let bad = |why: &str| Error::invalid_input(format!("url {url:?}: {why}"));
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("missing scheme"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "https" => Scheme::Https,
            "http" => Scheme::Http,
            other => return Err(bad(&format!("unsupported scheme {other:?}"))),
        };
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path_and_query) = rest.split_at(split);
        if authority.is_empty() {
            return Err(bad("missing host"));
        }
        Ok(Self {
            scheme,
            authority,
            // An HTTP request target always starts with `/`, even when only a query follows the host.
            path_and_query: if path_and_query.starts_with('/') {
                path_and_query.to_owned()
            } else {
                format!("/{path_and_query}")
            },
        })
    }
}

/// A complete response.
///
/// ```no_run
/// let resp = patchbay_sdk::http::Request::get("https://x.example/a").send()?;
/// let value: serde_json::Value = resp.error_for_status()?.json()?;
/// # Ok::<(), patchbay_sdk::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    /// The status code.
    ///
    /// ```no_run
    /// # fn f(r: &patchbay_sdk::http::Response) { let _ = r.status(); }
    /// ```
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Every header as (name, value), names lowercase as the host delivers them.
    ///
    /// ```no_run
    /// # fn f(r: &patchbay_sdk::http::Response) {
    /// for (name, value) in r.headers() { let _ = (name, value); }
    /// # }
    /// ```
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// The first value of header `name` (case-insensitive).
    ///
    /// ```no_run
    /// # fn f(r: &patchbay_sdk::http::Response) { let _ = r.header("content-type"); }
    /// ```
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The raw body.
    ///
    /// ```no_run
    /// # fn f(r: &patchbay_sdk::http::Response) { let _ = r.body().len(); }
    /// ```
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Decode the body as JSON.
    ///
    /// ```no_run
    /// # fn f(r: &patchbay_sdk::http::Response) -> Result<(), patchbay_sdk::Error> {
    /// let v: serde_json::Value = r.json()?;
    /// # Ok(()) }
    /// ```
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|e| Error::Upstream {
            status: self.status,
            message: format!("response is not the expected JSON: {e}"),
        })
    }

    /// The wait the upstream asked for in `Retry-After` (seconds or HTTP-date),
    /// in milliseconds.
    ///
    /// ```no_run
    /// # fn f(r: &patchbay_sdk::http::Response) { let _ = r.retry_after_ms(); }
    /// ```
    pub fn retry_after_ms(&self) -> Option<u64> {
        let value = self.header("retry-after")?.trim();
        if let Ok(seconds) = value.parse::<u64>() {
            return Some(seconds.saturating_mul(1000));
        }
        let at = httpdate::parse_http_date(value).ok()?;
        let wait = at
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default();
        Some(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX))
    }

    /// Turn an error status into the matching [`Error`]: 401/403 become
    /// `Unauthorized`, 404 `NotFound`, 429 `RateLimited` (from `Retry-After`,
    /// seconds or HTTP-date; 1 s when absent), other 4xx/5xx `Upstream`.
    ///
    /// ```no_run
    /// # fn f(r: patchbay_sdk::http::Response) -> Result<(), patchbay_sdk::Error> {
    /// let ok = r.error_for_status()?;
    /// # Ok(()) }
    /// ```
    pub fn error_for_status(self) -> Result<Self, Error> {
        self.error_for_status_with(|_| None)
    }

    /// [`error_for_status`](Self::error_for_status), with the upstream's own
    /// explanation: `describe` reads the vendor's error body (its message,
    /// code...) and the error says `upstream answered 400: <that>`.
    ///
    /// ```no_run
    /// # fn f(r: patchbay_sdk::http::Response) -> Result<(), patchbay_sdk::Error> {
    /// let ok = r.error_for_status_with(|r| {
    ///     let body: serde_json::Value = r.json().ok()?;
    ///     body["error"]["message"].as_str().map(str::to_owned)
    /// })?;
    /// # Ok(()) }
    /// ```
    pub fn error_for_status_with(
        self,
        describe: impl FnOnce(&Self) -> Option<String>,
    ) -> Result<Self, Error> {
        let status = self.status;
        if (200..=399).contains(&status) {
            return Ok(self);
        }
        let detail = describe(&self).map(|d| shorten(d.trim()));
        let message = || match &detail {
            Some(detail) if !detail.is_empty() => format!("upstream answered {status}: {detail}"),
            _ => format!("upstream answered {status}"),
        };
        match status {
            401 | 403 => Err(Error::Unauthorized(message())),
            404 => Err(Error::NotFound(message())),
            429 => Err(Error::RateLimited {
                retry_after_ms: self.retry_after_ms().unwrap_or(1000),
            }),
            _ => Err(Error::Upstream {
                status,
                message: message(),
            }),
        }
    }
}

/// Longest upstream explanation an error carries, in characters.
const MAX_DETAIL_CHARS: usize = 300;

fn shorten(detail: &str) -> String {
    match detail.char_indices().nth(MAX_DETAIL_CHARS) {
        Some((end, _)) => format!("{}…", &detail[..end]),
        None => detail.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pairs_are_encoded_and_appended() {
        let url = |base: &str, pairs: &[(&str, &str)]| Request::get(base).query(pairs).url;
        assert_eq!(
            url(
                "https://a.example/s",
                &[("query", "email:\"a&b=c\" OR x"), ("limit", "2")]
            ),
            "https://a.example/s?query=email%3A%22a%26b%3Dc%22+OR+x&limit=2"
        );
        assert_eq!(
            url("https://a.example/s?x=1", &[("y", "é/?")]),
            "https://a.example/s?x=1&y=%C3%A9%2F%3F"
        );
        assert_eq!(
            url("https://a.example/s?", &[("y", "1")]),
            "https://a.example/s?y=1"
        );
        assert_eq!(
            url("https://a.example/s#frag", &[("y", "1")]),
            "https://a.example/s?y=1"
        );
        assert_eq!(url("https://a.example/s", &[]), "https://a.example/s");
    }

    #[test]
    fn long_upstream_explanations_are_cut() {
        assert_eq!(shorten("short"), "short");
        let long = "é".repeat(MAX_DETAIL_CHARS + 5);
        assert_eq!(shorten(&long).chars().count(), MAX_DETAIL_CHARS + 1);
    }

    #[test]
    fn splits_urls_into_scheme_authority_and_path() {
        let cases = [
            (
                "https://api.example.com/v1/x?q=1",
                "api.example.com",
                "/v1/x?q=1",
            ),
            ("http://127.0.0.1:8080", "127.0.0.1:8080", "/"),
            ("HTTPS://a.example?x", "a.example", "/?x"),
        ];
        for (url, authority, path) in cases {
            let target = Target::parse(url).expect(url);
            assert_eq!(
                (target.authority, target.path_and_query.as_str()),
                (authority, path),
                "{url}"
            );
        }
    }

    #[test]
    fn refuses_urls_it_cannot_send() {
        for (url, why) in [
            ("api.example.com/x", "missing scheme"),
            ("ftp://a/b", "unsupported scheme"),
            ("https:///x", "missing host"),
        ] {
            let err = Target::parse(url).err().expect(url).to_string();
            assert!(err.contains(why), "{url}: {err}");
        }
    }
}
