"""find-contact over HTTP with a KV cache, and echo: a Patchbay connector in Python.

Built with componentize-py against Patchbay's WIT (see README.md). The host adds the
API token to requests bound for the declared destinations; this code never sees it.
"""
import json
import urllib.parse

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import kv, outgoing_handler, store
from wit_world.imports import patchbay_connector_types as types
from wit_world.imports import streams
from wit_world.imports import wasi_http_types as http

DEFAULT_BASE_URL = "https://api.example.com"
CACHE_TTL_MS = 60_000


class Operations(exports.Operations):
    def invoke(self, context, operation: str, input: str) -> str:
        args = json.loads(input)
        if operation == "echo":
            return json.dumps(args)
        if operation == "find-contact":
            return json.dumps(find_contact(args["email"]))
        raise Err(types.Error_Unsupported(f"no operation {operation}"))

    def names(self):
        return ["echo", "find-contact"]


class Webhooks(exports.Webhooks):
    def verify_webhook(self, context, request):
        raise Err(types.Error_Unsupported("this plugin takes no webhooks"))


def find_contact(email: str) -> dict:
    email = email.strip().lower()
    cache_key = f"contact:{email}"
    cached = kv.get(cache_key)
    if cached is not None:
        return json.loads(cached)
    base_url = (store.get("base_url") or DEFAULT_BASE_URL).rstrip("/")
    query = urllib.parse.urlencode({"email": email, "limit": "1"})
    page = get_json(f"{base_url}/v1/contacts?{query}")
    records = page.get("data") or []
    if not records:
        raise Err(types.Error_NotFound("no contact has this email"))
    record = records[0]
    contact = {"id": str(record["id"]), "source": "python-crm"}
    for field in ("first_name", "last_name", "email", "phone", "company"):
        if record.get(field):
            contact[field] = record[field]
    kv.set(cache_key, json.dumps(contact).encode(), CACHE_TTL_MS)
    return contact


def get_json(url: str) -> dict:
    """GET `url` through the host and decode its JSON, with errors mapped."""
    parts = urllib.parse.urlsplit(url)
    request = http.OutgoingRequest(http.Fields.from_list([("accept", b"application/json")]))
    request.set_method(http.Method_Get())
    request.set_scheme(http.Scheme_Https() if parts.scheme == "https" else http.Scheme_Http())
    request.set_authority(parts.netloc)
    request.set_path_with_query(parts.path + (f"?{parts.query}" if parts.query else ""))
    try:
        future = outgoing_handler.handle(request, None)
    except Err as refused:
        raise Err(http_error(refused.value))
    future.subscribe().block()
    outcome = future.get()
    # Some(Ok(Ok(response))), Some(Ok(Err(error-code))); Some(Err) only if
    # read twice, None only before the answer is ready.
    if outcome is None or isinstance(outcome, Err):
        raise Err(types.Error_Internal("the response future gave no answer"))
    answer = outcome.value
    if isinstance(answer, Err):
        raise Err(http_error(answer.value))
    response = answer.value
    status = response.status()
    headers = dict((k.lower(), v.decode()) for k, v in response.headers().entries())
    body = read_all(response.consume())
    if status in (401, 403):
        raise Err(types.Error_Unauthorized(f"upstream answered {status}"))
    if status == 404:
        raise Err(types.Error_NotFound("upstream answered 404"))
    if status == 429:
        raise Err(types.Error_RateLimited(retry_after_ms(headers.get("retry-after"))))
    if status >= 400:
        raise Err(types.Error_Upstream(types.UpstreamError(status, f"upstream answered {status}")))
    try:
        return json.loads(body)
    except ValueError as e:
        raise Err(types.Error_Upstream(types.UpstreamError(status, f"response is not JSON: {e}")))


def read_all(body) -> bytes:
    stream = body.stream()
    chunks = []
    while True:
        try:
            chunks.append(stream.blocking_read(65536))
        except Err as e:
            if isinstance(e.value, streams.StreamError_Closed):
                break
            raise Err(types.Error_Upstream(types.UpstreamError(0, "the response body failed")))
    return b"".join(chunks)


def retry_after_ms(value) -> int:
    try:
        return max(0, int(value)) * 1000
    except (TypeError, ValueError):
        return 1000


def http_error(code) -> types.Error:
    """A wasi:http error code as the connector error the host expects."""
    name = type(code).__name__
    if name == "ErrorCode_HttpRequestDenied":
        return types.Error_AccessDenied("the host refused the request (not a declared, approved destination)")
    if name in ("ErrorCode_ConnectionTimeout", "ErrorCode_ConnectionReadTimeout", "ErrorCode_ConnectionWriteTimeout"):
        return types.Error_Timeout(name)
    return types.Error_Upstream(types.UpstreamError(0, name))
