//! The Cal.com connector against a mock on loopback that answers with Cal.com
//! API v2's shapes: the `{status, data}` envelope, bookings, slots by date,
//! the version header routing, the error envelope and the throttler headers.

use patchbay::egress::credentials::Secret;
use patchbay::runtime::error::{InvokeError, PluginFailure};
use patchbay_tests::{Vendor, plugins::CALCOM, query_value};
use serde_json::{Value, json};
use std::time::Duration;
use wiremock::matchers::{body_partial_json, header, method, path, query_param};
use wiremock::{Mock, ResponseTemplate};

const API_KEY: &str = "cal_live_0123456789abcdef0123456789abcdef";
const BOOKINGS: &str = "/v2/bookings";
const SLOTS: &str = "/v2/slots";

struct CalCom;

impl CalCom {
    async fn start() -> Vendor {
        Self::with_config(&[]).await
    }

    async fn with_config(config: &[(&str, &str)]) -> Vendor {
        let key = Secret::Bearer {
            token: API_KEY.into(),
        };
        Vendor::start(CALCOM, "calcom-main", ("api_key", key), config).await
    }

    /// `GET route` with the bookings API version and the host's key.
    fn get(route: &str, version: &str) -> wiremock::MockBuilder {
        Mock::given(method("GET"))
            .and(path(route))
            .and(header(
                "authorization",
                format!("Bearer {API_KEY}").as_str(),
            ))
            .and(header("cal-api-version", version))
    }
}

/// Cal.com's rate-limit headers, on every answer.
fn throttled(response: ResponseTemplate, remaining: u32) -> ResponseTemplate {
    response
        .insert_header("x-ratelimit-limit-default", "120")
        .insert_header(
            "x-ratelimit-remaining-default",
            remaining.to_string().as_str(),
        )
        .insert_header("x-ratelimit-reset-default", "60")
}

fn success(data: Value) -> ResponseTemplate {
    throttled(
        ResponseTemplate::new(200).set_body_json(json!({ "status": "success", "data": data })),
        119,
    )
}

fn bookings_page(bookings: Vec<Value>) -> ResponseTemplate {
    let n = bookings.len();
    page_of(bookings, 1, n)
}

/// Page `current` (from 1, 100 a page) of `total` bookings.
fn page_of(bookings: Vec<Value>, current: usize, total: usize) -> ResponseTemplate {
    let returned = bookings.len();
    let pages = total.div_ceil(100).max(1);
    throttled(
        ResponseTemplate::new(200).set_body_json(json!({
            "status": "success",
            "data": bookings,
            "pagination": {
                "totalItems": total, "remainingItems": total - ((current - 1) * 100 + returned),
                "returnedItems": returned, "itemsPerPage": 100, "currentPage": current,
                "totalPages": pages, "hasNextPage": current < pages, "hasPreviousPage": current > 1
            }
        })),
        118,
    )
}

fn booking(uid: &str, status: &str, start: &str, end: &str, metadata: Value) -> Value {
    json!({
        "id": 1024, "uid": uid, "title": "30 min consultation between Dr. Hill and Ada Lovelace",
        "description": "", "hosts": [{ "id": 7, "name": "Dr. Hill", "email": "hill@clinic.example", "username": "hill", "timeZone": "Europe/London" }],
        "status": status, "start": start, "end": end, "duration": 30, "eventTypeId": 42,
        "eventType": { "id": 42, "slug": "consultation" },
        "meetingUrl": "https://cal.com/video/abc", "location": "https://cal.com/video/abc", "absentHost": false,
        "createdAt": "2026-11-01T10:00:00.000Z", "updatedAt": "2026-11-01T10:00:00.000Z",
        "metadata": metadata, "icsUid": format!("{uid}@Cal.com"),
        "attendees": [{ "name": "Ada Lovelace", "email": "ada@example.com", "timeZone": "Europe/London", "language": "en", "absent": false }],
        "guests": [], "bookingFieldsResponses": { "name": "Ada Lovelace", "email": "ada@example.com" }
    })
}

/// Cal.com's error envelope.
fn cal_error(status: u16, code: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({
        "status": "error",
        "timestamp": "2026-12-02T10:00:00.000Z",
        "path": "/v2/bookings",
        "error": { "code": code, "message": message }
    }))
}

