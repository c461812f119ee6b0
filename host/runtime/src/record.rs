//! A call's tape: what the host keeps of one invocation's host calls while
//! it records (HTTP exchanges, KV calls, clock readings, random values,
//! each as the plugin saw it, secrets redacted), and what it plays back to
//! replay one (the clock readings and random values recorded, in order).
//!
//! Recording costs a call only when its connection records: a call without
//! a tape runs the host's own clocks and generators, as before.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use patchbay_policy::recording::{
    Body as RecordedBody, ConfigRead, HostCalls, KvCall, KvValue, MAX_RECORDED_BODY,
    MAX_RECORDED_CLOCK_READINGS, MAX_RECORDED_CONFIG_READS, MAX_RECORDED_EXCHANGES,
    MAX_RECORDED_KEY, MAX_RECORDED_KV_CALLS, MAX_RECORDED_KV_VALUE, MAX_RECORDED_RANDOM_BYTES,
    MAX_TRANSCRIPT_BYTES, REDACTED, RecordedExchange, RecordedRequest, RecordedResponse, Redactor,
};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtxBuilder};

/// One call's tape: it records, or it plays back.
pub struct Tape {
    redactor: Redactor,
    state: Mutex<State>,
    play: Option<Playback>,
}

impl std::fmt::Debug for Tape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.play.is_some() {
            "Tape(playback)"
        } else {
            "Tape(recording)"
        })
    }
}

/// What a replay serves: the clock readings and random values of the
/// recorded call, in order.
#[derive(Debug, Clone, Default)]
pub struct Playback {
    /// Wall-clock readings, ns since the Unix epoch.
    pub wall_ns: Vec<u64>,
    /// Monotonic readings, ns.
    pub monotonic_ns: Vec<u64>,
    /// `wasi:random/random` bytes.
    pub secure: Vec<u8>,
    /// `wasi:random/insecure` bytes.
    pub insecure: Vec<u8>,
    /// `wasi:random/insecure-seed`.
    pub insecure_seed: Option<u128>,
}

#[derive(Default)]
struct State {
    calls: HostCalls,
    exchanges: Vec<Pending>,
    /// Bytes the transcript may still keep (bodies, KV keys and values,
    /// URLs, headers, settings).
    bytes_left: usize,
    /// What a bound left out, by kind, counted.
    dropped: BTreeMap<&'static str, usize>,
    secure: Vec<u8>,
    insecure: Vec<u8>,
    /// Playback: readings and bytes asked for past what was recorded.
    overrun: Vec<String>,
}

impl State {
    fn new() -> Self {
        Self {
            bytes_left: MAX_TRANSCRIPT_BYTES,
            ..Self::default()
        }
    }

    /// Take `bytes` from what the transcript may still keep; `false` (and
    /// nothing taken) past it.
    fn charge(&mut self, bytes: usize) -> bool {
        match self.bytes_left.checked_sub(bytes) {
            Some(left) => {
                self.bytes_left = left;
                true
            }
            None => false,
        }
    }

    /// Count `n` of `what` left out past a bound.
    fn drop_count(&mut self, what: &'static str, n: usize) {
        if n > 0 {
            *self.dropped.entry(what).or_default() += n;
        }
    }
}

/// One body of an exchange while it streams.
#[derive(Default)]
struct Stream {
    content_type: Option<String>,
    bytes: Vec<u8>,
    /// Cut at a bound.
    cut: bool,
}

impl Stream {
    fn of(headers: &[(String, String)]) -> Self {
        Self {
            content_type: headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
                .map(|(_, v)| v.to_ascii_lowercase()),
            ..Self::default()
        }
    }

    /// Keep what fits of `data`: the body's own bound, and the bytes the
    /// whole transcript has left (`left`, charged).
    fn keep(&mut self, left: &mut usize, data: &[u8]) {
        let room = MAX_RECORDED_BODY
            .saturating_sub(self.bytes.len())
            .min(*left);
        let kept = data.len().min(room);
        self.cut |= kept < data.len();
        self.bytes.extend_from_slice(&data[..kept]);
        *left -= kept;
    }

    fn body(&self, redactor: &Redactor) -> RecordedBody {
        redactor.body(&self.bytes, self.content_type.as_deref(), self.cut)
    }
}

/// An exchange while its bodies stream.
struct Pending {
    request: RecordedRequest,
    request_body: Stream,
    response: Option<(u16, Vec<(String, String)>)>,
    response_body: Stream,
    body_error: Option<String>,
    error: Option<String>,
}

