"""Settings from FLEETLINE_* environment variables, validated once at start-up.

A bad value stops the process with one line naming the variable, never a traceback
deep inside a request. Any variable may instead be given as `NAME_FILE`, a path whose
content is the value (compose and Kubernetes secrets), so secrets need not sit in the
environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping

from limits import parse as parse_rate_limit


class SettingsError(ValueError):
    """A FLEETLINE_* variable holds a value the services cannot use."""


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError("must be a positive number")
    return value


def _max_wait(raw: str) -> int:
    value = int(raw)
    if not 1 <= value <= 300:
        raise ValueError("must be 1 to 300 seconds")
    return value


def _rate_limit(raw: str) -> str:
    parse_rate_limit(raw)
    return raw


def _storage_url(raw: str) -> str:
    if not raw.startswith(("memory://", "redis://", "rediss://")):
        raise ValueError("must be memory:// or redis://host:port/db")
    return raw


def _url_list(raw: str) -> tuple[str, ...]:
    urls = tuple(u.strip().rstrip("/") for u in raw.split(",") if u.strip())
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"{url!r} is not an http(s) URL")
    return urls


def _url(raw: str) -> str:
    urls = _url_list(raw)
    if len(urls) != 1:
        raise ValueError("must be one http(s) URL")
    return urls[0]


def _session_length(raw: str) -> int:
    value = _positive_int(raw)
    if value > 43200:
        raise ValueError("must be at most 43200 (12 hours)")
    return value


def _str_list(raw: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in raw.split(",") if s.strip())


def _flag(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be 1 or 0 (true or false)")


def _log_level(raw: str) -> str:
    level = raw.upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
    return level


def _token_auth_method(raw: str) -> str:
    if raw not in ("client_secret_basic", "client_secret_post"):
        raise ValueError("must be client_secret_basic or client_secret_post")
    return raw


def _read_file(name: str, path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read().strip()
    except OSError as exc:
        raise SettingsError(f"{name}={path!r} cannot be read: {exc.strerror}") from None


_POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg", "postgresql+asyncpg")


def postgres_url(url: str, scheme: str = "postgresql") -> str:
    """One database URL in the spelling a driver wants: asyncpg (and `databases`) take
    `postgresql://`, yoyo's psycopg 3 driver `postgresql+psycopg://`."""
    given, sep, rest = url.partition("://")
    return f"{scheme}://{rest}" if sep and given in _POSTGRES_SCHEMES else url


def _env(name: str, parse: Callable[[str], Any] = str, default: Any = None) -> Any:
    return field(default=default, metadata={"env": name, "parse": parse})