#[tokio::test]
async fn upcoming_appointments_of_an_attendee() {
    let cal = CalCom::start().await;
    CalCom::get(BOOKINGS, "2024-08-13")
        .and(query_param("attendeeEmail", "ada@example.com"))
        .and(query_param("status", "upcoming,unconfirmed"))
        .and(query_param("sortStart", "asc"))
        .and(query_param("take", "100"))
        .respond_with(bookings_page(vec![
            booking(
                "bk_1",
                "accepted",
                "2026-12-03T09:00:00.000Z",
                "2026-12-03T09:30:00.000Z",
                json!({}),
            ),
            booking(
                "bk_2",
                "pending",
                "2026-12-09T14:00:00.000Z",
                "2026-12-09T14:30:00.000Z",
                json!({}),
            ),
        ]))
        .expect(1)
        .mount(&cal.upstream)
        .await;
    let output = cal
        .call(
            "upcoming-appointments",
            json!({ "email": "ada@example.com", "days": 14 }),
        )
        .await
        .expect("appointments");
    assert_eq!(output["source"], "calcom");
    assert_eq!(
        output["appointments"][0],
        json!({
            "id": "bk_1", "source": "calcom", "starts_at": "2026-12-03T09:00:00.000Z",
            "ends_at": "2026-12-03T09:30:00.000Z", "status": "confirmed",
            "title": "30 min consultation between Dr. Hill and Ada Lovelace",
            "location": "https://cal.com/video/abc"
        })
    );
    assert_eq!(output["appointments"][1]["status"], "pending");

    // The window is now .. now + 14 days, in Cal.com's strict ISO 8601.
    let sent = &cal.requests("GET", BOOKINGS).await[0];
    let after = humantime::parse_rfc3339(&query_value(sent, "afterStart").expect("afterStart"))
        .expect("iso");
    let before =
        humantime::parse_rfc3339(&query_value(sent, "beforeEnd").expect("beforeEnd")).expect("iso");
    let span = before.duration_since(after).expect("ordered");
    assert_eq!(span, Duration::from_secs(14 * 86_400));
}

/// Ada's appointments in the next 30 days.
async fn upcoming(cal: &Vendor) -> Value {
    cal.call(
        "upcoming-appointments",
        json!({ "email": "ada@example.com" }),
    )
    .await
    .expect("appointments")
}

