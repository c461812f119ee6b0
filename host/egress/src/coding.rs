//! Content codings of responses the host must read whole: after a request
//! that carried a credential, the host chooses the codings itself, decodes
//! the body before scrubbing it, and refuses anything it could not read
//! (an unknown or stacked coding, a transfer coding other than chunked, or
//! partial content, which could hand a secret over in slices).

use super::EgressError;
use bytes::Bytes;
use futures_util::{Stream, TryStreamExt};
use http::HeaderMap;

/// What the host asks for on a credentialed request: exactly what it decodes.
pub const ACCEPTED: &str = "gzip, deflate, br";

/// A content coding the host decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// `gzip` (or `x-gzip`).
    Gzip,
    /// HTTP's `deflate` is the zlib format.
    Deflate,
    /// `br`.
    Brotli,
}

/// The one coding to decode (`None` for none), or why the response cannot
/// be read whole. Every `Content-Encoding` and `Transfer-Encoding` header
/// counts, not only the first.
pub fn readable(
    status: http::StatusCode,
    headers: &HeaderMap,
) -> Result<Option<Coding>, EgressError> {
    if status == http::StatusCode::PARTIAL_CONTENT
        || headers.contains_key(http::header::CONTENT_RANGE)
    {
        return Err(EgressError::Unscrubbable(
            "partial content, which is refused after a request that carried a credential".into(),
        ));
    }
    let listed = |name: http::header::HeaderName| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .flat_map(|value| {
                String::from_utf8_lossy(value.as_bytes())
                    .split(',')
                    .map(|c| c.trim().to_ascii_lowercase())
                    .filter(|c| !c.is_empty())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let transfer = listed(http::header::TRANSFER_ENCODING);
    if transfer.iter().any(|c| c != "chunked") {
        return Err(EgressError::Unscrubbable(
            "a transfer coding other than chunked, which the host does not decode".into(),
        ));
    }
    let content: Vec<String> = listed(http::header::CONTENT_ENCODING)
        .into_iter()
        .filter(|c| c != "identity")
        .collect();
    match content.as_slice() {
        [] => Ok(None),
        [one] => match one.as_str() {
            "gzip" | "x-gzip" => Ok(Some(Coding::Gzip)),
            "deflate" => Ok(Some(Coding::Deflate)),
            "br" => Ok(Some(Coding::Brotli)),
            // The value is the upstream's: it is not repeated to the plugin.
            _ => Err(EgressError::Unscrubbable(
                "a content coding the host does not decode".into(),
            )),
        },
        _ => Err(EgressError::Unscrubbable(
            "more than one content coding, which the host does not decode".into(),
        )),
    }
}

/// A body error: the transport's, or the decoder's.
#[derive(Debug)]
pub enum BodyError {
    /// Reading from the upstream failed (a timeout, the connection closed).
    Transport(reqwest::Error),
    /// The body is not valid in its content coding: the decoder's reason.
    Decode(String),
}

/// `raw`, decoded from `coding`.
pub fn decoded<S>(raw: S, coding: Coding) -> impl Stream<Item = Result<Bytes, BodyError>> + Send
where
    S: Stream<Item = Result<Bytes, reqwest::Error>> + Send + 'static,
{
    use async_compression::tokio::bufread::{BrotliDecoder, GzipDecoder, ZlibDecoder};
    use tokio_util::io::{ReaderStream, StreamReader};
    let reader = StreamReader::new(raw.map_err(std::io::Error::other));
    let decoder: std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>> = match coding {
        Coding::Gzip => Box::pin(GzipDecoder::new(reader)),
        Coding::Deflate => Box::pin(ZlibDecoder::new(reader)),
        Coding::Brotli => Box::pin(BrotliDecoder::new(reader)),
    };
    ReaderStream::new(decoder).map_err(|error| {
        match error
            .into_inner()
            .map(|inner| inner.downcast::<reqwest::Error>())
        {
            Some(Ok(transport)) => BodyError::Transport(*transport),
            Some(Err(other)) => BodyError::Decode(other.to_string()),
            None => BodyError::Decode("the encoded body is malformed".into()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::header::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                http::HeaderValue::from_str(value).expect("value"),
            );
        }
        map
    }

    /// Response headers, and the coding read (`None`: refused).
    type Case<'a> = (&'a [(&'a str, &'a str)], Option<Option<Coding>>);

    #[test]
    fn only_one_known_coding_or_none_is_read() {
        let ok = http::StatusCode::OK;
        let cases: &[Case<'_>] = &[
            (&[], Some(None)),
            (&[("content-encoding", "identity")], Some(None)),
            (&[("content-encoding", "gzip")], Some(Some(Coding::Gzip))),
            (&[("content-encoding", "X-GZIP")], Some(Some(Coding::Gzip))),
            (
                &[("content-encoding", "deflate")],
                Some(Some(Coding::Deflate)),
            ),
            (&[("content-encoding", "br")], Some(Some(Coding::Brotli))),
            (
                &[("content-encoding", "identity, gzip")],
                Some(Some(Coding::Gzip)),
            ),
            (
                &[("transfer-encoding", "chunked"), ("content-encoding", "br")],
                Some(Some(Coding::Brotli)),
            ),
            // Refused: unknown, stacked, split over headers, a transfer coding.
            (&[("content-encoding", "x-reversed")], None),
            (&[("content-encoding", "zstd")], None),
            (&[("content-encoding", "gzip, gzip")], None),
            (
                &[("content-encoding", "gzip"), ("content-encoding", "gzip")],
                None,
            ),
            (
                &[
                    ("content-encoding", "identity"),
                    ("content-encoding", "gzip"),
                    ("content-encoding", "br"),
                ],
                None,
            ),
            (&[("transfer-encoding", "gzip, chunked")], None),
            (&[("content-range", "bytes 0-3/10")], None),
        ];
        for (pairs, expected) in cases {
            let got = readable(ok, &headers(pairs)).ok();
            assert_eq!(got, *expected, "{pairs:?}");
        }
        assert!(readable(http::StatusCode::PARTIAL_CONTENT, &HeaderMap::new()).is_err());
    }
}
