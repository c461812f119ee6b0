//! A transport that answers from recorded exchanges instead of the network:
//! the conformance kit runs plugins against it, offline. Every request that
//! reaches it has passed the host's checks (destination rules, addresses,
//! credentials, rate limits), exactly as on the network.

use crate::{EgressError, Transport};
use std::sync::Mutex;

/// One recorded exchange: a request, and what answered it.
#[derive(Debug, Clone, PartialEq)]
pub struct Exchange {
    /// The request's method (`GET`, `POST`…), in any case.
    pub method: String,
    /// The request's whole URL, query included.
    pub url: String,
    /// Headers the request must carry, with these values (names in any case).
    pub headers: Vec<(String, String)>,
    /// When given, the request's body must be this JSON.
    pub body: Option<serde_json::Value>,
    /// What the recording answers.
    pub answer: Answer,
}

/// What a recorded request got.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// A response.
    Respond {
        /// The status code.
        status: u16,
        /// Response headers, in order.
        headers: Vec<(String, String)>,
        /// The body's bytes.
        body: Vec<u8>,
    },
    /// No response in time: the request times out at once (the plugin sees
    /// what it would see after waiting its timeout, without the wait).
    Timeout,
    /// No connection: the request fails at once, as an unreachable
    /// upstream's would.
    Unreachable,
}

/// A request that reached the transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Its method.
    pub method: String,
    /// Its URL, as sent (a host-added query credential included: the kit's
    /// credentials are made up).
    pub url: String,
    /// The index of the exchange that answered it; `None` when no recorded
    /// exchange matched.
    pub matched: Option<usize>,
}

/// Recorded exchanges, answered in order: a request gets the first unused
/// exchange that matches it, or, when every matching one was used (a retry),
/// the last of them again.
#[derive(Debug, Default)]
pub struct Replay {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Query parameters the host adds (a credential carried in the query):
    /// left out when a sent URL is compared with a recorded one.
    host_params: Vec<String>,
    exchanges: Vec<Exchange>,
    used: Vec<bool>,
    seen: Vec<Seen>,
}

impl Replay {
    /// A replay with nothing recorded: every request is unmatched.
    pub fn new() -> Self {
        Self::default()
    }

    /// Answer from `exchanges` from now on, forgetting what was seen.
    pub fn load(&self, exchanges: Vec<Exchange>) {
        let mut state = self.lock();
        state.used = vec![false; exchanges.len()];
        state.exchanges = exchanges;
        state.seen.clear();
    }

    /// Leave the query parameters `names` out when matching sent URLs with
    /// recorded ones: the host adds them (credentials carried in the query),
    /// so a recording need not hold them.
    pub fn ignore_query_params(&self, names: Vec<String>) {
        self.lock().host_params = names;
    }

    /// The requests seen since the last [`load`](Self::load), in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.lock().seen.clone()
    }

    /// Which recorded exchanges answered no request.
    pub fn unused(&self) -> Vec<usize> {
        let state = self.lock();
        (0..state.exchanges.len())
            .filter(|i| !state.used[*i])
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The answer for a request, noting that it was seen.
    fn answer(
        &self,
        method: &str,
        url: &str,
        headers: &http::HeaderMap,
        body: Option<&[u8]>,
    ) -> Option<Answer> {
        let mut state = self.lock();
        let matching: Vec<usize> = state
            .exchanges
            .iter()
            .enumerate()
            .filter(|(_, e)| e.matches(method, url, body, &state.host_params))
            .filter(|(_, e)| {
                e.headers.iter().all(|(name, value)| {
                    headers
                        .get_all(name.as_str())
                        .iter()
                        .any(|v| v.as_bytes() == value.as_bytes())
                })
            })
            .map(|(i, _)| i)
            .collect();
        let chosen = matching
            .iter()
            .copied()
            .find(|i| !state.used[*i])
            .or_else(|| matching.last().copied());
        if let Some(i) = chosen {
            state.used[i] = true;
        }
        state.seen.push(Seen {
            method: method.to_owned(),
            url: url.to_owned(),
            matched: chosen,
        });
        chosen.map(|i| state.exchanges[i].answer.clone())
    }
}

impl Exchange {
    fn matches(&self, method: &str, url: &str, body: Option<&[u8]>, ignored: &[String]) -> bool {
        if !self.method.eq_ignore_ascii_case(method) || !same_url(&self.url, url, ignored) {
            return false;
        }
        match &self.body {
            None => true,
            Some(expected) => body
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
                .is_some_and(|sent| &sent == expected),
        }
    }
}

/// Whether a sent URL is the recorded one: scheme, host, port and path the
/// same once parsed (so `HTTPS://Api.Example.com:443/a` is
/// `https://api.example.com/a`), and the same query parameters in any order,
/// leaving out the sent URL's `ignored` ones. A recorded value `*` takes any
/// value (a time window computed from the clock, say).
fn same_url(recorded: &str, sent: &str, ignored: &[String]) -> bool {
    let (Ok(recorded), Ok(sent)) = (url::Url::parse(recorded), url::Url::parse(sent)) else {
        return recorded == sent;
    };
    let without_query = |url: &url::Url| {
        let mut url = url.clone();
        url.set_query(None);
        url.set_fragment(None);
        url
    };
    if without_query(&recorded) != without_query(&sent) {
        return false;
    }
    let mut wanted: Vec<(String, String)> = recorded.query_pairs().into_owned().collect();
    let mut got: Vec<(String, String)> = sent
        .query_pairs()
        .into_owned()
        .filter(|(k, _)| !ignored.iter().any(|i| i == k))
        .collect();
    if wanted.len() != got.len() {
        return false;
    }
    wanted.sort();
    got.sort();
    wanted
        .iter()
        .zip(&got)
        .all(|((wk, wv), (gk, gv))| wk == gk && (wv == "*" || wv == gv))
}