#[tokio::test]
async fn every_page_of_bookings_is_read_while_cal_com_says_there_is_a_next() {
    let cal = CalCom::start().await;
    let at = |i: usize| format!("2026-12-{:02}T{:02}:00:00.000Z", 4 + i / 24, i % 24);
    let all: Vec<Value> = (0..130)
        .map(|i| {
            booking(
                &format!("bk_{i}"),
                "accepted",
                &at(i),
                &at(i + 1),
                json!({}),
            )
        })
        .collect();
    for (skip, current) in [("0", 1), ("100", 2)] {
        let first = (current - 1) * 100;
        let page = all[first..(first + 100).min(all.len())].to_vec();
        CalCom::get(BOOKINGS, "2024-08-13")
            .and(query_param("take", "100"))
            .and(query_param("skip", skip))
            .respond_with(page_of(page, current, all.len()))
            .expect(1)
            .mount(&cal.upstream)
            .await;
    }
    let output = upcoming(&cal).await;
    let ids: Vec<&str> = output["appointments"]
        .as_array()
        .expect("list")
        .iter()
        .map(|a| a["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids.len(), 130);
    assert_eq!((ids[0], ids[129]), ("bk_0", "bk_129"));
}

#[tokio::test]
async fn at_most_five_pages_of_bookings_are_read() {
    let cal = CalCom::start().await;
    CalCom::get(BOOKINGS, "2024-08-13")
        .respond_with(page_of(
            vec![booking(
                "bk_x",
                "accepted",
                "2026-12-04T09:00:00.000Z",
                "2026-12-04T09:30:00.000Z",
                json!({}),
            )],
            1,
            10_000,
        ))
        .mount(&cal.upstream)
        .await;
    let output = upcoming(&cal).await;
    assert_eq!(output["appointments"].as_array().expect("list").len(), 5);
    let skips: Vec<String> = cal
        .requests("GET", BOOKINGS)
        .await
        .iter()
        .map(|r| query_value(r, "skip").expect("skip"))
        .collect();
    assert_eq!(skips, ["0", "100", "200", "300", "400"]);
}

#[tokio::test]
async fn nobody_booked_is_an_empty_list() {
    let cal = CalCom::start().await;
    CalCom::get(BOOKINGS, "2024-08-13")
        .respond_with(bookings_page(vec![]))
        .mount(&cal.upstream)
        .await;
    let output = cal
        .call(
            "upcoming-appointments",
            json!({ "email": "new@example.com" }),
        )
        .await
        .expect("appointments");
    assert_eq!(output, json!({ "source": "calcom", "appointments": [] }));
}

#[tokio::test]
async fn available_slots_come_flattened_in_order_with_the_slots_api_version() {
    let cal = CalCom::start().await;
    // Without the 2024-09-04 version Cal.com routes to the legacy controller, which has no
    // `GET /v2/slots`: a plugin sending the wrong version gets Cal.com's 404.
    Mock::given(method("GET"))
        .and(path(SLOTS))
        .respond_with(cal_error(404, "NotFoundException", "Cannot GET /v2/slots"))
        .with_priority(10)
        .mount(&cal.upstream)
        .await;
    CalCom::get(SLOTS, "2024-09-04")
        .and(query_param("eventTypeId", "42"))
        .and(query_param("start", "2026-12-07"))
        .and(query_param("end", "2026-12-08"))
        .and(query_param("timeZone", "Europe/London"))
        .respond_with(success(json!({
            "2026-12-08": [{ "start": "2026-12-08T09:00:00.000+00:00" }],
            "2026-12-07": [{ "start": "2026-12-07T09:00:00.000+00:00" }, { "start": "2026-12-07T09:30:00.000+00:00" }]
        })))
        .with_priority(1)
        .expect(1)
        .mount(&cal.upstream)
        .await;
    let output = cal
        .call(
            "available-slots",
            json!({ "event_type_id": 42, "start": "2026-12-07", "end": "2026-12-08", "time_zone": "Europe/London" }),
        )
        .await
        .expect("slots");
    assert_eq!(
        output,
        json!({
            "source": "calcom", "event_type": "42", "time_zone": "Europe/London",
            "slots": [
                { "starts_at": "2026-12-07T09:00:00.000+00:00" },
                { "starts_at": "2026-12-07T09:30:00.000+00:00" },
                { "starts_at": "2026-12-08T09:00:00.000+00:00" }
            ]
        })
    );
}

#[tokio::test]
async fn range_format_slots_keep_their_end() {
    let cal = CalCom::start().await;
    CalCom::get(SLOTS, "2024-09-04")
        .respond_with(success(json!({
            "2026-12-07": [{ "start": "2026-12-07T09:00:00.000Z", "end": "2026-12-07T09:30:00.000Z" }]
        })))
        .mount(&cal.upstream)
        .await;
    let output = cal
        .call(
            "available-slots",
            json!({ "event_type_id": 42, "start": "2026-12-07", "end": "2026-12-07" }),
        )
        .await
        .expect("slots");
    assert_eq!(output["time_zone"], "UTC");
    assert_eq!(
        output["slots"],
        json!([{ "starts_at": "2026-12-07T09:00:00.000Z", "ends_at": "2026-12-07T09:30:00.000Z" }])
    );
}

fn booking_request() -> Value {
    json!({
        "event_type_id": 42,
        "start": "2026-12-07T09:00:00Z",
        "attendee": { "name": "Ada Lovelace", "email": "ada@example.com", "time_zone": "Europe/London", "phone": "+447700900123" }
    })
}

/// Bookings in the lookup window: none for the first `empty_first` reads,
/// then `then` (the booking an earlier attempt made).
async fn mount_lookups(cal: &Vendor, empty_first: u64, then: Vec<Value>) {
    if empty_first > 0 {
        CalCom::get(BOOKINGS, "2024-08-13")
            .and(query_param("eventTypeId", "42"))
            .respond_with(bookings_page(vec![]))
            .up_to_n_times(empty_first)
            .with_priority(1)
            .mount(&cal.upstream)
            .await;
    }
    CalCom::get(BOOKINGS, "2024-08-13")
        .and(query_param("eventTypeId", "42"))
        .respond_with(bookings_page(then))
        .with_priority(2)
        .mount(&cal.upstream)
        .await;
}

#[tokio::test]
async fn a_booking_retried_with_the_same_idempotency_key_books_once() {
    let cal = CalCom::start().await;
    let key = "call-7f3a:book";
    let made = booking(
        "bk_new",
        "accepted",
        "2026-12-07T09:00:00.000Z",
        "2026-12-07T09:30:00.000Z",
        json!({ "patchbay_idempotency_key": key }),
    );
    mount_lookups(&cal, 1, vec![made.clone()]).await;
    Mock::given(method("POST"))
        .and(path(BOOKINGS))
        .and(header("authorization", format!("Bearer {API_KEY}").as_str()))
        .and(header("cal-api-version", "2024-08-13"))
        .and(header("content-type", "application/json"))
        .and(body_partial_json(json!({
            "start": "2026-12-07T09:00:00Z",
            "eventTypeId": 42,
            "attendee": { "name": "Ada Lovelace", "email": "ada@example.com", "timeZone": "Europe/London", "phoneNumber": "+447700900123" },
            "metadata": { "patchbay_idempotency_key": key }
        })))
        .respond_with(throttled(
            ResponseTemplate::new(201).set_body_json(json!({ "status": "success", "data": made })),
            117,
        ))
        .expect(1)
        .mount(&cal.upstream)
        .await;

    let first = cal
        .call_keyed("book-appointment", booking_request(), Some(key))
        .await
        .expect("booked");
    assert_eq!(first["created"], true);
    assert_eq!(first["appointment"]["id"], "bk_new");
    assert_eq!(first["appointment"]["status"], "confirmed");
    let again = cal
        .call_keyed("book-appointment", booking_request(), Some(key))
        .await
        .expect("found");
    assert_eq!(
        again,
        json!({ "created": false, "appointment": first["appointment"].clone() })
    );
    assert_eq!(cal.requests("POST", BOOKINGS).await.len(), 1);
    // The lookup before creating asked for this attendee, event type and time.
    let lookup = &cal.requests("GET", BOOKINGS).await[0];
    assert_eq!(
        query_value(lookup, "attendeeEmail").as_deref(),
        Some("ada@example.com")
    );
    assert_eq!(
        query_value(lookup, "afterStart").as_deref(),
        Some("2026-12-07T08:59:59Z")
    );
}

#[tokio::test]
async fn a_booking_made_under_another_key_does_not_count() {
    let cal = CalCom::start().await;
    let other = booking(
        "bk_other",
        "accepted",
        "2026-12-07T09:00:00.000Z",
        "2026-12-07T09:30:00.000Z",
        json!({ "patchbay_idempotency_key": "someone-else" }),
    );
    mount_lookups(&cal, 0, vec![other]).await;
    Mock::given(method("POST"))
        .and(path(BOOKINGS))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "status": "success",
            "data": [booking("bk_r1", "accepted", "2026-12-07T09:00:00.000Z", "2026-12-07T09:30:00.000Z", json!({})),
                     booking("bk_r2", "accepted", "2026-12-14T09:00:00.000Z", "2026-12-14T09:30:00.000Z", json!({}))]
        })))
        .expect(1)
        .mount(&cal.upstream)
        .await;
    // A recurring event type answers with every occurrence: the first is the one asked for.
    let output = cal
        .call_keyed("book-appointment", booking_request(), Some("mine"))
        .await
        .expect("booked");
    assert_eq!(
        (
            output["created"].clone(),
            output["appointment"]["id"].clone()
        ),
        (json!(true), json!("bk_r1"))
    );
}

