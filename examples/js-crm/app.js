// find-contact over HTTP with a KV cache, and echo: a Patchbay connector in JavaScript.
//
// Built with componentize-js against Patchbay's WIT (see README.md). The host adds the
// API token to requests bound for the declared destinations; this code never sees it.
import { handle } from "wasi:http/outgoing-handler@0.2.12";
import { Fields, OutgoingRequest } from "wasi:http/types@0.2.12";
import { get as kvGet, set as kvSet } from "patchbay:connector/kv@0.1.1";
import { get as configGet } from "wasi:config/store@0.2.0-rc.1";

const DEFAULT_BASE_URL = "https://api.example.com";
const CACHE_TTL_MS = 60000n;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

// An error the host understands: thrown, it becomes the call's `error` variant.
const fail = (tag, val) => ({ tag, val });

export const operations = {
  invoke(context, operation, input) {
    const args = JSON.parse(input);
    if (operation === "echo") return JSON.stringify(args);
    if (operation === "find-contact") return JSON.stringify(findContact(args.email));
    throw fail("unsupported", `no operation ${operation}`);
  },
  names() {
    return ["echo", "find-contact"];
  },
};

export const webhooks = {
  verifyWebhook(context, request) {
    throw fail("unsupported", "this plugin takes no webhooks");
  },
};

function findContact(email) {
  email = email.trim().toLowerCase();
  const cacheKey = `contact:${email}`;
  const cached = kvGet(cacheKey);
  if (cached !== undefined) return JSON.parse(decoder.decode(cached));
  const baseUrl = (configGet("base_url") ?? DEFAULT_BASE_URL).replace(/\/+$/, "");
  const query = new URLSearchParams({ email, limit: "1" }).toString();
  const page = getJson(`${baseUrl}/v1/contacts?${query}`);
  const record = (page.data ?? [])[0];
  if (record === undefined) throw fail("not-found", "no contact has this email");
  const contact = { id: String(record.id), source: "js-crm" };
  for (const field of ["first_name", "last_name", "email", "phone", "company"]) {
    if (record[field]) contact[field] = record[field];
  }
  kvSet(cacheKey, encoder.encode(JSON.stringify(contact)), CACHE_TTL_MS);
  return contact;
}

// GET `url` through the host (wasi:http, blocking) and decode its JSON, errors mapped.
function getJson(url) {
  const parts = new URL(url);
  const request = new OutgoingRequest(Fields.fromList([["accept", encoder.encode("application/json")]]));
  request.setMethod({ tag: "get" });
  request.setScheme({ tag: parts.protocol === "https:" ? "HTTPS" : "HTTP" });
  request.setAuthority(parts.host);
  request.setPathWithQuery(parts.pathname + parts.search);
  let future;
  try {
    future = handle(request, undefined);
  } catch (e) {
    throw httpError(e.payload ?? e);
  }
  future.subscribe().block();
  const outcome = future.get(); // { tag: "ok", val: { tag: "ok" | "err", val } }
  if (outcome === undefined || outcome.tag !== "ok") throw fail("internal", "the response future gave no answer");
  if (outcome.val.tag === "err") throw httpError(outcome.val.val);
  const response = outcome.val.val;
  const status = response.status();
  const headers = new Map(response.headers().entries().map(([k, v]) => [k.toLowerCase(), decoder.decode(v)]));
  const body = readAll(response.consume());
  if (status === 401 || status === 403) throw fail("unauthorized", `upstream answered ${status}`);
  if (status === 404) throw fail("not-found", "upstream answered 404");
  if (status === 429) throw fail("rate-limited", retryAfterMs(headers.get("retry-after")));
  if (status >= 400) throw fail("upstream", { status, message: `upstream answered ${status}` });
  try {
    return JSON.parse(decoder.decode(body));
  } catch (e) {
    throw fail("upstream", { status, message: `response is not JSON: ${e}` });
  }
}

function readAll(incomingBody) {
  const stream = incomingBody.stream();
  const chunks = [];
  for (;;) {
    try {
      chunks.push(stream.blockingRead(65536n));
    } catch (e) {
      if ((e.payload ?? e).tag === "closed") break;
      throw fail("upstream", { status: 0, message: "the response body failed" });
    }
  }
  const all = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const chunk of chunks) {
    all.set(chunk, at);
    at += chunk.length;
  }
  return all;
}

function retryAfterMs(value) {
  const seconds = Number.parseInt(value ?? "", 10);
  return BigInt(Number.isNaN(seconds) ? 1000 : Math.max(0, seconds) * 1000);
}

// A wasi:http error code as the connector error the host expects. A request the host
// refused (not a declared, approved destination) is `access-denied`: tell it apart
// from an upstream failure by this tag.
function httpError(code) {
  const tag = code?.tag ?? "";
  if (tag === "HTTP-request-denied") return fail("access-denied", "the host refused the request");
  if (tag.startsWith("connection-") && tag.endsWith("timeout")) return fail("timeout", tag);
  return fail("upstream", { status: 0, message: tag || String(code) });
}
