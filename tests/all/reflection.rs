//! A credentialed destination that reflects the request (a debugging endpoint,
//! a misconfigured proxy) hands the plugin no form of the credential: not
//! compressed, not in slices, not re-encoded.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use patchbay::egress::credentials::Secret;
use patchbay::runtime::InvokeOutcome;
use patchbay::runtime::error::{InvokeError, PluginFailure};
use patchbay_tests::{Harness, probe_with_bearer_credential};
use serde_json::{Value, json};
use std::io::Write as _;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// Chosen so that every encoding below differs from the raw value.
const TOKEN: &str = "tok/en+with=odd~chars_0123456789";

/// What a reflecting upstream does with the request's `Authorization` header.
#[derive(Clone, Copy, Debug)]
enum Reflect {
    Gzip,
    Deflate,
    UnknownCoding,
    PartialContent,
    JsonSlashes,
    JsonUnicode,
    PercentUpper,
    PercentLower,
    FormEncoded,
    Hex,
    Base64Header,
    Base64UrlToken,
    Base64Aligned(usize),
    HeaderPercent,
    /// `identity` in one header, `gzip` in a second.
    SplitCodingHeaders,
    /// `gzip, gzip` over a body compressed twice.
    StackedGzip,
    /// Only `+` escaped (as .NET's encoder does), `/` and `=` left alone.
    JsonPlusOnly,
    /// HTML numeric character references for some characters.
    HtmlEntities,
}

const ALL: [Reflect; 20] = [
    Reflect::SplitCodingHeaders,
    Reflect::StackedGzip,
    Reflect::JsonPlusOnly,
    Reflect::HtmlEntities,
    Reflect::Gzip,
    Reflect::Deflate,
    Reflect::UnknownCoding,
    Reflect::PartialContent,
    Reflect::JsonSlashes,
    Reflect::JsonUnicode,
    Reflect::PercentUpper,
    Reflect::PercentLower,
    Reflect::FormEncoded,
    Reflect::Hex,
    Reflect::Base64Header,
    Reflect::Base64UrlToken,
    Reflect::Base64Aligned(0),
    Reflect::Base64Aligned(1),
    Reflect::Base64Aligned(2),
    Reflect::HeaderPercent,
];

fn percent(text: &str, lower: bool) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else if lower {
                format!("%{b:02x}")
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Every form this test's upstream may send the token back in.
fn forms_of_token() -> Vec<String> {
    let unicode: String = TOKEN
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_string()
            } else {
                format!("\\u{:04x}", c as u32)
            }
        })
        .collect();
    vec![
        TOKEN.to_owned(),
        TOKEN.replace('/', "\\/"),
        unicode,
        percent(TOKEN, false),
        percent(TOKEN, true),
        hex::encode(TOKEN),
        STANDARD.encode(TOKEN).trim_end_matches('=').to_owned(),
        URL_SAFE_NO_PAD.encode(TOKEN),
        // Inner slices long enough to matter, whatever the alignment.
        TOKEN[4..20].to_owned(),
    ]
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).expect("gzip");
    gz.finish().expect("gzip")
}

