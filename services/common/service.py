"""Each service's app carries one typed state object (`app.state.service`: auth's
state.Auth, dispatch's state.Dispatch); this is what the common code reaches of it."""

from __future__ import annotations

from typing import Protocol, cast

from starlette.requests import Request

from fleetline.settings import Settings
from services.common.db import Db


class Service(Protocol):
    @property
    def settings(self) -> Settings: ...

    @property
    def db(self) -> Db: ...


def of(request: Request) -> Service:
    return cast(Service, request.app.state.service)
