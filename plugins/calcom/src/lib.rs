//! Cal.com connector (API v2).
//!
//! `upcoming-appointments` lists an attendee's bookings in the next N days,
//! `available-slots` the open times of an event type, and `book-appointment`
//! books one, at most once per idempotency key. The API key is added by the
//! host; this code never sees it. Sources are in this crate's README.

use patchbay_sdk::cx::{Appointment, Appointments, AvailableSlots, Booked, Slot};
use patchbay_sdk::http::{Method, Request, Response};
use patchbay_sdk::{Connector, Context, Error, Operations, config, export_connector};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

const SOURCE: &str = "calcom";
const DEFAULT_BASE_URL: &str = "https://api.cal.com";
/// `cal-api-version` of the bookings endpoints these shapes follow.
const BOOKINGS_VERSION: &str = "2024-08-13";
/// `cal-api-version` of `GET /v2/slots` (older versions reach a different controller).
const SLOTS_VERSION: &str = "2024-09-04";
const DEFAULT_TIMEOUT_MS: u64 = 5000;
/// Where a booking remembers the idempotency key that made it.
const KEY_FIELD: &str = "patchbay_idempotency_key";
/// Cal.com's limit on a metadata value.
const MAX_METADATA_VALUE: usize = 500;
const DAY: Duration = Duration::from_secs(86_400);
/// Bookings asked for per page (Cal.com's default; it allows up to 250).
const PAGE_SIZE: usize = 100;
/// Pages read at most: an attendee's next 500 bookings.
const MAX_PAGES: usize = 5;

struct CalCom;

impl Connector for CalCom {
    fn operations(ops: &mut Operations<'_>) {
        ops.register("upcoming-appointments", upcoming_appointments);
        ops.register("available-slots", available_slots);
        ops.register("book-appointment", book_appointment);
    }
}