/// Which body of an exchange a [`Tee`] copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The plugin's request body.
    Request,
    /// The upstream's response body.
    Response,
}

impl Tape {
    /// A tape that records, redacting with `redactor`.
    pub fn recording(redactor: Redactor) -> Arc<Self> {
        Arc::new(Self {
            redactor,
            state: Mutex::new(State::new()),
            play: None,
        })
    }

    /// A tape that plays `playback` back: it gives the call its clocks and
    /// generators, and records nothing.
    pub fn playback(playback: Playback) -> Arc<Self> {
        Arc::new(Self {
            redactor: Redactor::new(&[], []),
            state: Mutex::new(State::new()),
            play: Some(playback),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the tape records the call's host calls (or only plays clocks
    /// and random values back).
    pub fn records(&self) -> bool {
        self.play.is_none()
    }

    /// What redacts this tape's values.
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// Give `wasi` this tape's clocks and generators: the host's, recorded;
    /// or the recorded ones, played back.
    pub fn configure(self: &Arc<Self>, wasi: &mut WasiCtxBuilder) {
        match &self.play {
            None => {
                let seed = fastrand::u128(..);
                self.lock().calls.random.insecure_seed = Some(seed.to_string());
                wasi.wall_clock(RecordedWall {
                    tape: self.clone(),
                    clock: wasmtime_wasi::clocks::WallClock::new(),
                })
                .monotonic_clock(RecordedMonotonic {
                    tape: self.clone(),
                    clock: wasmtime_wasi::clocks::MonotonicClock::new(),
                })
                .secure_random(RecordedRng {
                    tape: self.clone(),
                    inner: wasmtime_wasi::thread_rng(),
                    secure: true,
                })
                .insecure_random(RecordedRng {
                    tape: self.clone(),
                    inner: wasmtime_wasi::thread_rng(),
                    secure: false,
                })
                .insecure_random_seed(seed);
            }
            Some(play) => {
                wasi.wall_clock(PlayedClock::new(
                    self.clone(),
                    play.wall_ns.clone(),
                    "the wall clock",
                ))
                .monotonic_clock(PlayedClock::new(
                    self.clone(),
                    play.monotonic_ns.clone(),
                    "the monotonic clock",
                ))
                .secure_random(PlayedRng::new(self.clone(), play.secure.clone(), "random"))
                .insecure_random(PlayedRng::new(
                    self.clone(),
                    play.insecure.clone(),
                    "insecure random",
                ))
                .insecure_random_seed(play.insecure_seed.unwrap_or(0));
            }
        }
    }

    /// A request leaves the plugin: its index among the call's exchanges.
    /// Past [`MAX_RECORDED_EXCHANGES`] or the transcript's bytes, the request
    /// is only counted, and its index matches nothing.
    pub fn request(&self, method: &str, url: &str, headers: Vec<(String, String)>) -> usize {
        let cost = method.len() + url.len() + header_bytes(&headers);
        let mut state = self.lock();
        if state.exchanges.len() >= MAX_RECORDED_EXCHANGES || !state.charge(cost) {
            state.drop_count("outbound requests", 1);
            return usize::MAX;
        }
        state.exchanges.push(Pending {
            request_body: Stream::of(&headers),
            request: RecordedRequest {
                method: method.to_owned(),
                url: self.redactor.url(url),
                headers: self.redactor.headers(headers),
                body: RecordedBody::default(),
            },
            response: None,
            response_body: Stream::default(),
            body_error: None,
            error: None,
        });
        state.exchanges.len() - 1
    }

    /// The plugin got `code` instead of a response.
    pub fn failed(&self, index: usize, code: String) {
        if let Some(exchange) = self.lock().exchanges.get_mut(index) {
            exchange.error = Some(code);
        }
    }

    /// A response's head reached the plugin.
    pub fn response(&self, index: usize, status: u16, headers: Vec<(String, String)>) {
        let body = Stream::of(&headers);
        let mut headers = self.redactor.headers(headers);
        let mut state = self.lock();
        if index >= state.exchanges.len() {
            return;
        }
        if !state.charge(header_bytes(&headers)) {
            // Past the transcript's bound: the status stays, the headers go.
            headers.clear();
            state.drop_count("responses' headers", 1);
        }
        let exchange = &mut state.exchanges[index];
        exchange.response = Some((status, headers));
        exchange.response_body = body;
    }

    fn body_data(&self, index: usize, side: Side, data: &[u8]) {
        let mut state = self.lock();
        let State {
            exchanges,
            bytes_left,
            ..
        } = &mut *state;
        if let Some(e) = exchanges.get_mut(index) {
            match side {
                Side::Request => e.request_body.keep(bytes_left, data),
                Side::Response => e.response_body.keep(bytes_left, data),
            }
        }
    }

    fn body_failed(&self, index: usize, side: Side, error: String) {
        if side == Side::Response
            && let Some(e) = self.lock().exchanges.get_mut(index)
        {
            e.body_error = Some(error);
        }
    }

    /// The plugin read setting `key` (`*`: all of them) and got `value`.
    pub fn config_read(&self, key: &str, value: Option<&str>) {
        let mut key = key.to_owned();
        patchbay_policy::text::truncate(&mut key, MAX_RECORDED_KEY);
        let value = match self.redactor.is_secret_field(&key) {
            true => value.map(|_| REDACTED.to_owned()),
            false => value.map(str::to_owned),
        };
        let mut state = self.lock();
        let cost = key.len() + value.as_ref().map_or(0, String::len);
        if state.calls.config_reads.len() < MAX_RECORDED_CONFIG_READS && state.charge(cost) {
            state.calls.config_reads.push(ConfigRead { key, value });
        } else {
            state.drop_count("settings reads", 1);
        }
    }

    /// A KV value as the transcript keeps it, charged to its bytes; `None`
    /// (and a note) past [`MAX_RECORDED_KV_VALUE`] or the transcript's bound.
    pub fn kv_value(&self, bytes: &[u8]) -> Option<KvValue> {
        let mut state = self.lock();
        if bytes.len() > MAX_RECORDED_KV_VALUE || !state.charge(bytes.len()) {
            state.drop_count("KV values (too large to keep)", 1);
            return None;
        }
        drop(state);
        Some(KvValue::of(bytes, &self.redactor))
    }

    /// A KV call the plugin made.
    pub fn kv(&self, mut call: KvCall) {
        // A refused key may be as long as the plugin likes: keep its start.
        patchbay_policy::text::truncate(&mut call.key, MAX_RECORDED_KEY);
        let listed: usize = call.result.as_array().map_or(0, |keys| {
            keys.iter().filter_map(|k| k.as_str()).map(str::len).sum()
        });
        let mut state = self.lock();
        if state.calls.kv.len() < MAX_RECORDED_KV_CALLS && state.charge(call.key.len() + listed) {
            state.calls.kv.push(call);
        } else {
            state.drop_count("KV calls", 1);
        }
    }

    /// Everything recorded, the tape emptied. Bodies still streaming keep
    /// what arrived.
    pub fn take(&self) -> HostCalls {
        use base64::Engine as _;
        let mut state = self.lock();
        let mut calls = std::mem::take(&mut state.calls);
        for e in std::mem::take(&mut state.exchanges) {
            let request = RecordedRequest {
                body: e.request_body.body(&self.redactor),
                ..e.request
            };
            let response = e.response.map(|(status, headers)| RecordedResponse {
                status,
                headers,
                body: e.response_body.body(&self.redactor),
                body_error: e.body_error,
            });
            calls.http.push(RecordedExchange {
                request,
                response,
                error: e.error,
            });
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        calls.random.secure = b64.encode(std::mem::take(&mut state.secure));
        calls.random.insecure = b64.encode(std::mem::take(&mut state.insecure));
        calls.truncated = std::mem::take(&mut state.dropped)
            .into_iter()
            .map(|(what, count)| format!("{count} {what} past the bound"))
            .collect();
        calls
    }

    /// Playback: what the replayed call asked for past the recording.
    pub fn overrun(&self) -> Vec<String> {
        self.lock().overrun.clone()
    }

    fn overran(&self, what: &str) {
        let mut state = self.lock();
        let note = format!("the plugin read {what} past what the transcript recorded");
        if !state.overrun.contains(&note) {
            state.overrun.push(note);
        }
    }

    /// A clock reading (`wall`, or monotonic) the plugin was given.
    fn clock_read(&self, wall: bool, ns: u64) {
        let mut state = self.lock();
        let clocks = &mut state.calls.clocks;
        let readings = if wall {
            &mut clocks.wall_ns
        } else {
            &mut clocks.monotonic_ns
        };
        if readings.len() < MAX_RECORDED_CLOCK_READINGS {
            readings.push(ns);
        } else {
            state.drop_count("clock readings", 1);
        }
    }

    fn random_given(&self, secure: bool, bytes: &[u8]) {
        let mut state = self.lock();
        let held = state.secure.len() + state.insecure.len();
        let room = MAX_RECORDED_RANDOM_BYTES.saturating_sub(held);
        let kept = &bytes[..bytes.len().min(room)];
        if secure {
            state.secure.extend_from_slice(kept);
        } else {
            state.insecure.extend_from_slice(kept);
        }
        state.drop_count("random bytes", bytes.len() - kept.len());
    }
}

fn header_bytes(headers: &[(String, String)]) -> usize {
    headers.iter().map(|(n, v)| n.len() + v.len()).sum()
}

struct RecordedWall {
    tape: Arc<Tape>,
    clock: wasmtime_wasi::clocks::WallClock,
}

impl HostWallClock for RecordedWall {
    fn resolution(&self) -> Duration {
        self.clock.resolution()
    }

    fn now(&self) -> Duration {
        let now = self.clock.now();
        // Nanoseconds since 1970 fit in a u64 until 2554.
        self.tape
            .clock_read(true, u64::try_from(now.as_nanos()).unwrap_or(u64::MAX));
        now
    }
}

struct RecordedMonotonic {
    tape: Arc<Tape>,
    clock: wasmtime_wasi::clocks::MonotonicClock,
}

impl HostMonotonicClock for RecordedMonotonic {
    fn resolution(&self) -> u64 {
        self.clock.resolution()
    }

    fn now(&self) -> u64 {
        let now = self.clock.now();
        self.tape.clock_read(false, now);
        now
    }
}

struct RecordedRng {
    tape: Arc<Tape>,
    inner: Box<dyn rand_core::Rng + Send>,
    secure: bool,
}

impl rand_core::TryRng for RecordedRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        rand_core::utils::next_word_via_fill(self)
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        rand_core::utils::next_word_via_fill(self)
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), Infallible> {
        self.inner.fill_bytes(dest);
        self.tape.random_given(self.secure, dest);
        Ok(())
    }
}

/// Past the recorded readings, a played clock moves on by a microsecond a
/// reading, so time never runs backwards.
const STEP_PAST_RECORDING_NS: u64 = 1_000;

/// A clock that gives the recorded readings in order, then moves on.
struct PlayedClock {
    tape: Arc<Tape>,
    values: Vec<u64>,
    next: AtomicUsize,
    what: &'static str,
}

impl PlayedClock {
    fn new(tape: Arc<Tape>, values: Vec<u64>, what: &'static str) -> Self {
        Self {
            tape,
            values,
            next: AtomicUsize::new(0),
            what,
        }
    }

    fn next_ns(&self) -> u64 {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        if let Some(ns) = self.values.get(i) {
            return *ns;
        }
        self.tape.overran(self.what);
        let last = self.values.last().copied().unwrap_or(0);
        let past = (i + 1 - self.values.len()) as u64;
        last.saturating_add(past.saturating_mul(STEP_PAST_RECORDING_NS))
    }
}

impl HostWallClock for PlayedClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        Duration::from_nanos(self.next_ns())
    }
}