impl Transport for Replay {
    fn execute<'a>(
        &'a self,
        _client: &'a reqwest::Client,
        request: reqwest::Request,
    ) -> futures_util::future::BoxFuture<'a, Result<reqwest::Response, EgressError>> {
        Box::pin(async move {
            let method = request.method().as_str().to_owned();
            let url = request.url().to_string();
            let body = request.body().and_then(|b| b.as_bytes());
            match self.answer(&method, &url, request.headers(), body) {
                None => Err(EgressError::Connect(format!(
                    "not in the recording: {method} {}",
                    without_query(request.url())
                ))),
                Some(Answer::Timeout) => Err(EgressError::Timeout),
                Some(Answer::Unreachable) => {
                    Err(EgressError::Connect("recorded as unreachable".to_owned()))
                }
                Some(Answer::Respond {
                    status,
                    headers,
                    body,
                }) => {
                    let mut response = http::Response::builder().status(status);
                    for (name, value) in headers {
                        response = response.header(name, value);
                    }
                    let response = response.body(body).map_err(|e| {
                        EgressError::Upstream(format!("the recorded response is not valid: {e}"))
                    })?;
                    Ok(reqwest::Response::from(response))
                }
            }
        })
    }
}

/// `url` without its query (which may hold a credential).
fn without_query(url: &url::Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn respond(status: u16) -> Answer {
        Answer::Respond {
            status,
            headers: vec![],
            body: vec![],
        }
    }

    fn exchange(method: &str, url: &str, body: Option<serde_json::Value>, status: u16) -> Exchange {
        Exchange {
            method: method.into(),
            url: url.into(),
            headers: vec![],
            body,
            answer: respond(status),
        }
    }

    #[test]
    fn requests_take_matching_exchanges_in_order_and_a_retry_reuses_the_last() {
        let replay = Replay::new();
        replay.load(vec![
            exchange("GET", "https://api.example.com/a?page=1", None, 200),
            exchange("GET", "https://api.example.com/a?page=1", None, 201),
            exchange(
                "POST",
                "https://api.example.com/b",
                Some(serde_json::json!({"x": 1})),
                202,
            ),
        ]);
        let none = http::HeaderMap::new();
        let status = |answer: Option<Answer>| match answer {
            Some(Answer::Respond { status, .. }) => Some(status),
            _ => None,
        };
        let url = "HTTPS://API.example.com:443/a?page=1";
        assert_eq!(status(replay.answer("get", url, &none, None)), Some(200));
        assert_eq!(status(replay.answer("GET", url, &none, None)), Some(201));
        assert_eq!(status(replay.answer("GET", url, &none, None)), Some(201));
        // The body must be the recorded JSON (key order aside).
        let post = "https://api.example.com/b";
        assert_eq!(
            status(replay.answer("POST", post, &none, Some(br#"{"x":2}"#))),
            None
        );
        assert_eq!(replay.unused(), vec![2]);
        assert_eq!(
            status(replay.answer("POST", post, &none, Some(br#"{ "x" : 1 }"#))),
            Some(202)
        );
        assert_eq!(
            status(replay.answer("GET", "https://api.example.com/a?page=2", &none, None)),
            None
        );
        let seen = replay.seen();
        assert_eq!(seen.len(), 6);
        assert_eq!(seen[3].matched, None);
        assert_eq!(seen[5].url, "https://api.example.com/a?page=2");
        assert!(replay.unused().is_empty());
        // A query parameter the host adds is left out of the comparison.
        replay.ignore_query_params(vec!["api_key".into()]);
        replay.load(vec![exchange(
            "GET",
            "https://api.example.com/c?q=1",
            None,
            200,
        )]);
        let sent = "https://api.example.com/c?q=1&api_key=k";
        assert_eq!(status(replay.answer("GET", sent, &none, None)), Some(200));
        let sent = "https://api.example.com/c?api_key=k";
        assert_eq!(status(replay.answer("GET", sent, &none, None)), None);
        // Parameters in another order, and `*` for a value computed at run time.
        replay.load(vec![exchange(
            "GET",
            "https://api.example.com/d?after=*&q=1",
            None,
            200,
        )]);
        let sent = "https://api.example.com/d?q=1&after=2026-12-03T10%3A00%3A00Z";
        assert_eq!(status(replay.answer("GET", sent, &none, None)), Some(200));
        let sent = "https://api.example.com/d?q=2&after=x";
        assert_eq!(status(replay.answer("GET", sent, &none, None)), None);
        let sent = "https://api.example.com/d?q=1";
        assert_eq!(status(replay.answer("GET", sent, &none, None)), None);
        // A header the recording names must be there with its value.
        let mut versioned = exchange("GET", "https://api.example.com/e", None, 200);
        versioned.headers = vec![("cal-api-version".into(), "2024-08-13".into())];
        replay.load(vec![versioned]);
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "cal-api-version",
            http::HeaderValue::from_static("2024-09-04"),
        );
        assert_eq!(
            status(replay.answer("GET", "https://api.example.com/e", &headers, None)),
            None
        );
        headers.insert(
            "cal-api-version",
            http::HeaderValue::from_static("2024-08-13"),
        );
        assert_eq!(
            status(replay.answer("GET", "https://api.example.com/e", &headers, None)),
            Some(200)
        );
        replay.load(Vec::new());
        assert!(replay.seen().is_empty());
    }
}