#[tokio::test]
async fn without_a_key_the_same_attendee_time_and_event_type_is_the_same_booking() {
    let cal = CalCom::start().await;
    mount_lookups(&cal, 0, vec![]).await;
    Mock::given(method("POST"))
        .and(path(BOOKINGS))
        .and(body_partial_json(json!({ "metadata": { "patchbay_idempotency_key": "42|2026-12-07T09:00:00Z|ada@example.com" } })))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "status": "success",
            "data": booking("bk_9", "accepted", "2026-12-07T09:00:00.000Z", "2026-12-07T09:30:00.000Z", json!({}))
        })))
        .expect(1)
        .mount(&cal.upstream)
        .await;
    let mut input = booking_request();
    input["attendee"]["email"] = json!("Ada@Example.com");
    let output = cal.call("book-appointment", input).await.expect("booked");
    assert_eq!(output["created"], true);
}

#[tokio::test]
async fn a_create_whose_answer_was_lost_is_found_instead_of_booked_again() {
    let cal = CalCom::with_config(&[("request_timeout_ms", "300")]).await;
    let key = "call-lost-answer";
    let made = booking(
        "bk_slow",
        "accepted",
        "2026-12-07T09:00:00.000Z",
        "2026-12-07T09:30:00.000Z",
        json!({ "patchbay_idempotency_key": key }),
    );
    mount_lookups(&cal, 1, vec![made]).await;
    Mock::given(method("POST"))
        .and(path(BOOKINGS))
        .respond_with(ResponseTemplate::new(201).set_delay(Duration::from_secs(3)))
        .expect(1)
        .mount(&cal.upstream)
        .await;
    let output = cal
        .call_keyed("book-appointment", booking_request(), Some(key))
        .await
        .expect("found");
    assert_eq!(
        (
            output["created"].clone(),
            output["appointment"]["id"].clone()
        ),
        (json!(false), json!("bk_slow"))
    );
}