impl HostMonotonicClock for PlayedClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        self.next_ns()
    }
}

/// A generator that gives the recorded bytes in order, then a fixed
/// sequence, the same on every replay.
struct PlayedRng {
    tape: Arc<Tape>,
    bytes: Vec<u8>,
    next: usize,
    what: &'static str,
    after: fastrand::Rng,
}

impl PlayedRng {
    fn new(tape: Arc<Tape>, bytes: Vec<u8>, what: &'static str) -> Self {
        Self {
            tape,
            bytes,
            next: 0,
            what,
            after: fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15),
        }
    }
}

impl rand_core::TryRng for PlayedRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        rand_core::utils::next_word_via_fill(self)
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        rand_core::utils::next_word_via_fill(self)
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), Infallible> {
        let recorded = self.bytes.get(self.next..).unwrap_or_default();
        let from_recording = recorded.len().min(dest.len());
        dest[..from_recording].copy_from_slice(&recorded[..from_recording]);
        if from_recording < dest.len() {
            self.after.fill(&mut dest[from_recording..]);
            self.tape.overran(self.what);
        }
        self.next += dest.len();
        Ok(())
    }
}

/// A body that hands every frame on and copies its data onto a tape.
pub struct Tee<B> {
    inner: B,
    tape: Arc<Tape>,
    index: usize,
    side: Side,
}

