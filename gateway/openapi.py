"""The HTTP contract as an OpenAPI 3.1 document, served by the gateway at GET /openapi.json.

Written by hand (it is the contract, not a by-product of the code) and kept honest by
tests/unit/test_openapi.py: every route of both services is documented here and every
path documented here is served. docs/api.md is the same contract in prose.
"""

from __future__ import annotations

from typing import Any

from fleetline import statuses

VERSION = "1.3"

UUID = {"type": "string", "format": "uuid"}
TIME = {"type": "string", "format": "date-time"}
TIME_OR_NULL = {"type": ["string", "null"], "format": "date-time"}
SECRET = {"type": "string", "minLength": 1, "maxLength": 512}
# How a job shows each target (its command's status, plus waiting and skipped).
TARGET_STATUSES = statuses.TARGET_STATUSES


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(required: list[str], props: dict[str, Any], extra: bool = True) -> dict:
    """An object schema. Responses may grow fields (extra=True); requests ignore unknown
    fields, so request schemas allow them too."""
    return {"type": "object", "required": required, "properties": props,
            "additionalProperties": extra}


def opt_int(lo: int, hi: int, default: int) -> dict:
    """An optional integer field: null (or absent) means its default."""
    return {"type": ["integer", "null"], "minimum": lo, "maximum": hi, "default": default}


def query_int(name: str, lo: int, hi: int, default: int, about: str) -> dict:
    return {"name": name, "in": "query", "required": False, "description": about,
            "schema": {"type": "integer", "minimum": lo, "maximum": hi, "default": default}}


def query_str(name: str, about: str, schema: dict | None = None) -> dict:
    return {"name": name, "in": "query", "required": False, "description": about,
            "schema": schema or {"type": "string"}}


def path_id(name: str, about: str) -> dict:
    return {"name": name, "in": "path", "required": True, "description": about, "schema": UUID}


MACHINE_HEADER = {"name": "X-Machine-ID", "in": "header", "required": True,
                  "description": "The machine id the agent registered with.",
                  "schema": {"type": "string", "minLength": 1, "maxLength": 256}}

_ERROR_TEXT = {
    400: "Invalid request (`invalid_request`): bad JSON, a missing or malformed field.",
    401: "`invalid_token` (missing, malformed, expired, unknown or revoked credential); "
         "`token_reused` (a rotated-out refresh token again: its family is revoked).",
    403: "Agents: `machine_mismatch`, `agent_mismatch` or `agent_revoked`. Operators: `forbidden` "
         "(the role or the scope does not allow it; recorded in the audit trail).",
    404: "`not_found`.",
    408: "`request_timeout`: the request's headers or body did not arrive in time (10 s each by "
         "default); the connection is closed.",
    409: "`conflict`.",
    413: "`payload_too_large`: the body is over the gateway's limit.",
    429: "`rate_limited`; `Retry-After` says when to come back.",
    503: "`not_ready`: a service has no ready replica, or the gateway is at capacity "
         "(then with `Retry-After`).",
}

REQUEST_ID = {"X-Request-ID": {"description": "The request's id (the client's, or a new one).",
                               "schema": {"type": "string"}}}
RATE_HEADERS = {
    "X-RateLimit-Limit": {"schema": {"type": "string"}},
    "X-RateLimit-Remaining": {"schema": {"type": "string"}},
    "X-RateLimit-Reset": {"schema": {"type": "string"}},
}


def ok(schema: dict | None, about: str, headers: dict | None = None) -> dict:
    resp: dict[str, Any] = {"description": about, "headers": {**REQUEST_ID, **(headers or {})}}
    if schema is not None:
        resp["content"] = {"application/json": {"schema": schema}}
    return resp


def errors(*statuses: int) -> dict:
    out = {}
    for status in (*statuses, 405, 408, 413, 502, 503, 504):
        headers = {"Retry-After": {"schema": {"type": "string"}}} if status in (429, 503) else None
        out[str(status)] = ok(ref("Error"), _ERROR_TEXT.get(status, "See the error code."), headers)
    return out


def body(schema: dict) -> dict:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def op(summary: str, responses: dict, *, tags: list[str], security: list | None = None,
       parameters: list | None = None, request: dict | None = None) -> dict:
    if security is ADMIN_AUTH and "403" not in responses:  # every operator may meet a role or scope
        responses = {**responses, "403": ok(ref("Error"), _ERROR_TEXT[403])}
    out: dict[str, Any] = {"summary": summary, "tags": tags, "responses": responses}
    if security is not None:
        out["security"] = security
    if parameters:
        out["parameters"] = parameters
    if request is not None:
        out["requestBody"] = request
    return out


AGENT_AUTH: list[dict[str, list]] = [{"agentToken": []}]
ADMIN_AUTH: list[dict[str, list]] = [{"adminToken": []}]
NO_AUTH: list = []

# What a command is queued with, alone or as a job's `command`.
_COMMAND_SETTINGS = {
    "type": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[a-z0-9_.-]+$"},
    "params": {"type": ["object", "null"], "description": "At most 64 KiB of JSON."},
    "priority": opt_int(-100, 100, 0),
    "ttl_s": opt_int(1, 2592000, 14400),
    "max_retries": opt_int(0, 100, 5),
    "ack_timeout_s": opt_int(1, 86400, 300),
    "run_timeout_s": opt_int(1, 604800, 3600),
}

_APPROVAL_FIELDS = {
    "approvals": {"type": "array", "items": {"$ref": "#/components/schemas/Approval"},
                  "description": "Who approved it, each operator once."},
    "approvals_required": {"type": "integer", "minimum": 0,
                           "description": "Approvals it needs before it is signed (0: none)."},
    "denied_reason": {"type": ["string", "null"], "description": "`denied` or `approval_expired`."},
}

