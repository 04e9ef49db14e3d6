//! The OpenAPI 3.1 document served at `/openapi.json`, written by hand next to the handlers
//! it describes; a test checks that every route of [`super::app`] is in it.

use serde_json::{Value, json};

use crate::cache::Limits;

/// The document, with the configured limits filled in.
pub fn document(limits: &Limits) -> Value {
    let error = |description: &str| {
        json!({
            "description": description,
            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
        })
    };
    // Every /v1 route requires the token when the node has one (see the bearer scheme).
    let unauthorized = error(
        "Authentication is on (--auth-token) and the request lacks 'Authorization: Bearer \
         <token>' or carries another token; WWW-Authenticate: Bearer.",
    );
    let unauthorized_head = json!({
        "description": "As for GET, without the body: the Bearer token is missing or wrong."
    });
    let key_param = json!({
        "name": "key", "in": "path", "required": true,
        "description": format!(
            "The key: 1 to {} bytes after percent-decoding; any bytes (send '/' as %2F, '%' as %25).",
            limits.max_key_bytes
        ),
        "schema": { "type": "string" }
    });
    let etag_header = json!({
        "description": "The entry's version as a strong ETag, e.g. \"1795046420000123\".",
        "schema": { "type": "string" }
    });
    let expires_header = json!({
        "description": "When the entry expires (HTTP date, rounded down); absent without expiry.",
        "schema": { "type": "string" }
    });
    let ttl_header = json!({
        "description": "Remaining lifetime in whole seconds; absent without expiry.",
        "schema": { "type": "integer" }
    });
    let read_headers = json!({
        "ETag": etag_header, "Expires": expires_header, "Tidecache-Ttl": ttl_header,
        "Content-Length": { "description": "The value's length.", "schema": { "type": "integer" } }
    });
    let acked_headers = json!({
        "Tidecache-Acked": {
            "description": "Replicas (this node included) that acknowledged the write; only on a replicated node.",
            "schema": { "type": "integer" }
        },
        "Tidecache-Replicas": {
            "description": "Replicas that hold the key (the cluster size); only on a replicated node.",
            "schema": { "type": "integer" }
        }
    });
    let write_headers = json!({
        "ETag": etag_header, "Expires": expires_header, "Tidecache-Ttl": ttl_header,
        "Tidecache-Bucket": {
            "description": "The expiry bucket (fire time of the schedule, UTC, e.g. 20261123T140500Z) the entry is filed under.",
            "schema": { "type": "string" }
        },
        "Tidecache-Acked": acked_headers["Tidecache-Acked"],
        "Tidecache-Replicas": acked_headers["Tidecache-Replicas"]
    });
    let ack = json!({
        "name": "Tidecache-Ack", "in": "header", "required": false,
        "description": "How many replicas must acknowledge the write before the answer: one (this node), quorum (a majority) or all; default: the node's --ack. 503 with the count reached when the level is not reached in time.",
        "schema": { "type": "string", "enum": ["one", "quorum", "all"] }
    });
    let ack_not_reached = error(
        "The acknowledgement level was not reached in time (Tidecache-Acked says how many did); the write is applied where acknowledged and spreads from there, but is not acknowledged.",
    );
    let if_match = json!({
        "name": "If-Match", "in": "header", "required": false,
        "description": "Write only if the current entry's ETag is listed (compare-and-set), or exists (*). 412 otherwise. Strong comparison: a weak ETag (W/\"...\") never matches.",
        "schema": { "type": "string" }
    });
    let if_none_match_write = json!({
        "name": "If-None-Match", "in": "header", "required": false,
        "description": "Write only if the key has no live entry (*: create only) or its ETag is not listed. 412 otherwise. Weak comparison: W/\"x\" lists \"x\".",
        "schema": { "type": "string" }
    });
    let if_none_match_read = json!({
        "name": "If-None-Match", "in": "header", "required": false,
        "description": "304 Not Modified if the current ETag is listed (or * and the key exists). Weak comparison: W/\"x\" matches \"x\".",
        "schema": { "type": "string" }
    });
    let ttl_rule = format!(
        "Lifetime from ?ttl= (90s, 15m, 2h or plain seconds, > 0) or an Expires header (not both); \
         otherwise the default TTL ({}); at most the maximum TTL ({}). No expiry may be after \
         Fri, 11 Apr 2262 23:47:16 GMT (expiries are kept as 64-bit Unix nanoseconds): 400 \
         expiry_out_of_range.",
        limits
            .default_ttl
            .map_or("none: no expiry".to_string(), |ttl| format!(
                "{}s",
                ttl.as_secs()
            )),
        limits
            .max_ttl
            .map_or("unbounded".to_string(), |ttl| format!("{}s", ttl.as_secs())),
    );
    json!({
        "openapi": "3.1.0",
        "security": [{}, { "bearer": [] }],
        "info": {
            "title": "tidecache cache-node",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "A cache node: values are opaque bytes under byte-string keys, with \
                versions (ETags), conditional writes and schedule-bucketed expiry. Every refusal \
                is a JSON Error with a stable code."
        },
        "paths": {
            "/v1/keys/{key}": {
                "parameters": [key_param],
                "get": {
                    "summary": "Read a value",
                    "parameters": [if_none_match_read],
                    "responses": {
                        "200": { "description": "The value.", "headers": read_headers,
                                 "content": { "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } } },
                        "304": { "description": "The ETag given in If-None-Match is current." },
                        "400": error("Malformed key encoding or If-None-Match, or a query parameter (GET takes none)."),
                        "401": unauthorized,
                        "404": error("The key does not exist or has expired (with a database behind the cache: and it has no row)."),
                        "414": error("The key is longer than the maximum."),
                        "503": error("A miss the database behind the cache could not answer (backend_unavailable, Retry-After), or in partitioned mode no owner of the key answered (owner_unreachable).")
                    }
                },
                "head": {
                    "summary": "Read a value's metadata (as GET, without the body)",
                    "parameters": [if_none_match_read],
                    "responses": {
                        "200": { "description": "The entry exists.", "headers": read_headers },
                        "304": { "description": "The ETag given in If-None-Match is current." },
                        "400": { "description": "As for GET, without the body." },
                        "401": unauthorized_head,
                        "404": { "description": "The key does not exist or has expired." }
                    }
                },
                "put": {
                    "summary": "Store a value",
                    "description": ttl_rule,
                    "parameters": [
                        { "name": "ttl", "in": "query", "required": false,
                          "description": "Lifetime: 90s, 15m, 2h or plain seconds.",
                          "schema": { "type": "string", "pattern": "^[0-9]+[smh]?$" } },
                        { "name": "Expires", "in": "header", "required": false,
                          "description": "Absolute expiry as an HTTP date.", "schema": { "type": "string" } },
                        if_match, if_none_match_write, ack
                    ],
                    "requestBody": {
                        "required": true,
                        "description": format!("The value: any bytes, at most {} bytes.", limits.max_value_bytes),
                        "content": { "*/*": { "schema": { "type": "string", "format": "binary" } } }
                    },
                    "responses": {
                        "201": { "description": "Created (the key had no live entry).", "headers": write_headers },
                        "204": { "description": "Replaced.", "headers": write_headers },
                        "400": error("Bad ttl or Expires, both given, lifetime over the maximum or required, expiry after 2262-04-11T23:47:16Z, a query parameter other than ttl (or ttl twice), malformed key encoding or precondition header."),
                        "401": unauthorized,
                        "409": error("With a database behind the cache (docs/backend.md), write-through: the database refused the write (backend_refused, its message and SQLSTATE); nothing changed."),
                        "412": error("If-Match or If-None-Match did not hold; ETag carries the current version."),
                        "413": error("The value is larger than the maximum (refused before reading it)."),
                        "414": error("The key is longer than the maximum."),
                        "422": error("With a database behind the cache: the value cannot be stored in its column (backend_value: not UTF-8 for text, not JSON for jsonb)."),
                        "503": error("The acknowledgement level was not reached in time (ack_level_not_reached; the write is applied here), or the database behind the cache is unavailable (backend_unavailable, Retry-After) or its write-behind queue full (backend_queue_full); nothing changed."),
                        "507": error("Out of memory and the eviction policy is noeviction, or the entry exceeds the capacity.")
                    }
                },
                "delete": {
                    "summary": "Delete a value",
                    "parameters": [if_match, if_none_match_write, ack],
                    "responses": {
                        "204": { "description": "Deleted.", "headers": acked_headers },
                        "400": error("Malformed key encoding or precondition header, or a query parameter (DELETE takes none)."),
                        "401": unauthorized,
                        "404": error("The key does not exist or has expired."),
                        "412": error("If-Match or If-None-Match did not hold."),
                        "414": error("The key is longer than the maximum."),
                        "503": ack_not_reached
                    }
                }
            },
            "/v1/batch/get": {
                "post": {
                    "summary": "Read many keys",
                    "description": format!("At most {} keys; body at most {} bytes; response at most {} bytes (--max-response-bytes).", limits.max_batch_entries, limits.max_batch_bytes, limits.max_response_bytes),
                    "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/BatchGetRequest" } } } },
                    "responses": {
                        "200": { "description": "One result per key, in request order.",
                                 "content": { "application/json": { "schema": { "$ref": "#/components/schemas/BatchGetResponse" } } } },
                        "400": error("Malformed JSON, an invalid key, too many keys, or a query parameter (this route takes none)."),
                        "401": unauthorized,
                        "413": error("The body is larger than the maximum, or the response would be (response_too_large: ask for fewer keys)."),
                        "415": error("The body is not application/json."),
                        "503": error("The node's budget for bodies and responses in flight is used up (over_memory_budget); retry after Retry-After.")
                    }
                }
            },
            "/v1/batch/put": {
                "post": {
                    "summary": "Write many keys",
                    "description": format!(
                        "At most {} entries; body at most {} bytes. The batch is validated as a whole first \
                         (any malformed entry rejects it and nothing is written); then every entry is \
                         written on its own and its status reported. {}",
                        limits.max_batch_entries, limits.max_batch_bytes, ttl_rule
                    ),
                    "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/BatchPutRequest" } } } },
                    "responses": {
                        "200": { "description": "One result per entry, in request order.",
                                 "content": { "application/json": { "schema": { "$ref": "#/components/schemas/BatchPutResponse" } } } },
                        "400": error("Malformed JSON, an invalid entry (key, base64 value, ttl, precondition), too many entries, or a query parameter (this route takes none: ttl is per entry)."),
                        "401": unauthorized,
                        "413": error("The body is larger than the maximum."),
                        "415": error("The body is not application/json.")
                    }
                }
            },
            "/healthz": { "get": { "summary": "Liveness", "responses": {
                "200": { "description": "Alive.", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Status" } } } } } } },
            "/readyz": { "get": { "summary": "Readiness", "responses": {
                "200": { "description": "Ready to serve.", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Status" } } } },
                "503": error("Not ready (draining for shutdown).") } } },
            "/metrics": { "get": { "summary": "Prometheus metrics", "responses": {
                "200": { "description": "OpenMetrics text: tidecache_http_requests_total{route,method,status}, \
                    tidecache_http_request_duration_seconds{route,method}, tidecache_entries, \
                    tidecache_memory_used_bytes, tidecache_memory_capacity_bytes, \
                    tidecache_evictions_total{reason}, tidecache_sweep_duration_seconds.",
                    "content": { "application/openmetrics-text": { "schema": { "type": "string" } } } } } } },
            "/openapi.json": { "get": { "summary": "This document", "responses": {
                "200": { "description": "OpenAPI 3.1.", "content": { "application/json": { "schema": { "type": "object" } } } } } } }
        },
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http", "scheme": "bearer",
                    "description": "Only when the node runs with --auth-token (TIDECACHE_AUTH_TOKEN, from \
                        the Secret in the CacheCluster's spec.auth): /v1/* then answer 401 \
                        {\"error\": \"unauthorized\"} without 'Authorization: Bearer <token>'. The \
                        internal routes take only the peers' token (--peer-token), never this one. \
                        Probes, /metrics and this document stay open."
                }
            },
            "schemas": {
                "Error": {
                    "type": "object", "required": ["error", "message"],
                    "properties": {
                        "error": { "type": "string", "description": "Stable code, e.g. bad_ttl, value_too_large, precondition_failed." },
                        "message": { "type": "string", "description": "What was wrong and what to fix." }
                    }
                },
                "Status": { "type": "object", "properties": { "status": { "type": "string" } } },
                "BatchGetRequest": {
                    "type": "object", "required": ["keys"], "additionalProperties": false,
                    "properties": { "keys": { "type": "array", "maxItems": limits.max_batch_entries,
                        "items": { "type": "string", "description": "A UTF-8 key (binary keys: use /v1/keys/{key})." } } }
                },
                "BatchGetResponse": {
                    "type": "object", "required": ["entries"],
                    "properties": { "entries": { "type": "array", "items": {
                        "type": "object", "required": ["key", "found"],
                        "properties": {
                            "key": { "type": "string" },
                            "found": { "type": "boolean" },
                            "value": { "type": "string", "contentEncoding": "base64" },
                            "etag": { "type": "string" },
                            "expires": { "type": "string", "description": "HTTP date." },
                            "ttl_seconds": { "type": "integer" }
                        } } } }
                },
                "BatchPutRequest": {
                    "type": "object", "required": ["entries"], "additionalProperties": false,
                    "properties": { "entries": { "type": "array", "maxItems": limits.max_batch_entries, "items": {
                        "type": "object", "required": ["key", "value"], "additionalProperties": false,
                        "properties": {
                            "key": { "type": "string" },
                            "value": { "type": "string", "contentEncoding": "base64" },
                            "ttl": { "type": "string", "description": "As ?ttl=." },
                            "if_match": { "type": "string", "description": "As the If-Match header." },
                            "if_none_match": { "type": "string", "description": "As the If-None-Match header." }
                        } } } }
                },
                "BatchPutResponse": {
                    "type": "object", "required": ["results"],
                    "properties": { "results": { "type": "array", "items": {
                        "type": "object", "required": ["key", "status"],
                        "properties": {
                            "key": { "type": "string" },
                            "status": { "type": "integer", "description": "As the single-key PUT: 201, 204, 412, 507." },
                            "etag": { "type": "string" },
                            "expires": { "type": "string" },
                            "error": { "type": "string" },
                            "message": { "type": "string" }
                        } } } }
                }
            }
        }
    })
}
