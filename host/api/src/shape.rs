//! Every error answer in the error shape, whoever made it, and no answer
//! that echoes a caller's value at length.
//!
//! axum answers a wrong method (405) with an empty body, and hyper answers a
//! request target or header block past its own limits (414, 431) before the
//! router sees it. So the router refuses what is long well below hyper's
//! limits, in the error shape, and any error answer not in the shape (no
//! JSON body) is rewritten into it, keeping its status and headers.

use super::error::ApiError;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use http::StatusCode;

/// Longest request target (path and query) the API reads; hyper's own
/// limit, answered without a body, is 64 KiB.
pub(super) const MAX_URI_BYTES: usize = 8 * 1024;
/// Largest header block (names and values) the API reads.
pub(super) const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Longest caller-supplied value an error message repeats; longer ones are
/// cut and marked with `…`.
pub(super) const MAX_ECHO_CHARS: usize = 64;
/// Longest error message the API sends, whoever wrote it; longer ones end
/// with ` … (truncated)`.
pub(super) const MAX_MESSAGE_CHARS: usize = 4096;

/// The longest word kept whole when its `/`-separated segments are each
/// short: a route of valid names (three 64-character names and the fixed
/// parts) fits.
const MAX_ROUTE_CHARS: usize = 256;

pub(super) async fn error_shape(request: Request, next: Next) -> Response {
    let target_len = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    if target_len > MAX_URI_BYTES {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri-too-long",
            format!("the request target is {target_len} bytes; the limit is {MAX_URI_BYTES}"),
        )
        .into_response();
    }
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers-too-large",
            format!("the headers are {header_bytes} bytes; the limit is {MAX_HEADER_BYTES}"),
        )
        .into_response();
    }
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let error = match status {
        // The method router adds `Allow` after this layer has run.
        StatusCode::METHOD_NOT_ALLOWED => ApiError::new(
            status,
            "method-not-allowed",
            format!(
                "{} is not allowed on {}; the Allow header lists the methods it takes",
                echo(method.as_str()),
                echo(&path)
            ),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            status,
            "body-too-large",
            format!(
                "the body is over this route's limit ({} bytes)",
                super::MAX_BODY_BYTES
            ),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            status,
            "unsupported-media-type",
            "send the body as application/json",
        ),
        s if s.is_server_error() => ApiError::new(status, "internal", "internal error"),
        s => ApiError::new(
            status,
            "bad-request",
            s.canonical_reason().unwrap_or("the request was refused"),
        ),
    };
    let shaped = error.into_response();
    // Keep what the first answer said in its headers, but describe the new body.
    parts.headers.remove(http::header::CONTENT_LENGTH);
    parts.headers.remove(http::header::CONTENT_ENCODING);
    let (shaped_parts, body) = shaped.into_parts();
    parts.headers.extend(shaped_parts.headers);
    Response::from_parts(parts, body)
}

/// `value` as an error message may repeat it: at most `MAX_ECHO_CHARS`
/// characters, and `…` when cut.
pub(super) fn echo(value: &str) -> String {
    let mut chars = value.char_indices();
    match chars.nth(MAX_ECHO_CHARS) {
        Some((cut, _)) => format!("{}…", &value[..cut]),
        None => value.to_owned(),
    }
}