#[tokio::test]
async fn a_refused_booking_is_an_error_with_cal_coms_explanation() {
    let cal = CalCom::start().await;
    mount_lookups(&cal, 0, vec![]).await;
    Mock::given(method("POST"))
        .and(path(BOOKINGS))
        .respond_with(cal_error(
            400,
            "BadRequestException",
            "User either already has booking at this time or is not available",
        ))
        .expect(1)
        .mount(&cal.upstream)
        .await;
    match cal
        .call_keyed("book-appointment", booking_request(), Some("k1"))
        .await
    {
        Err(InvokeError::Plugin(PluginFailure::Upstream {
            status: 400,
            message,
        })) => {
            assert!(
                message.contains("BadRequestException") && message.contains("not available"),
                "{message}"
            )
        }
        other => panic!("expected a 400, got {other:?}"),
    }
    // It looked again (a duplicate of a booking of its own would have been found), then gave up.
    assert_eq!(cal.requests("GET", BOOKINGS).await.len(), 2);
}

#[tokio::test]
async fn cal_coms_errors_become_typed_errors() {
    let cases: Vec<(&str, ResponseTemplate)> = vec![
        (
            "400",
            cal_error(400, "BAD_REQUEST", "afterStart: Invalid ISO 8601 date"),
        ),
        (
            "401",
            cal_error(401, "UnauthorizedException", "Invalid API Key"),
        ),
        (
            "403",
            cal_error(403, "ForbiddenException", "Forbidden resource"),
        ),
        (
            "404",
            cal_error(404, "NotFoundException", "Cannot GET /v2/bookings"),
        ),
        (
            "429 with retry-after",
            throttled(
                cal_error(
                    429,
                    "ThrottlerException",
                    "Too many requests. Please try again later.",
                ),
                0,
            )
            .insert_header("retry-after", "7"),
        ),
        (
            "429",
            throttled(
                cal_error(
                    429,
                    "ThrottlerException",
                    "Too many requests. Please try again later.",
                ),
                0,
            ),
        ),
        (
            "500",
            cal_error(500, "INTERNAL_SERVER_ERROR", "Internal server error"),
        ),
        (
            "malformed",
            ResponseTemplate::new(200).set_body_string("{\"status\":\"success\",\"data\":[{"),
        ),
    ];
    for (case, response) in cases {
        let cal = CalCom::start().await;
        CalCom::get(BOOKINGS, "2024-08-13")
            .respond_with(response)
            .mount(&cal.upstream)
            .await;
        let failure = cal
            .failure(
                "upcoming-appointments",
                json!({ "email": "ada@example.com" }),
                case,
            )
            .await;
        match (case, &failure) {
            (
                "400",
                PluginFailure::Upstream {
                    status: 400,
                    message,
                },
            ) => assert!(message.contains("BAD_REQUEST: afterStart"), "{message}"),
            ("401" | "403", PluginFailure::Unauthorized { message }) => {
                assert!(message.contains("Exception"), "{message}")
            }
            ("404", PluginFailure::NotFound { .. }) => {}
            (
                "429 with retry-after",
                PluginFailure::RateLimited {
                    retry_after_ms: 7000,
                },
            ) => {}
            // Cal.com's throttler says when its window resets, in seconds.
            (
                "429",
                PluginFailure::RateLimited {
                    retry_after_ms: 60_000,
                },
            ) => {}
            ("500", PluginFailure::Upstream { status: 500, .. }) => {}
            (
                "malformed",
                PluginFailure::Upstream {
                    status: 200,
                    message,
                },
            ) => assert!(message.contains("not the expected JSON"), "{message}"),
            (case, failure) => panic!("{case}: unexpected {failure:?}"),
        }
    }
}