@dataclass(frozen=True)
class Settings:
    database_url: str | None = _env("FLEETLINE_DATABASE_URL")
    db_pool_max: int = _env("FLEETLINE_DB_POOL_MAX", _positive_int, 10)
    # `fleetline migrate`: the password of the services' least-privilege login role
    # (fleetline_app), made or updated after the migrations.
    service_database_password: str | None = _env("FLEETLINE_SERVICE_DATABASE_PASSWORD")
    admin_token: str | None = _env("FLEETLINE_ADMIN_TOKEN")
    jwt_private_key_file: str | None = _env("FLEETLINE_JWT_PRIVATE_KEY_FILE")
    jwt_public_key_file: str | None = _env("FLEETLINE_JWT_PUBLIC_KEY_FILE")
    jwks_url: str | None = _env("FLEETLINE_JWKS_URL")
    jwt_issuer: str = _env("FLEETLINE_JWT_ISSUER", str, "fleetline-auth")
    jwt_audience: str = _env("FLEETLINE_JWT_AUDIENCE", str, "fleetline")
    access_token_ttl_s: int = _env("FLEETLINE_ACCESS_TOKEN_TTL_S", _positive_int, 900)
    refresh_token_ttl_s: int = _env("FLEETLINE_REFRESH_TOKEN_TTL_S", _positive_int, 7776000)
    checkin_rate_limit: str = _env("FLEETLINE_CHECKIN_RATE_LIMIT", _rate_limit, "60/minute")
    # Registrations per client address: those that succeed (a generous ceiling: a site
    # behind one address enrols at once), and those refused 401 (a guesser: past it, every
    # registration from the address is 429 until the window passes).
    registration_rate_limit: str = _env("FLEETLINE_REGISTRATION_RATE_LIMIT", _rate_limit, "100/second")
    registration_failure_limit: str = _env("FLEETLINE_REGISTRATION_FAILURE_LIMIT", _rate_limit, "10/minute")
    # Renewals per agent (those that succeed), and refused renewals per client address.
    renew_rate_limit: str = _env("FLEETLINE_RENEW_RATE_LIMIT", _rate_limit, "10/minute")
    renew_failure_limit: str = _env("FLEETLINE_RENEW_FAILURE_LIMIT", _rate_limit, "10/minute")
    report_rate_limit: str = _env("FLEETLINE_REPORT_RATE_LIMIT", _rate_limit, "600/minute")
    # Failed console sign-ins, counted per operator name and per client address.
    sign_in_rate_limit: str = _env("FLEETLINE_SIGN_IN_RATE_LIMIT", _rate_limit, "10/minute")
    rate_limit_storage: str = _env("FLEETLINE_RATE_LIMIT_STORAGE", _storage_url, "memory://")
    poll_interval_s: int = _env("FLEETLINE_POLL_INTERVAL_S", _positive_int, 300)
    rapid_poll_interval_s: int = _env("FLEETLINE_RAPID_POLL_INTERVAL_S", _positive_int, 5)
    rapid_window_s: int = _env("FLEETLINE_RAPID_WINDOW_S", _positive_int, 600)
    reaper_interval_s: float = _env("FLEETLINE_REAPER_INTERVAL_S", _positive_float, 5.0)
    # An agent not seen for this long is not `online` (0: three poll intervals and the
    # longest wait).
    offline_after_s: int = _env("FLEETLINE_OFFLINE_AFTER_S", int, 0)
    # Webhooks (docs/api.md, events out): how often each dispatch looks for due deliveries
    # (a kick after each pass that found some), the retry schedule's scale (1: 5 s, 5 min,
    # 30 min, 2 h, 5 h, 10 h, 10 h; tests shrink it), and whether receivers on private,
    # loopback or link-local addresses, or over plain http, are allowed (a lab; never the
    # default: a webhook URL must not reach inside the network).
    webhook_interval_s: float = _env("FLEETLINE_WEBHOOK_INTERVAL_S", _positive_float, 0.5)
    webhook_retry_scale: float = _env("FLEETLINE_WEBHOOK_RETRY_SCALE", _positive_float, 1.0)
    webhook_allow_private: bool = _env("FLEETLINE_WEBHOOK_ALLOW_PRIVATE", _flag, False)
    # How often dispatch's presence sweep looks for agents gone offline or back online.
    presence_sweep_s: float = _env("FLEETLINE_PRESENCE_SWEEP_S", _positive_float, 10.0)
    # How often agents report their facts (told in every poll answer).
    facts_interval_s: int = _env("FLEETLINE_FACTS_INTERVAL_S", _positive_int, 3600)
    # How often each dispatch process looks for due schedules (a tick starts within this of its time).
    schedule_tick_s: float = _env("FLEETLINE_SCHEDULE_TICK_S", _positive_float, 1.0)
    last_seen_flush_s: float = _env("FLEETLINE_LAST_SEEN_FLUSH_S", _positive_float, 5.0)
    # An agent's last_seen_at is written at most once per this many seconds (per replica).
    last_seen_write_s: float = _env("FLEETLINE_LAST_SEEN_WRITE_S", _positive_float, 30.0)
    # The longest `wait` a poll (or an output follower) may ask for; the gateway's upstream
    # timeout follows it. A large fleet polls less often with a longer one.
    max_wait_s: int = _env("FLEETLINE_MAX_WAIT_S", _max_wait, 60)
    # A job of more targets than this answers at once and is made in slices of this many in
    # the background (services/dispatch/materialiser.py).
    job_slice_targets: int = _env("FLEETLINE_JOB_SLICE_TARGETS", _positive_int, 5000)
    # Live output: each command's stored stream is capped; past it, `truncated`.
    max_output_bytes: int = _env("FLEETLINE_MAX_OUTPUT_BYTES", _positive_int, 8 * 1024 * 1024)
    # Retention: finished commands and jobs, and audit events, are pruned past these ages
    # (days; a fraction is allowed). The pruner runs every prune_interval_s.
    retention_days: float = _env("FLEETLINE_RETENTION_DAYS", _positive_float, 30.0)
    audit_retention_days: float = _env("FLEETLINE_AUDIT_RETENTION_DAYS", _positive_float, 365.0)
    prune_interval_s: float = _env("FLEETLINE_PRUNE_INTERVAL_S", _positive_float, 60.0)
    auth_urls: tuple[str, ...] = _env("FLEETLINE_AUTH_URLS", _url_list, ())
    dispatch_urls: tuple[str, ...] = _env("FLEETLINE_DISPATCH_URLS", _url_list, ())
    console_urls: tuple[str, ...] = _env("FLEETLINE_CONSOLE_URLS", _url_list, ())
    # The console: the gateway it calls the admin API through, and how long a sign-in lasts.
    console_api_url: str = _env("FLEETLINE_CONSOLE_API_URL", _url, "http://127.0.0.1:8080")
    console_session_s: int = _env("FLEETLINE_CONSOLE_SESSION_S", _session_length, 43200)
    # Shared by the console and the gateway: with it, the console's calls say which browser
    # they are made for, and the gateway believes it (sign-in limits and audit events name
    # the browser). Without it, every browser is the console's address.
    console_proxy_secret: str | None = _env("FLEETLINE_CONSOLE_PROXY_SECRET")
    max_body_bytes: int = _env("FLEETLINE_MAX_BODY_BYTES", _positive_int, 1048576)
    # An agent release's upload (the one body allowed past max_body_bytes), and downloads
    # of releases per client address (no authentication: a site behind one address
    # upgrades a window of its fleet at once).
    max_release_bytes: int = _env("FLEETLINE_MAX_RELEASE_BYTES", _positive_int, 100 * 1024 * 1024)
    release_download_rate_limit: str = _env("FLEETLINE_RELEASE_DOWNLOAD_RATE_LIMIT", _rate_limit, "600/minute")
    upstream_timeout_s: float = _env("FLEETLINE_UPSTREAM_TIMEOUT_S", _positive_float, 30.0)
    trusted_proxies: tuple[str, ...] = _env(
        "FLEETLINE_TRUSTED_PROXIES", _str_list, ("127.0.0.1",)
    )
    gateway_trusted_proxies: tuple[str, ...] = _env(
        "FLEETLINE_GATEWAY_TRUSTED_PROXIES", _str_list, ()
    )
    # Connections: a service keeps an idle connection open longer than the gateway reuses one,
    # or the gateway sends a request on a connection the service is closing (a 502).
    # Signed commands: dispatch's online signing key (never in the database), the keyset
    # (signed offline by the root key) it starts with, and the root's public half, which
    # verifies uploaded keysets and is offered to agents that pin on first use.
    command_signing_key_file: str | None = _env("FLEETLINE_COMMAND_SIGNING_KEY_FILE")
    command_keyset_file: str | None = _env("FLEETLINE_COMMAND_KEYSET_FILE")
    command_root_public_key: str | None = _env("FLEETLINE_COMMAND_ROOT_PUBLIC_KEY")
    keepalive_s: float = _env("FLEETLINE_KEEPALIVE_S", _positive_float, 75.0)
    upstream_keepalive_s: float = _env("FLEETLINE_UPSTREAM_KEEPALIVE_S", _positive_float, 30.0)
    backlog: int = _env("FLEETLINE_BACKLOG", _positive_int, 4096)
    # Requests one gateway process carries at once (held polls included); unset: as many
    # as its open-file limit allows, two sockets each.
    gateway_max_requests: int | None = _env("FLEETLINE_GATEWAY_MAX_REQUESTS", _positive_int)
    # The edge (the gateway): TLS, and plain HTTP on a non-loopback address only when a TLS
    # proxy stands in front; slow clients cut off, stalled connections capped per address.
    tls_cert_file: str | None = _env("FLEETLINE_TLS_CERT_FILE")
    tls_key_file: str | None = _env("FLEETLINE_TLS_KEY_FILE")
    allow_plaintext: bool = _env("FLEETLINE_ALLOW_PLAINTEXT", _flag, False)
    header_timeout_s: float = _env("FLEETLINE_HEADER_TIMEOUT_S", _positive_float, 10.0)
    body_timeout_s: float = _env("FLEETLINE_BODY_TIMEOUT_S", _positive_float, 10.0)
    max_stalled_per_address: int = _env("FLEETLINE_MAX_STALLED_PER_ADDRESS", _positive_int, 64)
    # Clients of the gateway (the console, the CLI): the CA that signed its certificate
    # [the system trust store].
    ca_file: str | None = _env("FLEETLINE_CA_FILE")
    # Dispatch reads auth's JWKS again this often: a key auth stops publishing stops
    # verifying within one refresh.
    jwks_refresh_s: float = _env("FLEETLINE_JWKS_REFRESH_S", _positive_float, 60.0)
    # OpenID Connect sign-in to the console (all three, or none): the provider, and the
    # console's registration with it. Auth verifies the ID tokens; the console runs the flow.
    oidc_issuer: str | None = _env("FLEETLINE_OIDC_ISSUER", _url)
    oidc_client_id: str | None = _env("FLEETLINE_OIDC_CLIENT_ID")
    oidc_client_secret: str | None = _env("FLEETLINE_OIDC_CLIENT_SECRET")
    # How the console authenticates to the provider's token endpoint (as registered there).
    oidc_token_auth_method: str = _env("FLEETLINE_OIDC_TOKEN_AUTH_METHOD", _token_auth_method, "client_secret_basic")
    # Where browsers reach the console (the gateway's public URL): the provider sends them
    # back to {this}/console/sign-in/oidc/callback, which must be registered with it.
    console_public_url: str | None = _env("FLEETLINE_CONSOLE_PUBLIC_URL", _url)
    log_level: str = _env("FLEETLINE_LOG_LEVEL", _log_level, "INFO")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            name, parse = f.metadata["env"], f.metadata["parse"]
            raw = environ.get(name)
            if not raw and environ.get(name + "_FILE"):
                raw = _read_file(name + "_FILE", environ[name + "_FILE"])
            if raw is None or raw == "":
                continue
            try:
                values[f.name] = parse(raw)
            except ValueError as exc:
                raise SettingsError(f"{name}={raw!r} is not valid: {exc}") from None
        values.update(overrides)
        return cls(**values)

    def require(self, *names: str) -> None:
        """Fail start-up with a clear message when a service lacks a setting it needs."""
        env_of = {f.name: f.metadata["env"] for f in fields(self)}
        missing = [env_of[n] for n in names if not getattr(self, n)]
        if missing:
            raise SettingsError(f"required setting missing: {', '.join(missing)}")

    def offline_after(self) -> int:
        """Seconds without a request after which an agent is not online."""
        return self.offline_after_s or 3 * self.poll_interval_s + self.max_wait_s

    def needed(self, name: str) -> str:
        """A text setting the caller cannot start without (SettingsError naming it when unset)."""
        self.require(name)
        value = getattr(self, name)
        assert isinstance(value, str)
        return value

    def check_keepalive_order(self) -> None:
        """Refuse to start with the gateway keeping upstream connections longer than the
        services do: every such request risks a 502 (measured: 3 in 600 bursts)."""
        if self.upstream_keepalive_s >= self.keepalive_s:
            raise SettingsError(
                f"FLEETLINE_UPSTREAM_KEEPALIVE_S ({self.upstream_keepalive_s:g}) must be shorter than "
                f"FLEETLINE_KEEPALIVE_S ({self.keepalive_s:g})")

    def env_names(self) -> set[str]:
        return {f.metadata["env"] for f in fields(self)}