impl<B> Tee<B> {
    /// Copy `inner`'s data onto `tape` as exchange `index`'s `side`.
    pub fn new(inner: B, tape: Arc<Tape>, index: usize, side: Side) -> Self {
        Self {
            inner,
            tape,
            index,
            side,
        }
    }
}

impl<B> Body for Tee<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.tape.body_data(this.index, this.side, data);
                }
            }
            Poll::Ready(Some(Err(error))) => {
                this.tape
                    .body_failed(this.index, this.side, format!("{error:?}"))
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt as _, Full};

    #[tokio::test]
    async fn a_tee_copies_the_body_and_cuts_it_at_the_bound() {
        let tape = Tape::recording(Redactor::new(&[], []));
        let index = tape.request(
            "POST",
            "https://x.test/a?api_key=k",
            vec![("content-type".into(), "application/json".into())],
        );
        let body = Tee::new(
            Full::new(Bytes::from_static(br#"{"secret":"s","a":1}"#)),
            tape.clone(),
            index,
            Side::Request,
        );
        let sent = body.collect().await.expect("test step").to_bytes();
        assert_eq!(&sent[..], br#"{"secret":"s","a":1}"#, "passed on unchanged");
        tape.response(index, 200, vec![("set-cookie".into(), "id=1".into())]);
        let big = vec![b'x'; MAX_RECORDED_BODY + 10];
        let body = Tee::new(
            Full::new(Bytes::from(big.clone())),
            tape.clone(),
            index,
            Side::Response,
        );
        assert_eq!(
            body.collect().await.expect("test step").to_bytes().len(),
            big.len()
        );
        let calls = tape.take();
        let exchange = &calls.http[0];
        assert_eq!(
            exchange.request.url,
            "https://x.test/a?api_key=%5Bredacted%5D"
        );
        assert_eq!(
            exchange.request.body.body,
            Some(serde_json::json!({"secret": "[redacted]", "a": 1}))
        );
        let response = exchange.response.as_ref().expect("test step");
        assert_eq!(response.headers[0].1, "[redacted]");
        assert!(response.body.truncated);
        assert_eq!(
            response.body.body_text.as_ref().expect("test step").len(),
            MAX_RECORDED_BODY
        );
    }

    #[tokio::test]
    async fn a_transcript_keeps_a_bounded_number_of_bytes_whatever_the_plugin_moves() {
        let tape = Tape::recording(Redactor::new(&[], []));
        let chunk = Bytes::from(vec![b'y'; MAX_RECORDED_BODY]);
        let calls = MAX_TRANSCRIPT_BYTES / MAX_RECORDED_BODY + 3;
        for _ in 0..calls {
            let index = tape.request("POST", "https://x.test/", vec![]);
            let body = Tee::new(Full::new(chunk.clone()), tape.clone(), index, Side::Request);
            let sent = body.collect().await.expect("body").to_bytes();
            assert_eq!(
                sent.len(),
                MAX_RECORDED_BODY,
                "the plugin's body goes out whole"
            );
        }
        assert!(
            tape.kv_value(&vec![b'v'; MAX_RECORDED_KV_VALUE + 1])
                .is_none()
        );
        assert!(tape.kv_value(b"small").is_none(), "the bound is spent");
        let calls = tape.take();
        let kept: usize = calls
            .http
            .iter()
            .map(|e| e.request.body.body_text.as_ref().map_or(0, String::len))
            .sum();
        // The requests' method and URL are charged too.
        assert!(kept <= MAX_TRANSCRIPT_BYTES, "{kept}");
        assert!(
            kept > MAX_TRANSCRIPT_BYTES - 64 * calls.http.len(),
            "{kept}"
        );
        assert!(calls.http.last().expect("exchange").request.body.truncated);
        assert!(
            calls.truncated.iter().any(|t| t.contains("KV values")),
            "{:?}",
            calls.truncated
        );
    }

    #[test]
    fn every_count_bound_keeps_its_number_and_counts_the_rest() {
        let tape = Tape::recording(Redactor::new(&[], []));
        for ns in 0..(MAX_RECORDED_CLOCK_READINGS + 5) as u64 {
            tape.clock_read(true, ns);
            tape.clock_read(false, ns);
        }
        for _ in 0..MAX_RECORDED_KV_CALLS + 5 {
            tape.kv(KvCall {
                op: "get".into(),
                key: "k".into(),
                value: None,
                ttl_ms: None,
                delta: None,
                result: serde_json::Value::Null,
                error: None,
            });
        }
        for _ in 0..MAX_RECORDED_CONFIG_READS + 5 {
            tape.config_read("base_url", Some("https://x.test"));
        }
        tape.random_given(true, &vec![1; MAX_RECORDED_RANDOM_BYTES]);
        tape.random_given(false, &[2; 5]);
        let calls = tape.take();
        assert_eq!(calls.clocks.wall_ns.len(), MAX_RECORDED_CLOCK_READINGS);
        assert_eq!(calls.clocks.monotonic_ns.len(), MAX_RECORDED_CLOCK_READINGS);
        assert_eq!(calls.kv.len(), MAX_RECORDED_KV_CALLS);
        assert_eq!(calls.config_reads.len(), MAX_RECORDED_CONFIG_READS);
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let secure = b64.decode(&calls.random.secure).expect("base64");
        assert_eq!(secure.len(), MAX_RECORDED_RANDOM_BYTES);
        assert_eq!(calls.random.insecure, "", "both sources share the bound");
        for counted in [
            "10 clock readings",
            "5 KV calls",
            "5 settings reads",
            "5 random bytes",
        ] {
            assert!(
                calls.truncated.iter().any(|t| t.starts_with(counted)),
                "{counted}: {:?}",
                calls.truncated
            );
        }
    }

    #[test]
    fn requests_past_the_bound_are_counted_and_long_keys_cut() {
        let tape = Tape::recording(Redactor::new(&[], []));
        for i in 0..MAX_RECORDED_EXCHANGES + 10 {
            let index = tape.request("GET", &format!("https://refused.test/{i}"), vec![]);
            tape.failed(index, "HTTP-request-denied".into());
        }
        tape.kv(KvCall {
            op: "get".into(),
            key: "k".repeat(1 << 20),
            value: None,
            ttl_ms: None,
            delta: None,
            result: serde_json::Value::Null,
            error: Some("invalid-argument".into()),
        });
        tape.config_read(&"c".repeat(1 << 20), None);
        let calls = tape.take();
        assert_eq!(calls.http.len(), MAX_RECORDED_EXCHANGES);
        assert!(
            calls
                .truncated
                .iter()
                .any(|t| t.starts_with("10 outbound requests")),
            "{:?}",
            calls.truncated
        );
        assert_eq!(calls.kv[0].key.len(), MAX_RECORDED_KEY);
        assert_eq!(calls.config_reads[0].key.len(), MAX_RECORDED_KEY);
    }

    #[test]
    fn played_clocks_and_random_give_the_recorded_values_then_move_on_deterministically() {
        let tape = Tape::playback(Playback {
            wall_ns: vec![5_000_000_001],
            monotonic_ns: vec![10, 20],
            secure: vec![1, 2, 3],
            insecure: vec![],
            insecure_seed: Some(7),
        });
        let wall = PlayedClock::new(tape.clone(), vec![5_000_000_001], "the wall clock");
        assert_eq!(HostWallClock::now(&wall), Duration::new(5, 1));
        assert_eq!(HostWallClock::now(&wall), Duration::new(5, 1_001));
        let mono = PlayedClock::new(tape.clone(), vec![10, 20], "the monotonic clock");
        assert_eq!(
            (
                HostMonotonicClock::now(&mono),
                HostMonotonicClock::now(&mono),
                HostMonotonicClock::now(&mono)
            ),
            (10, 20, 1_020)
        );
        let mut rng = PlayedRng::new(tape.clone(), vec![1, 2, 3], "random");
        let mut again = PlayedRng::new(tape.clone(), vec![1, 2, 3], "random");
        let (mut a, mut b) = ([0u8; 8], [0u8; 8]);
        rand_core::Rng::fill_bytes(&mut rng, &mut a);
        rand_core::Rng::fill_bytes(&mut again, &mut b);
        assert_eq!(&a[..3], &[1, 2, 3]);
        assert_eq!(a, b, "the same past the recording, every time");
        assert_eq!(tape.overrun().len(), 3, "{:?}", tape.overrun());
    }

    #[test]
    fn recorded_random_is_kept_up_to_its_bound() {
        let tape = Tape::recording(Redactor::new(&[], []));
        let mut rng = RecordedRng {
            tape: tape.clone(),
            inner: wasmtime_wasi::thread_rng(),
            secure: true,
        };
        let mut first = [0u8; 16];
        rand_core::Rng::fill_bytes(&mut rng, &mut first);
        let calls = tape.take();
        use base64::Engine as _;
        let kept = base64::engine::general_purpose::STANDARD
            .decode(&calls.random.secure)
            .expect("test step");
        assert_eq!(kept, first);
    }
}