/// `message` with every quoted span (`"…"`, `` `…` ``) and every unquoted
/// word longer than `MAX_ECHO_CHARS` cut to it: messages built anywhere
/// (domain errors, serde, axum) quote the caller's values or name them as
/// one word, and none of those may come back at length.
pub(super) fn cap_echoes(message: &str) -> std::borrow::Cow<'_, str> {
    // Every echo longer than the cap is a run of more than MAX_ECHO_CHARS
    // characters; a short message has none.
    if message.chars().count() <= MAX_ECHO_CHARS {
        return std::borrow::Cow::Borrowed(message);
    }
    // A message this long is no longer for people; cut before the per-char work.
    let (message, cut) = match message.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((at, _)) => (&message[..at], true),
        None => (message, false),
    };
    let chars: Vec<char> = message.chars().collect();
    let mut out = String::with_capacity(message.len().min(4096));
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '`' {
            // A quoted span, up to its unescaped closing quote (or the end).
            let mut j = i + 1;
            while j < chars.len() && chars[j] != c {
                j += if chars[j] == '\\' { 2 } else { 1 };
            }
            let inner = &chars[i + 1..j.min(chars.len())];
            out.push(c);
            push_capped(&mut out, inner);
            if j < chars.len() {
                out.push(c);
            }
            i = j + 1;
        } else if c.is_whitespace() {
            out.push(c);
            i += 1;
        } else {
            let mut j = i;
            while j < chars.len() && !chars[j].is_whitespace() && chars[j] != '"' && chars[j] != '`'
            {
                j += 1;
            }
            // A route the host names (`PUT /v1/workspaces/…/credentials/x`)
            // is one word of short segments: each segment is capped, so a
            // path made of valid names survives whole.
            let word = &chars[i..j];
            if word.len() > MAX_ROUTE_CHARS {
                push_capped(&mut out, word);
            } else {
                for (k, segment) in word.split(|c| *c == '/').enumerate() {
                    if k > 0 {
                        out.push('/');
                    }
                    push_capped(&mut out, segment);
                }
            }
            i = j;
        }
    }
    if cut {
        out.push_str(" … (truncated)");
    }
    std::borrow::Cow::Owned(out)
}

fn push_capped(out: &mut String, run: &[char]) {
    if run.len() > MAX_ECHO_CHARS {
        out.extend(&run[..MAX_ECHO_CHARS]);
        out.push('…');
    } else {
        out.extend(run);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_are_cut_at_the_cap_and_marked() {
        let long = "x".repeat(300);
        let at = "y".repeat(MAX_ECHO_CHARS);
        let table = [
            (format!("workspace {:?} not found", long), format!("workspace \"{}…\" not found", &long[..64])),
            (format!("unknown field `{long}`, expected `id`"), format!("unknown field `{}…`, expected `id`", &long[..64])),
            (format!("plugin {long}@1.0.0 is not installed"), format!("plugin {}… is not installed", &long[..64])),
            (format!("workspace {at:?} not found"), format!("workspace {at:?} not found")),
            (format!("a \"quoted \\\"{long}\" b"), format!("a \"{}…\" b", &format!("quoted \\\"{long}")[..64])),
            (format!("unterminated \"{long}"), format!("unterminated \"{}…", &long[..64])),
            (format!("spaced {:?} value", "a b ".repeat(50)), format!("spaced \"{}…\" value", &"a b ".repeat(50)[..64])),
            ("short".to_owned(), "short".to_owned()),
            ("a message of many short words, longer than sixty-four characters in all, is kept whole".to_owned(),
             "a message of many short words, longer than sixty-four characters in all, is kept whole".to_owned()),
        ];
        for (message, expected) in table {
            assert_eq!(cap_echoes(&message), expected, "{message}");
        }
        assert_eq!(echo(&long), format!("{}…", &long[..64]));
        let huge = "word ".repeat(10_000);
        let capped = cap_echoes(&huge);
        assert!(
            capped.ends_with(" … (truncated)"),
            "{}",
            &capped[capped.len() - 40..]
        );
        assert!(capped.chars().count() <= MAX_MESSAGE_CHARS + 20);
        assert_eq!(echo(&at), at);
        assert_eq!(echo(&"é".repeat(65)), format!("{}…", "é".repeat(64)));
    }

    #[test]
    fn a_route_of_valid_names_survives_and_each_long_segment_is_cut() {
        let name = "n".repeat(64);
        let route = format!("PUT /v1/workspaces/{name}/connections/{name}/credentials/{name}");
        let message = format!("credential {name} is not set: set it with {route}");
        assert_eq!(cap_echoes(&message), message);
        let long = "x".repeat(200);
        let text = format!("unknown /v1/{long}/y");
        let capped = cap_echoes(&text);
        assert!(
            capped.contains(&format!("/v1/{}…/y", "x".repeat(MAX_ECHO_CHARS))),
            "{capped}"
        );
        // A word past the route length is cut whole, however many slashes.
        let text = format!("unknown {}", "a/".repeat(400));
        let capped = cap_echoes(&text);
        assert!(capped.chars().count() < 100, "{capped}");
    }
}