#[tokio::test]
async fn a_slow_cal_com_is_a_timeout() {
    let cal = CalCom::with_config(&[("request_timeout_ms", "300")]).await;
    CalCom::get(BOOKINGS, "2024-08-13")
        .respond_with(bookings_page(vec![]).set_delay(Duration::from_secs(3)))
        .mount(&cal.upstream)
        .await;
    let outcome = cal
        .call(
            "upcoming-appointments",
            json!({ "email": "ada@example.com" }),
        )
        .await;
    assert!(
        matches!(
            outcome,
            Err(InvokeError::Plugin(PluginFailure::Timeout { .. }))
        ),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn input_that_breaks_the_schema_never_reaches_cal_com() {
    let cal = CalCom::start().await;
    cal
        .assert_schema_refuses(&[
        ("upcoming-appointments", json!({})),
        ("upcoming-appointments", json!({ "email": "not an email" })),
        (
            "upcoming-appointments",
            json!({ "email": "a@b.c", "days": 0 }),
        ),
        (
            "available-slots",
            json!({ "event_type_id": 42, "start": "tomorrow", "end": "2026-12-08" }),
        ),
        (
            "available-slots",
            json!({ "event_type_id": 42, "start": "2026-12-07", "end": "2026-12-08", "time_zone": "UTC&take=1" }),
        ),
        (
            "book-appointment",
            json!({ "event_type_id": 42, "start": "2026-12-07T09:00:00+01:00", "attendee": { "name": "A", "email": "a@b.c", "time_zone": "UTC" } }),
        ),
        (
            "book-appointment",
            json!({ "event_type_id": 42, "start": "2026-12-07T09:00:00Z", "attendee": { "name": "A", "email": "a@b.c" } }),
        ),
        ])
        .await;
}

#[tokio::test]
async fn a_seat_booked_earlier_is_found_by_the_key_on_its_attendee() {
    let cal = CalCom::start().await;
    let key = "call-seat-1";
    // Seated event types keep metadata per attendee, not on the booking.
    let mut seated = booking(
        "bk_seated",
        "accepted",
        "2026-12-07T09:00:00.000Z",
        "2026-12-07T09:30:00.000Z",
        json!({}),
    );
    seated["attendees"][0]["metadata"] = json!({ "patchbay_idempotency_key": key });
    seated["seatUid"] = json!("seat_abc");
    mount_lookups(&cal, 0, vec![seated]).await;
    let output = cal
        .call_keyed("book-appointment", booking_request(), Some(key))
        .await
        .expect("found");
    assert_eq!(
        (
            output["created"].clone(),
            output["appointment"]["id"].clone()
        ),
        (json!(false), json!("bk_seated"))
    );
    assert!(cal.requests("POST", BOOKINGS).await.is_empty());
}

#[tokio::test]
async fn an_api_keys_own_limit_sets_the_wait() {
    let cal = CalCom::start().await;
    CalCom::get(BOOKINGS, "2024-08-13")
        .respond_with(
            cal_error(
                429,
                "ThrottlerException",
                "Too many requests. Please try again later.",
            )
            .insert_header("x-ratelimit-limit-short", "10")
            .insert_header("x-ratelimit-remaining-short", "0")
            .insert_header("x-ratelimit-reset-short", "120")
            .insert_header("x-ratelimit-reset-default", "30"),
        )
        .mount(&cal.upstream)
        .await;
    let failure = cal
        .failure(
            "upcoming-appointments",
            json!({ "email": "ada@example.com" }),
            "custom limit",
        )
        .await;
    assert_eq!(
        failure,
        PluginFailure::RateLimited {
            retry_after_ms: 120_000
        }
    );
}

/// Cal.com's bookings as one calendar: empty until a booking is created;
/// a create takes a while, so two first attempts running together would
/// both find nothing.
#[derive(Clone, Default)]
struct Calendar {
    made: std::sync::Arc<std::sync::Mutex<Option<Value>>>,
}

impl wiremock::Respond for Calendar {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        let mut made = self.made.lock().expect("calendar");
        if request.method.as_str() == "POST" {
            let body: Value = serde_json::from_slice(&request.body).expect("json");
            let booking = booking(
                "bk_once",
                "accepted",
                "2026-12-07T09:00:00.000Z",
                "2026-12-07T09:30:00.000Z",
                body["metadata"].clone(),
            );
            *made = Some(booking.clone());
            return ResponseTemplate::new(201)
                .set_body_json(json!({ "status": "success", "data": booking }))
                .set_delay(Duration::from_millis(300));
        }
        bookings_page(made.iter().cloned().collect())
    }
}

#[tokio::test]
async fn two_first_attempts_with_one_key_at_the_same_time_book_once() {
    use patchbay::tenancy::invoke::Invocation;
    let harness = patchbay_tests::Harness::new();
    harness.ensure(CALCOM).await;
    let tenancy = harness.services.tenancy();
    tenancy.create_workspace("clinic").await.expect("workspace");
    let upstream = wiremock::MockServer::start().await;
    let calendar = Calendar::default();
    Mock::given(path(BOOKINGS))
        .respond_with(calendar.clone())
        .mount(&upstream)
        .await;
    harness
        .stored_connection(
            "clinic",
            "calendar",
            ("calcom", &upstream.uri()),
            ("api_key", API_KEY),
        )
        .await;

    let book = |key: &str| Invocation {
        workspace: "clinic".into(),
        connection: "calendar".into(),
        operation: "book-appointment".into(),
        input: booking_request(),
        idempotency_key: Some(key.into()),
        deadline: None,
        tape: None,
    };
    let (a, b) = tokio::join!(
        tenancy.invoke(book("call-9:book")),
        tenancy.invoke(book("call-9:book"))
    );
    let outputs: Vec<Value> = [a, b]
        .into_iter()
        .map(|r| r.expect("invoked").outcome.result.expect("booked"))
        .collect();
    assert_eq!(
        outputs.iter().filter(|o| o["created"] == true).count(),
        1,
        "{outputs:?}"
    );
    assert_eq!(outputs[0]["appointment"], outputs[1]["appointment"]);
    let posts = upstream
        .received_requests()
        .await
        .expect("recorded")
        .iter()
        .filter(|r| r.method.as_str() == "POST")
        .count();
    assert_eq!(posts, 1, "the same key booked twice");
    assert!(
        tenancy.keyed.is_empty(),
        "keys are forgotten after the calls"
    );

    // Another key is another booking attempt, and does not wait for this one.
    let other = tenancy
        .invoke(book("call-10:book"))
        .await
        .expect("invoked")
        .outcome
        .result
        .expect("answered");
    assert_eq!(other["created"], true);

    // A call that cannot wait for the one holding its key any longer is
    // refused as such, and runs nothing.
    let posts_before = upstream.received_requests().await.expect("recorded").len();
    let mut impatient = book("call-12:book");
    impatient.deadline = Some(std::time::Instant::now() + Duration::from_millis(50));
    let (first, second) = tokio::join!(tenancy.invoke(book("call-12:book")), async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        tenancy.invoke(impatient).await
    });
    assert_eq!(
        first.expect("invoked").outcome.result.expect("booked")["created"],
        true
    );
    assert!(
        matches!(second, Err(patchbay::tenancy::invoke::InvocationError::KeyInUse(ref k)) if k == "call-12:book"),
        "{second:?}"
    );
    // The first's own requests only (a lookup and a create).
    let posts_after = upstream.received_requests().await.expect("recorded").len();
    assert_eq!(posts_after - posts_before, 2);
}