SCHEMAS: dict[str, Any] = {
    "Error": obj(["error", "detail"], {
        "error": {"type": "string", "description": "A snake_case code."},
        "detail": {"type": "string", "description": "One human sentence."},
        "field": {"type": "string", "description": "The input field at fault, when one is."},
    }),
    "RegisterRequest": obj(["registration_token", "machine_id", "hostname"], {
        "registration_token": SECRET,
        "machine_id": {"type": "string", "minLength": 1, "maxLength": 256},
        "hostname": {"type": "string", "minLength": 1, "maxLength": 255},
        "os": {"type": ["string", "null"], "maxLength": 64},
        "arch": {"type": ["string", "null"], "maxLength": 64},
        "agent_version": {"type": ["string", "null"], "maxLength": 64},
        "labels": {"type": ["object", "null"], "maxProperties": 64,
                   "propertyNames": {"minLength": 1, "maxLength": 255},
                   "additionalProperties": {"type": "string", "maxLength": 255}},
    }),
    "Credentials": obj(["access_token", "access_token_expires_at", "refresh_token_expires_at"], {
        "access_token": {"type": "string"},
        "access_token_expires_at": TIME,
        "refresh_token": {"type": "string"},
        "refresh_token_expires_at": TIME,
    }),
    "RegisterResponse": {"allOf": [ref("Credentials"), obj(["agent_id", "refresh_token", "poll_interval_s"], {
        "agent_id": UUID,
        "poll_interval_s": {"type": "integer"},
        "command_keyset": {"oneOf": [{"type": "null"}, ref("SignedKeyset")]},
        "root_public_key": {"type": ["string", "null"],
                            "description": "The keyset root's public key (base64url), for agents that pin on first use."},
    })]},
    "SignedKeyset": obj(["payload", "sig", "root_kid"], {
        "payload": {"type": "string", "description": "base64url of the canonical JSON (RFC 8785) of "
                    "{v, version, expires_at, keys: [{kid, public_key, not_after}]}"},
        "sig": {"type": "string", "description": "Ed25519 by the root key over "
                "'fleetline.keyset.v1\\x00' + the payload bytes, base64url"},
        "root_kid": {"type": "string"},
    }),
    "InstalledKeyset": {"allOf": [ref("SignedKeyset"), obj(["version"], {"version": {"type": "integer"}})]},
    "SignedCommand": obj(["kid", "payload", "sig"], {
        "kid": {"type": "string"},
        "payload": {"type": "string", "description": "base64url of the canonical JSON (RFC 8785) of "
                    "{v, aud, command_id, agent_id, type, params, issued_at, expires_at, run_timeout_s}"},
        "sig": {"type": "string", "description": "Ed25519 by key `kid` over "
                "'fleetline.cmd.v1\\x00' + the payload bytes, base64url"},
    }),
    "RenewResponse": {"allOf": [ref("Credentials"), obj(["refresh_token"], {})]},
    "RenewRequest": obj(["agent_id", "refresh_token"], {
        "agent_id": {"type": "string", "minLength": 1, "maxLength": 64},
        "refresh_token": SECRET,
    }),
    "Jwks": obj(["keys"], {"keys": {"type": "array", "items": obj(["kty", "crv", "x", "kid"], {
        "kty": {"const": "OKP"}, "crv": {"const": "Ed25519"}, "x": {"type": "string"},
        "kid": {"type": "string"}, "alg": {"type": "string"}, "use": {"type": "string"},
    })}}),
    "Delivery": obj(["id", "type", "params", "created_at", "expires_at", "delivery", "run_timeout_s"], {
        "id": UUID, "type": {"type": "string"}, "params": {"type": "object"},
        "created_at": TIME, "expires_at": TIME,
        "delivery": {"type": "integer", "minimum": 1},
        "run_timeout_s": {"type": "integer"},
        "signed": {"oneOf": [{"type": "null"}, ref("SignedCommand")],
                   "description": "What the agent verifies and runs; the other fields are an unsigned copy."},
    }),
    "PollResponse": obj(["commands", "poll_interval_s"], {
        "commands": {"type": "array", "items": ref("Delivery")},
        "poll_interval_s": {"type": "integer", "minimum": 1},
        "facts_interval_s": {"type": "integer", "minimum": 1, "description": "How often to report facts."},
        "refresh_facts": {"type": "boolean", "description": "An operator asked for fresh facts: report now."},
        "cancels": {"type": "array", "items": ref("Cancel"),
                    "description": "Only when there are some: signed cancels of this agent's running commands (handed over again "
                                   "every 30 s until the agent reports)."},
    }),
    "Cancel": obj(["command_id", "signed"], {
        "command_id": UUID,
        "signed": obj(["kid", "payload", "sig"], {
            "kid": {"type": "string"},
            "payload": {"type": "string", "description": "base64url of the canonical JSON (RFC 8785) of "
                        "{v, aud, cancel (the command id), agent_id, issued_by, iat}"},
            "sig": {"type": "string", "description": "Ed25519 by key `kid` over "
                    "'fleetline.cmd.v1\\x00' + the payload bytes, base64url (as a command's)"},
        }),
    }),
    "ResultRequest": obj(["status"], {
        "status": {"enum": list(statuses.OUTCOMES)},
        "exit_code": {"type": ["integer", "null"], "minimum": -2147483648, "maximum": 2147483647},
        "output": {"type": ["string", "null"], "maxLength": 65536,
                   "description": "At most 64 KiB of UTF-8, without NUL characters."},
        "started_at": TIME_OR_NULL,
        "finished_at": TIME_OR_NULL,
        "cancelled": {"type": "boolean", "description": "A verified cancel stopped it: it ends `cancelled` "
                                                        "when a cancel was asked for."},
    }),
    "OutputChunk": obj(["offset", "data"], {
        "offset": {"type": "integer", "minimum": 0,
                   "description": "Where the chunk starts in the command's output stream, in bytes of UTF-8."},
        "data": {"type": "string", "maxLength": 65536,
                 "description": "At most 64 KiB of UTF-8, without NUL characters, ending on a whole character."},
    }),
    "OutputAccepted": obj(["next_offset", "truncated"], {
        "next_offset": {"type": "integer", "description": "The stream's end: where the next chunk starts."},
        "truncated": {"type": "boolean",
                      "description": "The stream reached FLEETLINE_MAX_OUTPUT_BYTES: send no more."},
    }),
    "OutputPage": obj(["offset", "data", "next_offset", "truncated", "complete"], {
        "offset": {"type": "integer", "description": "Where `data` starts (the offset asked for, moved to the "
                                                     "next whole character)."},
        "data": {"type": "string", "description": "At most 1 MiB of the stream."},
        "next_offset": {"type": "integer", "description": "Where to read next."},
        "truncated": {"type": "boolean", "description": "The stream was cut at the cap; the result keeps the end."},
        "complete": {"type": "boolean", "description": "The command has ended and this page reaches the end."},
    }),
    "Result": obj(["exit_code", "output", "started_at", "finished_at"], {
        "exit_code": {"type": ["integer", "null"]}, "output": {"type": "string"},
        "started_at": TIME_OR_NULL, "finished_at": TIME_OR_NULL,
    }),
    "CommandState": obj(["id", "agent_id", "type", "params", "status", "priority", "retry_count",
                         "max_retries", "created_at", "sent_at", "acked_at", "finished_at",
                         "expires_at", "result"], {
        "id": UUID, "agent_id": UUID, "type": {"type": "string"}, "params": {"type": "object"},
        "status": {"enum": list(statuses.COMMAND_STATUSES)},
        "priority": {"type": "integer"}, "retry_count": {"type": "integer"},
        "max_retries": {"type": "integer"}, "delivery_count": {"type": "integer"},
        "ack_timeout_s": {"type": "integer"}, "run_timeout_s": {"type": "integer"},
        "idempotency_key": {"type": ["string", "null"]},
        "created_at": TIME, "sent_at": TIME_OR_NULL, "acked_at": TIME_OR_NULL,
        "finished_at": TIME_OR_NULL, "expires_at": TIME,
        "result": {"oneOf": [{"type": "null"}, ref("Result")]},
        "job_id": {"type": ["string", "null"], "format": "uuid",
                   "description": "The job this command belongs to, if any."},
        "created_by": {"oneOf": [{"type": "null"}, ref("Who")]},
        "cancelled_by": {"oneOf": [{"type": "null"}, ref("Who")]},
        "cancel_requested_at": {**TIME_OR_NULL, "description": "When a cancel was asked for; a running "
                                                               "command with one is being stopped by its agent."},
        **_APPROVAL_FIELDS,
    }),
    "CommandRequest": obj(["agent_id", "type"], {
        "agent_id": UUID,
        **_COMMAND_SETTINGS,
        "idempotency_key": {"type": ["string", "null"], "minLength": 1, "maxLength": 255},
    }),
    "CommandPage": obj(["commands", "next"], {
        "commands": {"type": "array", "items": ref("CommandState")},
        "next": {"type": ["string", "null"], "description": "Pass as `before` for the next page."},
    }),
    "RegistrationTokenRequest": obj([], {
        "max_uses": opt_int(1, 100000, 1),
        "expires_in_s": opt_int(60, 31536000, 86400),
        "note": {"type": ["string", "null"], "maxLength": 1024},
    }),
    "RegistrationToken": obj(["id", "max_uses", "uses", "expires_at", "note", "created_at"], {
        "id": UUID, "max_uses": {"type": "integer"}, "uses": {"type": "integer"},
        "expires_at": TIME, "note": {"type": "string"}, "created_at": TIME,
        "revoked_at": TIME_OR_NULL,
    }),
    "NewRegistrationToken": {"allOf": [ref("RegistrationToken"), obj(["token"], {
        "token": {"type": "string", "description": "The secret; shown only in this answer."},
        "root_key_sha256": {"type": ["string", "null"], "pattern": "^[0-9a-f]{64}$",
                            "description": "The hex SHA-256 of the command-signing root key agents "
                                           "enrolling with this token pin (`--root-key-sha256`)."},
    })]},
    "Agent": obj(["id", "hostname", "os", "arch", "agent_version", "labels", "status",
                  "created_at", "last_seen_at"], {
        "id": UUID, "machine_id": {"type": "string"}, "hostname": {"type": "string"},
        "os": {"type": "string"}, "arch": {"type": "string"},
        "agent_version": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "status": {"enum": list(statuses.AGENT_STATUSES)},
        "created_at": TIME, "last_seen_at": TIME_OR_NULL, "revoked_at": TIME_OR_NULL,
        "online": {"type": "boolean", "description": "Seen within FLEETLINE_OFFLINE_AFTER_S."},
        "facts": {"type": "object", "description": "What the agent last reported of its machine (data, "
                                                  "never instructions)."},
        "facts_updated_at": TIME_OR_NULL,
        "agent_labels": {"type": "object", "description": "Declared at registration."},
        "operator_labels": {"type": "object", "description": "Set by operators (PATCH)."},
    }),
    "Health": obj(["status"], {"status": {"type": "string"}}),
    "Who": obj(["id", "name"], {"id": {"type": ["string", "null"]}, "name": {"type": "string"}},),
    "Scope": obj([], {
        "labels": {"type": "object", "maxProperties": 64, "additionalProperties": {"type": "string", "maxLength": 255},
                   "description": "Agents carrying every pair ({}: all agents)."},
        "command_types": {"type": "array", "minItems": 1, "maxItems": 100,
                          "items": {"type": "string", "pattern": "^(\\*|[a-z0-9_.-]{1,64})$"},
                          "description": "The types it may queue ([\"*\"]: all)."},
    }),
    "Operator": obj(["id", "name", "role", "scope", "email", "created_at", "disabled_at"], {
        "id": UUID, "name": {"type": "string"}, "role": {"enum": ["viewer", "operator", "admin"]},
        "scope": ref("Scope"), "email": {"type": ["string", "null"]}, "created_at": TIME,
        "disabled_at": TIME_OR_NULL,
    }),
    "OperatorRequest": obj(["name", "role"], {
        "name": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[a-z0-9_.-]+$"},
        "role": {"enum": ["viewer", "operator", "admin"]},
        "scope": {"oneOf": [{"type": "null"}, ref("Scope")]},
        "email": {"type": ["string", "null"], "maxLength": 254},
        "password": {"type": ["string", "null"], "minLength": 12, "maxLength": 1024},
    }),
    "OperatorChange": obj([], {
        "role": {"enum": ["viewer", "operator", "admin", None]},
        "scope": {"oneOf": [{"type": "null"}, ref("Scope")]},
        "email": {"type": ["string", "null"], "maxLength": 254},
        "password": {"type": ["string", "null"], "minLength": 12, "maxLength": 1024},
        "disabled": {"type": ["boolean", "null"]},
    }),
    "OperatorToken": obj(["id", "operator_id", "note", "created_at", "expires_at", "last_used_at"], {
        "id": UUID, "operator_id": UUID, "note": {"type": "string"}, "created_at": TIME, "expires_at": TIME,
        "revoked_at": TIME_OR_NULL, "last_used_at": TIME_OR_NULL,
    }),
    "NewOperatorToken": {"allOf": [ref("OperatorToken"), obj(["token"], {
        "token": {"type": "string", "description": "The secret (`flop_...`); shown only in this answer."}})]},
    "OperatorTokenRequest": obj([], {
        "expires_in_s": opt_int(60, 31536000, 2592000),
        "note": {"type": ["string", "null"], "maxLength": 1024},
    }),
    "SignIn": obj(["method"], {
        "method": {"enum": ["password", "token", "oidc"]},
        "name": {"type": "string", "maxLength": 64}, "password": {"type": "string", "maxLength": 1024},
        "token": {"type": "string", "maxLength": 512},
        "id_token": {"type": "string", "maxLength": 16384}, "nonce": {"type": "string", "maxLength": 512},
        "session_s": opt_int(60, 43200, 43200),
    }),
    "Session": obj(["session", "expires_at", "operator"], {
        "session": {"type": "string", "description": "The session's secret (`fls_...`): a bearer "
                    "credential for the admin API; only its SHA-256 is stored."},
        "expires_at": TIME, "operator": ref("Operator"),
    }),
    "AuditEvent": obj(["id", "at", "actor", "action", "target", "outcome", "request_id", "source_ip", "details"], {
        "id": UUID, "at": TIME,
        "actor": obj(["type", "id", "name"], {"type": {"enum": ["operator", "agent", "bootstrap", "schedule"]},
                                              "id": {"type": ["string", "null"]}, "name": {"type": "string"}}),
        "action": {"type": "string", "description": "Dotted: command.create, job.cancel, console.sign_in, ..."},
        "target": obj(["type", "id"], {"type": {"type": ["string", "null"]}, "id": {"type": ["string", "null"]}}),
        "outcome": {"enum": ["ok", "forbidden", "failed"]},
        "request_id": {"type": ["string", "null"]}, "source_ip": {"type": ["string", "null"]},
        "details": {"type": "object"},
    }),
    "JobSelector": {
        "description": "Exactly one of agent_ids, labels, all_active, where; or labels and where. Targets "
                       "are the active agents matching when the job is created (a schedule's: at each run).",
        "anyOf": [
            obj(["agent_ids"], {"agent_ids": {"type": "array", "minItems": 1, "maxItems": 10000,
                                              "items": UUID}}),
            obj(["labels"], {"labels": {"type": "object", "minProperties": 1, "maxProperties": 64,
                                        "additionalProperties": {"type": "string", "maxLength": 255}}}),
            obj(["all_active"], {"all_active": {"const": True}}),
            obj(["where"], {"where": {"type": "string", "minLength": 1, "maxLength": 4096,
                                      "description": "Requirements over labels.<name> and facts.<path>, "
                                                     "comma-separated: key, !key, = == != < <= > >= in notin."},
                            "labels": {"type": "object", "maxProperties": 64,
                                       "additionalProperties": {"type": "string", "maxLength": 255}}}),
        ]},
    "JobCommand": obj(["type"], _COMMAND_SETTINGS),
    "Rollout": obj([], {
        "max_in_flight": {"oneOf": [
            {"type": "null"}, {"type": "integer", "minimum": 1, "maximum": 10000},
            {"type": "string", "pattern": "^[0-9]{1,3}%$",
             "description": "A percentage of the targets, 1% to 100%, rounded up."}],
            "description": "At most this many of the job's commands released or delivered and not final."},
        "max_failures": {"type": ["integer", "null"], "minimum": 0, "maximum": 10000,
                         "description": "Halt once more targets than this end failed, timed_out, "
                                        "expired or rejected."},
        "canary": {"type": ["integer", "null"], "minimum": 1, "maximum": 10000,
                   "description": "Release only this many targets first; the rest once they all succeeded "
                                  "(any of them failing first halts the job)."},
    }),
    "JobRequest": obj(["selector", "command"], {
        "selector": ref("JobSelector"),
        "command": ref("JobCommand"),
        "rollout": {"oneOf": [{"type": "null"}, ref("Rollout")]},
        "idempotency_key": {"type": ["string", "null"], "minLength": 1, "maxLength": 255},
        "dry_run": {"type": ["boolean", "null"], "default": False},
    }),
    "JobCounts": obj(list(TARGET_STATUSES), {s: {"type": "integer", "minimum": 0} for s in TARGET_STATUSES}),
    "Job": obj(["id", "status", "selector", "command", "rollout", "target_count", "counts",
                "created_at", "finished_at", "halted_reason"], {
        "id": UUID,
        "status": {"enum": list(statuses.JOB_STATUSES)},
        "selector": {"type": "object"}, "command": {"type": "object"}, "rollout": {"type": "object"},
        "created_by": {"oneOf": [{"type": "null"}, ref("Who")]},
        "cancelled_by": {"oneOf": [{"type": "null"}, ref("Who")]},
        "target_count": {"type": "integer", "minimum": 1},
        "counts": ref("JobCounts"),
        "created_at": TIME, "finished_at": TIME_OR_NULL,
        "halted_reason": {"type": ["string", "null"]},
        "idempotency_key": {"type": ["string", "null"]},
        **_APPROVAL_FIELDS,
        "approval_expires_at": {**TIME_OR_NULL, "description": "While it awaits approval: when it is denied."},
        "schedule_id": {"type": ["string", "null"], "format": "uuid", "description": "The schedule that started it."},
        "scheduled_for": {**TIME_OR_NULL, "description": "The schedule's tick it was started for."},
    }),
    "ScheduleRequest": obj(["name", "selector", "command"], {
        "name": {"type": "string", "minLength": 1, "maxLength": 128},
        "selector": ref("JobSelector"),
        "command": ref("JobCommand"),
        "rollout": {"oneOf": [{"type": "null"}, ref("Rollout")]},
        "cron": {"type": ["string", "null"], "description": "Five fields (ranges, lists, steps, month and weekday "
                 "names) or @hourly, @daily, @weekly, @monthly; exactly one of cron and interval_s."},
        "timezone": {"type": ["string", "null"], "default": "UTC", "description": "An IANA time zone."},
        "interval_s": {"type": ["integer", "null"], "minimum": 1, "maximum": 31536000},
        "overlap": {"enum": ["skip", "allow", None], "default": "skip"},
        "catch_up": {"enum": ["skip", "latest", None], "default": "skip"},
        "enabled": {"type": ["boolean", "null"], "default": True},
    }),
    "ScheduleRun": obj(["scheduled_for", "started_at", "job_id", "outcome", "detail"], {
        "scheduled_for": TIME, "started_at": TIME,
        "job_id": {"type": ["string", "null"], "format": "uuid"},
        "outcome": {"enum": ["started", "skipped_overlap", "skipped_missed", "failed_to_start"]},
        "detail": {"type": ["string", "null"]},
    }),
    "Release": obj(["version", "platform", "sha256", "size", "created_at", "created_by"], {
        "version": {"type": "string", "maxLength": 64}, "platform": {"type": "string", "maxLength": 49},
        "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"}, "size": {"type": "integer", "minimum": 1},
        "created_at": TIME, "created_by": {"type": "string"}}),
    "ReleaseList": obj(["releases"], {"releases": {"type": "array", "items": ref("Release")}}),
    "Webhook": obj(["id", "url", "events", "description", "enabled", "created_at"], {
        "id": UUID, "url": {"type": "string", "maxLength": 2048},
        "events": {"type": "array", "items": {"type": "string"}}, "description": {"type": "string"},
        "enabled": {"type": "boolean"}, "disabled_reason": {"type": ["string", "null"]},
        "created_at": TIME, "created_by": {"type": "string"}, "updated_at": TIME,
        "previous_secret_valid_until": TIME_OR_NULL,
        "secret": {"type": "string", "description": "whsec_...: only in the answer that made it."}}),
    "WebhookRequest": obj(["url", "events"], {
        "url": {"type": "string", "minLength": 1, "maxLength": 2048,
                "description": "https, to a public address (FLEETLINE_WEBHOOK_ALLOW_PRIVATE lifts both)."},
        "events": {"type": "array", "minItems": 1, "maxItems": 50, "items": {"type": "string"},
                   "description": "job.finished, command.failed, agent.enrolled, agent.revoked, agent.offline, "
                                  "agent.online, approval.requested, schedule.run_failed, audit.<action>, audit.*"},
        "description": {"type": ["string", "null"], "maxLength": 500}}, extra=False),
    "WebhookChange": obj([], {
        "url": {"type": ["string", "null"], "maxLength": 2048},
        "events": {"type": ["array", "null"], "items": {"type": "string"}},
        "description": {"type": ["string", "null"], "maxLength": 500},
        "enabled": {"type": ["boolean", "null"]},
        "rotate_secret": {"type": ["boolean", "null"],
                          "description": "A new secret, shown once in the answer; the old one signs too for 24 h."}},
        extra=False),
    "WebhookList": obj(["webhooks"], {"webhooks": {"type": "array", "items": ref("Webhook")}}),
    "WebhookDelivery": obj(["id", "event_type", "status", "attempts", "created_at"], {
        "id": UUID, "event_type": {"type": "string"}, "status": {"enum": ["pending", "delivered", "failed"]},
        "attempts": {"type": "integer"}, "created_at": TIME, "last_attempt_at": TIME_OR_NULL,
        "delivered_at": TIME_OR_NULL, "next_attempt_at": TIME_OR_NULL,
        "status_code": {"type": ["integer", "null"]}, "latency_ms": {"type": ["integer", "null"]},
        "error": {"type": ["string", "null"]}}),
    "WebhookDeliveryPage": obj(["deliveries", "next"], {"deliveries": {"type": "array",
                                                                       "items": ref("WebhookDelivery")},
                                                 "next": {"type": ["string", "null"]}}),
    "Schedule": obj(["id", "name", "selector", "command", "rollout", "cron", "timezone", "interval_s",
                     "overlap", "catch_up", "enabled", "status", "next_run_at", "last_run"], {
        "id": UUID, "name": {"type": "string"},
        "selector": {"type": "object"}, "command": {"type": "object"}, "rollout": {"type": "object"},
        "cron": {"type": ["string", "null"]}, "timezone": {"type": "string"},
        "interval_s": {"type": ["integer", "null"]},
        "overlap": {"enum": ["skip", "allow"]}, "catch_up": {"enum": ["skip", "latest"]},
        "enabled": {"type": "boolean"},
        "status": {"enum": ["active", "paused", "awaiting_approval", "denied"]},
        "paused_reason": {"type": ["string", "null"]},
        "next_run_at": {**TIME_OR_NULL, "description": "When active: its next tick."},
        "last_run": {"oneOf": [{"type": "null"}, ref("ScheduleRun")]},
        "created_at": TIME, "updated_at": TIME,
        "created_by": {"oneOf": [{"type": "null"}, ref("Who")]},
        **_APPROVAL_FIELDS,
    }),
    "SchedulePage": obj(["schedules", "next"], {
        "schedules": {"type": "array", "items": ref("Schedule")},
        "next": {"type": ["string", "null"], "description": "Pass as `after` for the next page (by name)."},
    }),
    "RunPage": obj(["runs", "next"], {
        "runs": {"type": "array", "items": ref("ScheduleRun")},
        "next": {"type": ["string", "null"], "description": "Pass as `before` for the next page."},
    }),
    "Approval": obj(["operator", "at", "comment"], {"operator": ref("Who"), "at": TIME, "comment": {"type": "string"}}),
    "Decision": obj([], {"comment": {"type": ["string", "null"], "maxLength": 2048}}),
    "ApprovalRule": {"type": "object", "minProperties": 1, "additionalProperties": False, "properties": {
        "command_types": {"type": "array", "minItems": 1, "maxItems": 100, "items": {"type": "string"}},
        "min_targets": {"type": "integer", "minimum": 1, "maximum": 1000000},
        "all_active": {"const": True},
        "labels": {"type": "object", "minProperties": 1, "additionalProperties": {"type": "string"}},
    }},
    "ApprovalPolicyRequest": obj([], {
        "rules": {"type": "array", "maxItems": 100, "items": ref("ApprovalRule")},
        "approvals": opt_int(1, 10, 1), "expires_in_s": opt_int(60, 2592000, 86400),
    }),
    "ApprovalPolicy": obj(["rules", "approvals", "expires_in_s"], {
        "rules": {"type": "array", "items": ref("ApprovalRule")},
        "approvals": {"type": "integer"}, "expires_in_s": {"type": "integer"},
        "updated_at": TIME_OR_NULL, "updated_by": {"type": ["string", "null"]},
    }),
    "DryRun": obj(["target_count"], {
        "target_count": {"type": "integer", "minimum": 1},
        "targets": {"type": "array", "maxItems": 100, "description": "The first targets, by name.",
                    "items": obj(["agent_id", "hostname"], {"agent_id": UUID, "hostname": {"type": "string"}})},
    }),
    "JobPage": obj(["jobs", "next"], {
        "jobs": {"type": "array", "items": ref("Job")},
        "next": {"type": ["string", "null"], "description": "Pass as `before` for the next page."},
    }),
    "Target": obj(["agent_id", "hostname", "command_id", "status", "result"], {
        "agent_id": UUID, "hostname": {"type": "string"}, "command_id": UUID,
        "status": {"enum": list(TARGET_STATUSES)},
        "result": {"oneOf": [{"type": "null"}, ref("Result")]},
    }),
    "TargetPage": obj(["targets", "next"], {
        "targets": {"type": "array", "items": ref("Target")},
        "next": {"type": ["string", "null"], "description": "Pass as `before` for the next page."},
    }),
}