impl Respond for Reflect {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let auth = request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let token = auth.strip_prefix("Bearer ").unwrap_or(&auth).to_owned();
        let text = |body: String| ResponseTemplate::new(200).set_body_string(body);
        match self {
            Reflect::Gzip => {
                let mut gz =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                gz.write_all(format!("echo: {auth}").as_bytes())
                    .expect("gzip");
                ResponseTemplate::new(200)
                    .insert_header("content-encoding", "gzip")
                    .set_body_bytes(gz.finish().expect("gzip"))
            }
            Reflect::Deflate => {
                let mut z =
                    flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
                z.write_all(format!("echo: {auth}").as_bytes())
                    .expect("deflate");
                ResponseTemplate::new(200)
                    .insert_header("content-encoding", "deflate")
                    .set_body_bytes(z.finish().expect("deflate"))
            }
            Reflect::UnknownCoding => ResponseTemplate::new(200)
                .insert_header("content-encoding", "x-reversed")
                .set_body_string(auth.chars().rev().collect::<String>()),
            Reflect::PartialContent => ResponseTemplate::new(206)
                .insert_header("content-range", format!("bytes 0-5/{}", auth.len()))
                .set_body_string(auth[..6.min(auth.len())].to_owned()),
            Reflect::JsonSlashes => text(format!(r#"{{"auth":"{}"}}"#, token.replace('/', "\\/"))),
            Reflect::JsonUnicode => text(format!(
                r#"{{"auth":"{}"}}"#,
                token
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() {
                        c.to_string()
                    } else {
                        format!("\\u{:04X}", c as u32)
                    })
                    .collect::<String>()
            )),
            Reflect::PercentUpper => text(format!("next=/cb?auth={}", percent(&auth, false))),
            Reflect::PercentLower => text(format!("next=/cb?auth={}", percent(&auth, true))),
            Reflect::FormEncoded => text(format!(
                "auth={}",
                url::form_urlencoded::byte_serialize(auth.as_bytes()).collect::<String>()
            )),
            Reflect::Hex => text(format!("dump {}", hex::encode(auth.as_bytes()))),
            Reflect::Base64Header => text(STANDARD.encode(format!("Authorization: {auth}\r\n"))),
            Reflect::Base64UrlToken => text(URL_SAFE_NO_PAD.encode(&token)),
            Reflect::Base64Aligned(skip) => {
                let mut bytes = b"xyz"[..*skip].to_vec();
                bytes.extend_from_slice(token.as_bytes());
                bytes.extend_from_slice(b"tail");
                text(STANDARD.encode(bytes))
            }
            Reflect::SplitCodingHeaders => ResponseTemplate::new(200)
                .append_header("content-encoding", "identity")
                .append_header("content-encoding", "gzip")
                .set_body_bytes(gzip(format!("echo: {auth}").as_bytes())),
            Reflect::StackedGzip => ResponseTemplate::new(200)
                .insert_header("content-encoding", "gzip, gzip")
                .set_body_bytes(gzip(&gzip(format!("echo: {auth}").as_bytes()))),
            Reflect::JsonPlusOnly => {
                text(format!(r#"{{"auth":"{}"}}"#, token.replace('+', "\\u002B")))
            }
            Reflect::HtmlEntities => text(format!(
                "<pre>{}</pre>",
                token.replace('/', "&#47;").replace('=', "&#x3D;")
            )),
            Reflect::HeaderPercent => ResponseTemplate::new(200)
                .insert_header("x-echo", percent(&auth, false).as_str())
                .set_body_string("see header"),
        }
    }
}

async fn reflected(reflect: Reflect, headers: Value) -> (InvokeOutcome, MockServer) {
    let harness = Harness::new();
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(reflect)
        .mount(&server)
        .await;
    let plugin = harness
        .install_package(probe_with_bearer_credential())
        .await;
    let binding = harness.binding(&plugin, "ws-1", "crm", &[("upstream", &server.uri())]);
    harness
        .set_credential(
            "crm",
            "token",
            Secret::Bearer {
                token: TOKEN.into(),
            },
        )
        .await;
    let outcome = harness
        .invoke(
            &plugin,
            &binding,
            "fetch",
            json!({ "url": format!("{}/allowed/echo", server.uri()), "headers": headers }),
        )
        .await;
    (outcome, server)
}

#[tokio::test]
async fn no_reflection_of_the_credential_reaches_the_plugin() {
    for reflect in ALL {
        // The plugin asks for a coding it could decode itself, to get around scrubbing.
        let (outcome, server) = reflected(reflect, json!({ "accept-encoding": "gzip" })).await;
        let result = outcome.result;
        let text = match &result {
            Ok(output) => format!("{} {}", output["body"].as_str().unwrap_or(""), output),
            Err(error) => error.to_string(),
        };
        for form in forms_of_token() {
            assert!(!text.contains(&form), "{reflect:?}: {form} in {text}");
        }
        let received = server.received_requests().await.expect("recorded");
        assert_eq!(received.len(), 1, "{reflect:?}");
        // The host, not the plugin, chose the codings (the ones it decodes).
        let asked = received[0]
            .headers
            .get("accept-encoding")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(
            asked.contains("br") && asked.contains("deflate"),
            "{reflect:?}: {asked}"
        );
        match reflect {
            Reflect::UnknownCoding | Reflect::PartialContent | Reflect::StackedGzip => assert!(
                matches!(result, Err(InvokeError::Plugin(_))),
                "{reflect:?}: {result:?}"
            ),
            // `identity` in one header and `gzip` in another is gzip: decoded.
            Reflect::Gzip | Reflect::Deflate | Reflect::SplitCodingHeaders => {
                let body = result.expect("decoded by the host");
                assert_eq!(body["body"], "echo: Bearer [REDACTED]", "{reflect:?}");
            }
            _ => {
                let output = result.expect("scrubbed");
                assert!(
                    output.to_string().contains("[REDACTED]"),
                    "{reflect:?}: {output}"
                );
                // The upstream's length would tell the secret's.
                assert!(output["content_length"].is_null(), "{reflect:?}: {output}");
            }
        }
    }
}

#[tokio::test]
async fn a_credentialed_request_may_not_ask_for_partial_content() {
    let (outcome, server) = reflected(Reflect::PercentUpper, json!({ "range": "bytes=0-5" })).await;
    assert!(
        matches!(
            outcome.result,
            Err(InvokeError::Plugin(PluginFailure::AccessDenied { .. }))
        ),
        "{:?}",
        outcome.result
    );
    assert!(
        outcome
            .denials
            .iter()
            .any(|d| d.reason.contains("partial content")),
        "{:?}",
        outcome.denials
    );
    assert!(
        server
            .received_requests()
            .await
            .expect("recorded")
            .is_empty()
    );
}
