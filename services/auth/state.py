"""What auth's handlers reach, typed: one object per app (`app.state.service`), built by
create_app(), instead of loose attributes on Starlette's `app.state`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from starlette.requests import Request

from fleetline.settings import Settings
from services.auth.keys import Signer
from services.auth.oidc import OidcVerifier
from services.common.db import Db
from services.common.operators import OperatorAuth
from services.common.ratelimit import RateLimit


@dataclass(eq=False)
class Auth:
    settings: Settings
    db: Db
    signer: Signer  # access tokens
    registration_limit: RateLimit     # successful registrations, per address
    registration_failures: RateLimit  # refused registrations, per address
    renew_limit: RateLimit            # renewals, per agent
    renew_failures: RateLimit         # refused renewals, per address
    root_key_sha256: str | None       # the command-signing root's fingerprint, for tokens' answers
    operator_auth: OperatorAuth
    sign_in_limit: RateLimit          # failed console sign-ins, per name and per address
    oidc_nonce_limit: RateLimit       # single sign-on nonces issued, per address
    oidc: OidcVerifier | None         # single sign-on, when configured


def of(request: Request) -> Auth:
    return cast(Auth, request.app.state.service)