export_connector!(CalCom);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpcomingInput {
    email: String,
    days: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SlotsInput {
    event_type_id: u64,
    start: String,
    end: String,
    time_zone: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BookInput {
    event_type_id: u64,
    start: String,
    attendee: Attendee,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Attendee {
    name: String,
    email: String,
    time_zone: String,
    phone: Option<String>,
}

/// Cal.com's success envelope `{"status": "success", "data": …}`, with
/// `pagination` on lists.
#[derive(Deserialize)]
struct Envelope<T> {
    data: T,
    #[serde(default)]
    pagination: Option<Pagination>,
}

#[derive(Deserialize)]
struct Pagination {
    #[serde(rename = "hasNextPage", default)]
    has_next_page: bool,
}

#[derive(Deserialize)]
struct BookingAttendee {
    #[serde(default)]
    metadata: BTreeMap<String, Value>,
}

#[derive(Deserialize)]
struct Booking {
    uid: String,
    title: Option<String>,
    status: String,
    start: String,
    end: String,
    location: Option<String>,
    #[serde(rename = "meetingUrl")]
    meeting_url: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, Value>,
    /// Seated event types keep metadata per attendee (seat), not on the booking.
    #[serde(default)]
    attendees: Vec<BookingAttendee>,
}

impl Booking {
    /// Whether this booking, or one of its seats, was made with `key`.
    fn made_with(&self, key: &str) -> bool {
        let holds = |metadata: &BTreeMap<String, Value>| {
            metadata.get(KEY_FIELD).and_then(Value::as_str) == Some(key)
        };
        holds(&self.metadata) || self.attendees.iter().any(|a| holds(&a.metadata))
    }
}

#[derive(Deserialize)]
struct SlotTime {
    start: String,
    end: Option<String>,
}

struct Api {
    base_url: String,
    timeout: Duration,
}

impl Api {
    fn from_config() -> Result<Self, Error> {
        let timeout_ms = config::parsed_or("request_timeout_ms", DEFAULT_TIMEOUT_MS)?;
        Ok(Self {
            base_url: config::base_url_or("base_url", DEFAULT_BASE_URL)?,
            timeout: Duration::from_millis(timeout_ms),
        })
    }

    fn request(&self, method: Method, path: &str, version: &str) -> Request {
        Request::new(method, format!("{}{path}", self.base_url))
            .header("accept", "application/json")
            .header("cal-api-version", version)
            .timeout(self.timeout)
    }

    fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        version: &str,
        query: &[(&str, &str)],
    ) -> Result<T, Error> {
        Ok(self.get_page(path, version, query)?.data)
    }

    fn get_page<T: DeserializeOwned>(
        &self,
        path: &str,
        version: &str,
        query: &[(&str, &str)],
    ) -> Result<Envelope<T>, Error> {
        let response = self
            .request(Method::Get, path, version)
            .query(query)
            .send()?;
        checked(response)?.json::<Envelope<T>>()
    }

    /// Bookings of `email` starting in `[after, before_end]`, soonest first:
    /// page after page while Cal.com says there is a next one, at most
    /// [`MAX_PAGES`].
    fn bookings(
        &self,
        email: &str,
        event_type: Option<u64>,
        after: SystemTime,
        before_end: SystemTime,
    ) -> Result<Vec<Booking>, Error> {
        let event_type = event_type.map(|id| id.to_string());
        let after = iso(after);
        let before_end = iso(before_end);
        let mut query = vec![
            ("attendeeEmail", email),
            ("status", "upcoming,unconfirmed"),
            ("afterStart", after.as_str()),
            ("beforeEnd", before_end.as_str()),
            ("sortStart", "asc"),
        ];
        if let Some(id) = &event_type {
            query.push(("eventTypeId", id));
        }
        let take = PAGE_SIZE.to_string();
        let mut bookings = Vec::new();
        for page in 0..MAX_PAGES {
            let skip = (page * PAGE_SIZE).to_string();
            let mut paged = query.clone();
            paged.extend([("take", take.as_str()), ("skip", skip.as_str())]);
            let envelope: Envelope<Vec<Booking>> =
                self.get_page("/v2/bookings", BOOKINGS_VERSION, &paged)?;
            bookings.extend(envelope.data);
            if !envelope.pagination.is_some_and(|p| p.has_next_page) {
                break;
            }
        }
        Ok(bookings)
    }
}

fn upcoming_appointments(_ctx: &Context, input: UpcomingInput) -> Result<Appointments, Error> {
    let api = Api::from_config()?;
    let now = SystemTime::now();
    let days = input.days.unwrap_or(30).clamp(1, 365);
    let bookings = api.bookings(input.email.trim(), None, now, now + DAY * days)?;
    Ok(Appointments {
        source: SOURCE.into(),
        appointments: bookings.into_iter().map(to_appointment).collect(),
    })
}

fn available_slots(_ctx: &Context, input: SlotsInput) -> Result<AvailableSlots, Error> {
    let api = Api::from_config()?;
    let time_zone = input.time_zone.unwrap_or_else(|| "UTC".into());
    let event_type = input.event_type_id.to_string();
    // A map of date to that day's slots; the dates sort as text.
    let days: BTreeMap<String, Vec<SlotTime>> = api.get(
        "/v2/slots",
        SLOTS_VERSION,
        &[
            ("eventTypeId", &event_type),
            ("start", &input.start),
            ("end", &input.end),
            ("timeZone", &time_zone),
        ],
    )?;
    Ok(AvailableSlots {
        source: SOURCE.into(),
        event_type,
        time_zone,
        slots: days
            .into_values()
            .flatten()
            .map(|slot| Slot {
                starts_at: slot.start,
                ends_at: slot.end,
            })
            .collect(),
    })
}

/// Book once per idempotency key: Cal.com documents no idempotency header,
/// so the key goes into the booking's metadata, and before creating (and
/// after a create that failed in a way that may have booked anyway) the
/// attendee's bookings at that time are searched for it.
fn book_appointment(ctx: &Context, input: BookInput) -> Result<Booked, Error> {
    let api = Api::from_config()?;
    let start = humantime::parse_rfc3339(&input.start)
        .map_err(|e| Error::invalid_input(format!("start: {e}")))?;
    // Without a caller's key, the same attendee at the same time for the same
    // event type is the same booking.
    let key = match ctx.idempotency_key() {
        Some(key) => key.to_owned(),
        None => format!(
            "{}|{}|{}",
            input.event_type_id,
            input.start,
            input.attendee.email.trim().to_lowercase()
        ),
    };
    if key.chars().count() > MAX_METADATA_VALUE {
        return Err(Error::invalid_input(format!(
            "the idempotency key is longer than Cal.com keeps ({MAX_METADATA_VALUE} characters)"
        )));
    }
    let find_earlier = || -> Result<Option<Booked>, Error> {
        let window = api.bookings(
            input.attendee.email.trim(),
            Some(input.event_type_id),
            start - Duration::from_secs(1),
            start + DAY,
        )?;
        Ok(window
            .into_iter()
            .find(|b| b.made_with(&key))
            .map(|b| Booked {
                appointment: to_appointment(b),
                created: false,
            }))
    };
    if let Some(earlier) = find_earlier()? {
        return Ok(earlier);
    }

    let mut attendee = json!({
        "name": input.attendee.name,
        "email": input.attendee.email.trim(),
        "timeZone": input.attendee.time_zone,
    });
    if let Some(phone) = &input.attendee.phone {
        attendee["phoneNumber"] = json!(phone);
    }
    let body = json!({
        "start": input.start,
        "eventTypeId": input.event_type_id,
        "attendee": attendee,
        "metadata": { KEY_FIELD: key },
    });
    let created = api
        .request(Method::Post, "/v2/bookings", BOOKINGS_VERSION)
        .header("idempotency-key", &key)
        .json(&body)?
        .send()
        .and_then(checked)
        .and_then(|r| r.json::<Envelope<Value>>());
    match created {
        Ok(envelope) => {
            // A recurring event type answers with every occurrence; the first is the one asked for.
            let first = match envelope.data {
                Value::Array(mut all) if !all.is_empty() => all.swap_remove(0),
                other => other,
            };
            let booking: Booking = serde_json::from_value(first).map_err(|e| Error::Upstream {
                status: 201,
                message: format!("booking is not the expected JSON: {e}"),
            })?;
            Ok(Booked {
                appointment: to_appointment(booking),
                created: true,
            })
        }
        // The create may have gone through (a timeout, a lost answer) or been
        // refused as a duplicate of one that did: look once more.
        Err(e) if may_have_booked(&e) => match find_earlier() {
            Ok(Some(earlier)) => Ok(earlier),
            _ => Err(e),
        },
        Err(e) => Err(e),
    }
}

fn may_have_booked(error: &Error) -> bool {
    match error {
        Error::Timeout(_) => true,
        Error::Upstream { status, .. } => {
            *status == 0 || *status == 400 || *status == 409 || *status >= 500
        }
        _ => false,
    }
}

fn to_appointment(booking: Booking) -> Appointment {
    let status = match booking.status.as_str() {
        "accepted" => "confirmed".to_owned(),
        other => other.to_owned(),
    };
    Appointment {
        id: booking.uid,
        source: SOURCE.into(),
        starts_at: booking.start,
        ends_at: booking.end,
        status,
        title: booking.title,
        location: booking.location.or(booking.meeting_url),
        contact_id: None,
    }
}

/// Cal.com's errors mapped: the envelope's `error.code` and `message` in the
/// text, and a 429's wait from `Retry-After` or else from
/// `X-RateLimit-Reset-Default` (seconds until the window resets).
fn checked(response: Response) -> Result<Response, Error> {
    if response.status() == 429 && response.header("retry-after").is_none() {
        // One reset header per limit (`-Default`, or an API key's own `-Short`, `-Long`…):
        // the longest wait is the one that frees every limit.
        let reset = response
            .headers()
            .filter(|(name, _)| name.to_ascii_lowercase().starts_with("x-ratelimit-reset-"))
            .filter_map(|(_, value)| value.trim().parse::<u64>().ok())
            .max()
            .unwrap_or(1);
        return Err(Error::RateLimited {
            retry_after_ms: reset.saturating_mul(1000),
        });
    }
    response.error_for_status_with(|r| {
        #[derive(Deserialize)]
        struct Body {
            error: Detail,
        }
        #[derive(Deserialize)]
        struct Detail {
            code: Option<String>,
            message: Option<String>,
        }
        let detail = r.json::<Body>().ok()?.error;
        Some(
            [detail.code, detail.message]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(": "),
        )
    })
}

fn iso(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}