AGENT_PATH = path_id("agent_id", "The agent's id; it must be the token's own agent.")
COMMAND_PATH = path_id("command_id", "The command's id.")
JOB_PATH = path_id("job_id", "The job's id.")
SCHEDULE_PATH = path_id("schedule_id", "The schedule's id.")
WEBHOOK_PATH = path_id("webhook_id", "The webhook endpoint's id.")
RELEASE_PATH = [
    {"name": "version", "in": "path", "required": True, "description": "The release's version, e.g. 1.4.0.",
     "schema": {"type": "string", "pattern": "^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$"}},
    {"name": "platform", "in": "path", "required": True, "description": "linux-x86_64 or linux-aarch64.",
     "schema": {"type": "string", "pattern": "^[a-z0-9]{1,16}-[a-z0-9_]{1,32}$"}},
]
OPERATOR_PATH = path_id("operator_id", "The operator's id.")
BEFORE = query_str("before", "A `next` cursor from the previous page.",
                   {"type": "string", "maxLength": 512})

PATHS: dict[str, dict] = {
    "/api/v1/agents/register": {"post": op(
        "Register an agent with a registration token", {
            "201": ok(ref("RegisterResponse"), "Registered (or the same token and machine again while "
                      "the agent never used its credentials: a retry, the same agent id)."),
            **errors(400, 401, 409, 429)},
        tags=["agents"], security=NO_AUTH, request=body(ref("RegisterRequest")))},
    "/api/v1/agents/renew": {"post": op(
        "Renew the access token with the refresh token", {
            "200": ok(ref("RenewResponse"), "A fresh access token and the next refresh token "
                      "(the one presented is consumed)."),
            **errors(400, 401, 403, 429)},
        tags=["agents"], security=NO_AUTH, parameters=[MACHINE_HEADER],
        request=body(ref("RenewRequest")))},
    "/.well-known/jwks.json": {"get": op(
        "The public keys that verify access tokens", {"200": ok(ref("Jwks"), "A JWK set.")},
        tags=["agents"], security=NO_AUTH)},
    "/api/v1/agents/keyset": {"get": op(
        "The current command keyset, signed by the root key", {
            "200": ok(ref("SignedKeyset"), "The keyset."), **errors(401, 403, 404)},
        tags=["agents"], security=AGENT_AUTH, parameters=[MACHINE_HEADER])},
    "/api/v1/admin/command-keyset": {"put": op(
        "Install a keyset signed offline with the root key (`fleetline keys keyset`)", {
            "200": ok(ref("InstalledKeyset"), "Installed."), **errors(400, 401, 409)},
        tags=["operators"], security=ADMIN_AUTH, request=body(ref("SignedKeyset")))},
    "/api/v1/agents/{agent_id}/commands": {"get": op(
        "Poll: claim the commands due for this agent (optionally waiting for one)", {
            "200": ok(ref("PollResponse"), "Claimed commands, possibly none.", RATE_HEADERS),
            **errors(400, 401, 403, 429)},
        tags=["agents"], security=AGENT_AUTH, parameters=[
            AGENT_PATH, MACHINE_HEADER,
            query_int("limit", 1, 100, 10, "At most this many commands."),
            query_str("cancels_only", "`true`: claim nothing, answer only cancels (an agent whose slots are "
                      "all busy holds these).", {"enum": ["true", "false"]}),
            query_int("wait", 0, 300, 0, "Seconds to hold the request while nothing is due: at most the "
                      "server's FLEETLINE_MAX_WAIT_S (60 unless set, up to 300); more is 400."),
        ])},
    "/api/v1/agents/{agent_id}/commands/{command_id}/ack": {"post": op(
        "Acknowledge a delivered command just before running it", {
            "200": ok(ref("CommandState"), "The command after the ack: run it only when `running`.",
                      RATE_HEADERS),
            **errors(401, 403, 404, 409, 429)},
        tags=["agents"], security=AGENT_AUTH, parameters=[AGENT_PATH, COMMAND_PATH, MACHINE_HEADER])},
    "/api/v1/agents/{agent_id}/commands/{command_id}/result": {"post": op(
        "Report a command's result", {
            "200": ok(ref("CommandState"), "The command after the result.", RATE_HEADERS),
            **errors(400, 401, 403, 404, 409, 429)},
        tags=["agents"], security=AGENT_AUTH, parameters=[AGENT_PATH, COMMAND_PATH, MACHINE_HEADER],
        request=body(ref("ResultRequest")))},
    "/api/v1/agents/{agent_id}/facts": {"put": op(
        "Report what the agent knows of its machine (replaces the last report)", {
            "200": ok(obj(["facts_updated_at"], {"facts_updated_at": TIME}), "Stored.", RATE_HEADERS),
            **errors(400, 401, 403, 429)},
        tags=["agents"], security=AGENT_AUTH, parameters=[AGENT_PATH, MACHINE_HEADER],
        request=body(obj(["facts"], {"facts": {"type": "object", "description": "At most 64 KiB of JSON, "
                                                                                 "nesting at most 8 deep."}})))},
    "/api/v1/agents/{agent_id}/commands/{command_id}/output": {"post": op(
        "Send a chunk of a running command's output", {
            "200": ok(ref("OutputAccepted"), "Stored, or already stored (a replayed chunk changes nothing).",
                      RATE_HEADERS),
            **errors(400, 401, 403, 404, 409, 429),
            "409": ok(ref("Error"), "A gap or a disagreeing overlap: the envelope also carries "
                                    "`expected_offset` (integer), where the stored stream ends; or the command "
                                    "is not running."),
        },
        tags=["agents"], security=AGENT_AUTH, parameters=[AGENT_PATH, COMMAND_PATH, MACHINE_HEADER],
        request=body(ref("OutputChunk")))},
    "/api/v1/admin/registration-tokens": {
        "post": op("Create a registration token", {
            "201": ok(ref("NewRegistrationToken"), "Created; the secret is shown only here."),
            **errors(400, 401)},
            tags=["operators"], security=ADMIN_AUTH, request=body(ref("RegistrationTokenRequest"))),
        "get": op("List registration tokens (without secrets)", {
            "200": ok(obj(["tokens"], {"tokens": {"type": "array", "items": ref("RegistrationToken")}}),
                      "Every token, newest first."),
            **errors(401)},
            tags=["operators"], security=ADMIN_AUTH),
    },
    "/api/v1/admin/registration-tokens/{token_id}": {"delete": op(
        "Revoke a registration token", {"204": ok(None, "Revoked."), **errors(401, 404)},
        tags=["operators"], security=ADMIN_AUTH,
        parameters=[path_id("token_id", "The token's id.")])},
    "/api/v1/admin/agents": {"get": op(
        "List agents (every agent, or one page with `limit`, `before`, `status`, `label`)", {
            "200": ok(obj(["agents"], {
                "agents": {"type": "array", "items": ref("Agent")},
                "next": {"type": ["string", "null"]},
            }), "Agents, newest first."),
            **errors(400, 401)},
        tags=["operators"], security=ADMIN_AUTH, parameters=[
            query_int("limit", 1, 10000, 1000, "Page size."), BEFORE,
            query_str("status", "Only agents in this status.", {"enum": list(statuses.AGENT_STATUSES)}),
            {"name": "label", "in": "query", "required": False, "explode": True,
             "description": "key=value: only agents with this label (repeatable: every one must match).",
             "schema": {"type": "array", "items": {"type": "string", "pattern": "^[^=]+=.*$",
                                                   "maxLength": 511}}},
            query_str("where", "Only agents matching this expression (as a job selector's where).",
                      {"type": "string", "maxLength": 4096}),
        ])},
    "/api/v1/admin/agents/{agent_id}": {
        "get": op("One agent", {"200": ok(ref("Agent"), "The agent."), **errors(401, 404)},
                  tags=["operators"], security=ADMIN_AUTH,
                  parameters=[path_id("agent_id", "The agent's id.")]),
        "delete": op("Revoke an agent: its tokens die, its endpoints answer 403 agent_revoked",
                     {"204": ok(None, "Revoked."), **errors(401, 404)},
                     tags=["operators"], security=ADMIN_AUTH,
                     parameters=[path_id("agent_id", "The agent's id.")]),
        "patch": op("Set (a value) and remove (null) operator labels; `labels` is the agent's own overlaid "
                    "by these", {"200": ok(ref("Agent"), "The agent."), **errors(400, 401, 404)},
                    tags=["operators"], security=ADMIN_AUTH,
                    parameters=[path_id("agent_id", "The agent's id.")],
                    request=body(obj(["labels"], {"labels": {
                        "type": "object", "minProperties": 1, "maxProperties": 64,
                        "additionalProperties": {"type": ["string", "null"], "maxLength": 255}}}))),
    },
    "/api/v1/admin/agents/{agent_id}/refresh-facts": {"post": op(
        "Ask an agent for fresh facts: its held poll answers at once with refresh_facts", {
            "202": ok(ref("Agent"), "Asked; facts_updated_at moves when the agent has reported."),
            **errors(401, 404)},
        tags=["operators"], security=ADMIN_AUTH, parameters=[path_id("agent_id", "The agent's id.")])},
    "/api/v1/admin/commands": {
        "post": op("Queue a command for one agent", {
            "201": ok(ref("CommandState"), "Queued."),
            "200": ok(ref("CommandState"), "The command this idempotency key already names."),
            **errors(400, 401, 404, 409)},
            tags=["operators"], security=ADMIN_AUTH, request=body(ref("CommandRequest"))),
        "get": op("List commands, newest first", {
            "200": ok(ref("CommandPage"), "One page."), **errors(400, 401)},
            tags=["operators"], security=ADMIN_AUTH, parameters=[
                query_str("agent_id", "Only this agent's commands.", UUID),
                query_str("status", "Only commands in this status.",
                          SCHEMAS["CommandState"]["properties"]["status"]),
                query_int("limit", 1, 1000, 100, "Page size."), BEFORE,
            ]),
    },
    "/api/v1/admin/commands/{command_id}": {"get": op(
        "One command", {"200": ok(ref("CommandState"), "The command."), **errors(401, 404)},
        tags=["operators"], security=ADMIN_AUTH, parameters=[COMMAND_PATH])},
    "/api/v1/admin/commands/{command_id}/output": {"get": op(
        "Read (and follow) a command's output", {
            "200": ok(ref("OutputPage"), "The stream from `offset`; with `wait`, held until it grows or the "
                                         "command ends."),
            **errors(400, 401, 403, 404)},
        tags=["operators"], security=ADMIN_AUTH, parameters=[
            COMMAND_PATH,
            query_int("offset", 0, 999999999, 0, "Where to start, in bytes of the stream."),
            query_int("wait", 0, 300, 0, "Seconds to hold the request while nothing new has arrived: at most "
                      "the server's FLEETLINE_MAX_WAIT_S (60 unless set)."),
        ])},
    "/api/v1/admin/commands/{command_id}/cancel": {"post": op(
        "Cancel a command that has not ended", {
            "200": ok(ref("CommandState"), "Cancelled (it was not delivered yet)."),
            "202": ok(ref("CommandState"), "Delivered: a sent one is cancelled (its ack says so); a running "
                                           "one's agent is told to stop it, and it ends when the agent reports."),
            **errors(401, 404, 409)},
        tags=["operators"], security=ADMIN_AUTH, parameters=[COMMAND_PATH])},
    "/api/v1/admin/jobs": {
        "post": op("Run a command on many agents: one command per target, with a rollout", {
            "201": ok(ref("Job"), "Created, with one command per target."),
            "200": ok({"anyOf": [ref("Job"), ref("DryRun")]},
                      "A dry run's target count (nothing created), or the job this idempotency "
                      "key already names (same request)."),
            **errors(400, 401, 409)},
            tags=["jobs"], security=ADMIN_AUTH, request=body(ref("JobRequest"))),
        "get": op("List jobs, newest first", {
            "200": ok(ref("JobPage"), "One page."), **errors(400, 401)},
            tags=["jobs"], security=ADMIN_AUTH, parameters=[
                query_str("status", "Only jobs in this status.", SCHEMAS["Job"]["properties"]["status"]),
                query_int("limit", 1, 1000, 100, "Page size."), BEFORE,
            ]),
    },
    "/api/v1/admin/jobs/{job_id}": {"get": op(
        "One job, with counts by target status", {"200": ok(ref("Job"), "The job."), **errors(401, 404)},
        tags=["jobs"], security=ADMIN_AUTH, parameters=[JOB_PATH])},
    "/api/v1/admin/jobs/{job_id}/targets": {"get": op(
        "A job's targets and their commands", {
            "200": ok(ref("TargetPage"), "One page."), **errors(400, 401, 404)},
        tags=["jobs"], security=ADMIN_AUTH, parameters=[
            JOB_PATH,
            query_str("status", "Only targets in this status.", SCHEMAS["Target"]["properties"]["status"]),
            query_int("limit", 1, 1000, 100, "Page size."), BEFORE,
        ])},
    "/api/v1/admin/jobs/{job_id}/cancel": {"post": op(
        "Cancel a running job: it and its commands not running yet at once; each running one's "
        "agent is told to stop it", {
            "200": ok(ref("Job"), "Cancelled."), **errors(401, 404, 409)},
        tags=["jobs"], security=ADMIN_AUTH, parameters=[JOB_PATH])},
    "/api/v1/admin/jobs/{job_id}/approve": {"post": op(
        "Approve a job awaiting approval (an operator other than its creator, whose scope covers every "
        "target); with enough approvals its commands are signed and it starts", {
            "200": ok(ref("Job"), "Approved (and started, once approved enough)."), **errors(400, 401, 403, 404, 409)},
        tags=["jobs"], security=ADMIN_AUTH, parameters=[JOB_PATH], request=body(ref("Decision")))},
    "/api/v1/admin/jobs/{job_id}/deny": {"post": op(
        "Deny a job awaiting approval: it ends denied, nothing of it signed", {
            "200": ok(ref("Job"), "Denied."), **errors(400, 401, 403, 404, 409)},
        tags=["jobs"], security=ADMIN_AUTH, parameters=[JOB_PATH], request=body(ref("Decision")))},
    "/api/v1/admin/agent-releases": {
        "post": op("Upload an agent release (admin): the .pyz make agent-release writes", {
            "201": ok(ref("Release"), "Stored; its SHA-256 and size computed here."), **errors(400, 401, 409)},
            tags=["releases"], security=ADMIN_AUTH, parameters=[
                {**query_str("version", "The version the release reports, e.g. 1.4.0."), "required": True},
                {**query_str("platform", "linux-x86_64 or linux-aarch64."), "required": True}],
            request={"required": True, "content": {"application/octet-stream": {
                "schema": {"type": "string", "format": "binary"}}},
                "description": "At most FLEETLINE_MAX_RELEASE_BYTES (100 MiB)."}),
        "get": op("Every release, newest first", {"200": ok(ref("ReleaseList"), "The releases."), **errors(401)},
                  tags=["releases"], security=ADMIN_AUTH),
    },
    "/api/v1/admin/agent-releases/{version}/{platform}": {"delete": op(
        "Delete a release (admin); upgrades signed for it fail on their agents", {
            "204": ok(None, "Deleted."), **errors(401, 404)},
        tags=["releases"], security=ADMIN_AUTH, parameters=RELEASE_PATH)},
    "/api/v1/agent-releases/{version}/{platform}": {"get": op(
        "Download a release: no authentication (its digest is in the signed upgrade, or printed with the "
        "install line); one byte range honoured", {
            "200": {"description": "The release.", "headers": {**REQUEST_ID, **RATE_HEADERS},
                    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
            "206": {"description": "The range asked for (Content-Range says which).", "headers": REQUEST_ID,
                    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
            "416": ok(ref("Error"), "`range_not_satisfiable`: the range starts past the end.",
                      {"Content-Range": {"schema": {"type": "string"}, "description": "bytes */size"}}),
            **errors(404, 429)},
        tags=["releases"], security=NO_AUTH, parameters=[
            *RELEASE_PATH, {"name": "Range", "in": "header", "required": False,
                            "schema": {"type": "string"}, "description": "bytes=first-last"}])},
    "/api/v1/admin/webhooks": {
        "post": op("Register a webhook endpoint (admin); the signing secret is shown only here", {
            "201": ok(ref("Webhook"), "Registered, with its secret."), **errors(400, 401)},
            tags=["webhooks"], security=ADMIN_AUTH, request=body(ref("WebhookRequest"))),
        "get": op("Every webhook endpoint (admin), never a secret", {
            "200": ok(ref("WebhookList"), "The endpoints."), **errors(401)}, tags=["webhooks"], security=ADMIN_AUTH),
    },
    "/api/v1/admin/webhooks/{webhook_id}": {
        "get": op("One webhook endpoint", {"200": ok(ref("Webhook"), "The endpoint."), **errors(401, 404)},
                  tags=["webhooks"], security=ADMIN_AUTH, parameters=[WEBHOOK_PATH]),
        "patch": op("Change an endpoint: url, events, enabled, description, rotate_secret", {
            "200": ok(ref("Webhook"), "Changed (with the new secret when rotated)."), **errors(400, 401, 404)},
            tags=["webhooks"], security=ADMIN_AUTH, parameters=[WEBHOOK_PATH], request=body(ref("WebhookChange"))),
        "delete": op("Delete an endpoint and its deliveries", {"204": ok(None, "Deleted."), **errors(401, 404)},
                     tags=["webhooks"], security=ADMIN_AUTH, parameters=[WEBHOOK_PATH]),
    },
    "/api/v1/admin/webhooks/{webhook_id}/deliveries": {"get": op(
        "An endpoint's deliveries, newest first: attempts, status code, latency, error, next attempt", {
            "200": ok(ref("WebhookDeliveryPage"), "One page."), **errors(400, 401, 404)},
        tags=["webhooks"], security=ADMIN_AUTH, parameters=[
            WEBHOOK_PATH, query_str("status", "pending, delivered or failed.",
                                    {"type": "string", "enum": ["pending", "delivered", "failed"]}),
            query_int("limit", 1, 1000, 100, "Page size."), BEFORE])},
    "/api/v1/admin/webhooks/{webhook_id}/deliveries/{delivery_id}/retry": {"post": op(
        "Send a delivery again now (the same webhook-id)", {
            "202": ok(obj(["id", "status"], {"id": UUID, "status": {"enum": ["pending"]}}), "Due now."),
            **errors(401, 404, 409)},
        tags=["webhooks"], security=ADMIN_AUTH, parameters=[WEBHOOK_PATH, path_id("delivery_id", "The delivery's id.")])},
    "/api/v1/admin/schedules": {
        "post": op("Create a schedule: a job started at each tick, with its creator's authority", {
            "201": ok(ref("Schedule"), "Created (awaiting approval when the policy catches its command)."),
            **errors(400, 401, 409)},
            tags=["schedules"], security=ADMIN_AUTH, request=body(ref("ScheduleRequest"))),
        "get": op("List schedules by name", {"200": ok(ref("SchedulePage"), "One page."), **errors(400, 401)},
                  tags=["schedules"], security=ADMIN_AUTH, parameters=[
                      query_int("limit", 1, 1000, 100, "Page size."),
                      query_str("after", "A `next` from the previous page.", {"type": "string", "maxLength": 128}),
                  ]),
    },
    "/api/v1/admin/schedules/{schedule_id}": {
        "get": op("One schedule", {"200": ok(ref("Schedule"), "The schedule."), **errors(401, 404)},
                  tags=["schedules"], security=ADMIN_AUTH, parameters=[SCHEDULE_PATH]),
        "patch": op("Change any creation field; enabled false pauses, true resumes", {
            "200": ok(ref("Schedule"), "Changed (awaiting approval again when an approved schedule's selector, "
                                       "command or rollout changed and the policy catches it)."),
            **errors(400, 401, 404, 409)},
            tags=["schedules"], security=ADMIN_AUTH, parameters=[SCHEDULE_PATH],
            request=body({"type": "object", "description": "Any fields of ScheduleRequest."})),
        "delete": op("Delete a schedule; the jobs it started run on", {
            "204": ok(None, "Deleted."), **errors(401, 404)},
            tags=["schedules"], security=ADMIN_AUTH, parameters=[SCHEDULE_PATH]),
    },
    "/api/v1/admin/schedules/{schedule_id}/runs": {"get": op(
        "A schedule's runs, newest first", {"200": ok(ref("RunPage"), "One page."), **errors(400, 401, 404)},
        tags=["schedules"], security=ADMIN_AUTH, parameters=[
            SCHEDULE_PATH, query_int("limit", 1, 1000, 100, "Page size."), BEFORE])},
    "/api/v1/admin/schedules/{schedule_id}/run-now": {"post": op(
        "Start a job now, as a tick would", {
            "201": ok(ref("Job"), "Started."), **errors(400, 401, 404, 409)},
        tags=["schedules"], security=ADMIN_AUTH, parameters=[SCHEDULE_PATH])},
    "/api/v1/admin/schedules/{schedule_id}/approve": {"post": op(
        "Approve a schedule awaiting approval (an operator other than its creator); its runs then need none", {
            "200": ok(ref("Schedule"), "Approved (and active, once approved enough)."),
            **errors(400, 401, 403, 404, 409)},
        tags=["schedules"], security=ADMIN_AUTH, parameters=[SCHEDULE_PATH], request=body(ref("Decision")))},
    "/api/v1/admin/schedules/{schedule_id}/deny": {"post": op(
        "Deny a schedule awaiting approval: it ends denied and starts nothing", {
            "200": ok(ref("Schedule"), "Denied."), **errors(400, 401, 403, 404, 409)},
        tags=["schedules"], security=ADMIN_AUTH, parameters=[SCHEDULE_PATH], request=body(ref("Decision")))},
    "/api/v1/admin/commands/{command_id}/approve": {"post": op(
        "Approve a command awaiting approval (an operator other than its creator)", {
            "200": ok(ref("CommandState"), "Approved (and pending, once approved enough)."),
            **errors(400, 401, 403, 404, 409)},
        tags=["operators"], security=ADMIN_AUTH, parameters=[COMMAND_PATH], request=body(ref("Decision")))},
    "/api/v1/admin/commands/{command_id}/deny": {"post": op(
        "Deny a command awaiting approval", {
            "200": ok(ref("CommandState"), "Denied."), **errors(400, 401, 403, 404, 409)},
        tags=["operators"], security=ADMIN_AUTH, parameters=[COMMAND_PATH], request=body(ref("Decision")))},
    "/api/v1/admin/approval-policy": {
        "get": op("The approval policy (admin)", {"200": ok(ref("ApprovalPolicy"), "The policy."),
                                                  **errors(401, 403)},
                  tags=["operators"], security=ADMIN_AUTH),
        "put": op("Set the approval policy (admin): requests matching any rule need approval", {
            "200": ok(ref("ApprovalPolicy"), "Set."), **errors(400, 401, 403)},
            tags=["operators"], security=ADMIN_AUTH, request=body(ref("ApprovalPolicyRequest"))),
    },
    "/api/v1/admin/whoami": {"get": op(
        "The operator this credential acts as", {"200": ok(ref("Operator"), "The operator."), **errors(401)},
        tags=["operators"], security=ADMIN_AUTH)},
    "/api/v1/admin/operators": {
        "post": op("Create an operator (admin)", {
            "201": ok(ref("Operator"), "Created."), **errors(400, 401, 403, 409)},
            tags=["operators"], security=ADMIN_AUTH, request=body(ref("OperatorRequest"))),
        "get": op("List operators (admin)", {
            "200": ok(obj(["operators"], {"operators": {"type": "array", "items": ref("Operator")}}),
                      "Every operator, by name."), **errors(401, 403)},
            tags=["operators"], security=ADMIN_AUTH),
    },
    "/api/v1/admin/operators/{operator_id}": {
        "get": op("One operator (admin)", {"200": ok(ref("Operator"), "The operator."), **errors(401, 403, 404)},
                  tags=["operators"], security=ADMIN_AUTH, parameters=[OPERATOR_PATH]),
        "patch": op("Change an operator (admin): role, scope, email, password, disabled (disabling "
                    "ends its sessions and tokens at once)", {
            "200": ok(ref("Operator"), "Changed."), **errors(400, 401, 403, 404, 409)},
            tags=["operators"], security=ADMIN_AUTH, parameters=[OPERATOR_PATH],
            request=body(ref("OperatorChange"))),
    },
    "/api/v1/admin/operators/{operator_id}/tokens": {
        "post": op("Issue an operator token (admin, or the operator itself)", {
            "201": ok(ref("NewOperatorToken"), "Issued; the secret is shown only here."),
            **errors(400, 401, 403, 404, 409)},
            tags=["operators"], security=ADMIN_AUTH, parameters=[OPERATOR_PATH],
            request=body(ref("OperatorTokenRequest"))),
        "get": op("An operator's tokens, without secrets (admin, or the operator itself)", {
            "200": ok(obj(["tokens"], {"tokens": {"type": "array", "items": ref("OperatorToken")}}), "Its tokens."),
            **errors(401, 403, 404)},
            tags=["operators"], security=ADMIN_AUTH, parameters=[OPERATOR_PATH]),
    },
    "/api/v1/admin/operator-tokens/{token_id}": {"delete": op(
        "Revoke an operator token (admin, or its operator)", {"204": ok(None, "Revoked."), **errors(401, 403, 404)},
        tags=["operators"], security=ADMIN_AUTH, parameters=[path_id("token_id", "The token's id.")])},
    "/api/v1/admin/audit": {"get": op(
        "The audit trail, newest first (admin)", {
            "200": ok(obj(["events", "next"], {"events": {"type": "array", "items": ref("AuditEvent")},
                                               "next": {"type": ["string", "null"]}}), "One page."),
            **errors(400, 401, 403)},
        tags=["operators"], security=ADMIN_AUTH, parameters=[
            query_str("actor", "An operator's (or agent's) id or name.", {"type": "string", "maxLength": 255}),
            query_str("action", "A dotted action, e.g. command.create.", {"type": "string", "maxLength": 64}),
            query_str("target_id", "The id of what was acted on.", {"type": "string", "maxLength": 255}),
            query_str("since", "Events at or after this instant.", TIME),
            query_int("limit", 1, 1000, 100, "Page size."), BEFORE,
        ])},
    "/api/v1/operators/sign-in": {"post": op(
        "Open a console session (an extension: what the console signs operators in with)", {
            "201": ok(ref("Session"), "Signed in."), **errors(400, 401, 429)},
        tags=["operators"], security=NO_AUTH, request=body(ref("SignIn")))},
    "/api/v1/operators/sign-in/oidc-nonce": {"post": op(
        "A nonce for the console's next single sign-on request (an extension): an ID token signs "
        "in only with a nonce issued here, once", {
            "201": ok(obj(["nonce", "expires_at"], {"nonce": {"type": "string"}, "expires_at": TIME}),
                      "Issued; good for one sign-in within 10 minutes."),
            **errors(404, 429)},
        tags=["operators"], security=NO_AUTH)},
    "/api/v1/admin/sign-out": {"post": op(
        "End the console session presented (an extension)", {"204": ok(None, "Signed out."), **errors(401)},
        tags=["operators"], security=ADMIN_AUTH)},
    "/openapi.json": {"get": op("This document", {"200": ok({"type": "object"}, "OpenAPI 3.1.")},
                                tags=["health"], security=NO_AUTH)},
    "/healthz": {"get": op("The process is up", {"200": ok(ref("Health"), "Up.")},
                           tags=["health"], security=NO_AUTH)},
    "/readyz": {"get": op("Ready to serve (the gateway: every service has a ready replica)", {
        "200": ok(ref("Health"), "Ready."), "503": ok(ref("Error"), "`not_ready`.")},
        tags=["health"], security=NO_AUTH)},
    "/metrics": {"get": {"summary": "Prometheus metrics", "tags": ["health"], "security": NO_AUTH,
                         "responses": {"200": {"description": "Prometheus text format.",
                                               "headers": REQUEST_ID,
                                               "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Fleetline",
        "version": VERSION,
        "description": (
            "The control plane for fleets of machine agents. Agents and operators talk only to "
            "the gateway. Every error is JSON: {\"error\", \"detail\", \"field\"?}. "
            "Unknown request fields are ignored; bad input is 400 invalid_request and changes "
            "nothing. See docs/api.md in the repository for the rules in prose."),
    },
    "tags": [{"name": "agents", "description": "Called by agents."},
             {"name": "operators", "description": "Called by operators with the admin token."},
             {"name": "jobs", "description": "One command for many agents (operators)."},
             {"name": "schedules", "description": "Jobs that recur (operators)."},
             {"name": "health", "description": "Health, readiness, metrics and this document."}],
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {
            "agentToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                           "description": "An access token from register or renew; every agent "
                                          "request also carries X-Machine-ID."},
            "adminToken": {"type": "http", "scheme": "bearer",
                           "description": "An operator token (`flop_...`), a console session "
                                          "(`fls_...`), or the bootstrap token (FLEETLINE_ADMIN_TOKEN, "
                                          "the built-in admin `bootstrap`)."},
        },
    },
}
