"""Dependencies injected into the routers, as ``Annotated`` aliases.

``SettingsDep`` and ``StoreDep`` come from ``app.state`` (set by :func:`service.api.app.create_app`);
``AuthDep`` guards mutating routes with a bearer token when ``RNNHPO_API_TOKEN`` is set.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi import Path as _Path
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    from service.store import Store


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> "Store":
    return request.app.state.store


def get_runner(request: Request) -> Any:
    """The in-process runner, or None when runners are separate processes."""
    return getattr(request.app.state, "runner", None)


_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer $RNNHPO_API_TOKEN` "
                                                   "(required on mutating routes when a token is configured)")


def require_token(
    settings: Annotated[Settings, Depends(get_settings)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    expected = settings.token
    if expected is None:
        return
    given = credentials.credentials if credentials is not None else ""
    if credentials is None or credentials.scheme.lower() != "bearer" or not hmac.compare_digest(
            given.encode("utf-8", "surrogateescape"), expected.encode("utf-8")):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED,
                            detail="missing or invalid bearer token",
                            headers={"WWW-Authenticate": "Bearer"})


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated["Store", Depends(get_store)]
RunnerDep = Annotated[Any, Depends(get_runner)]
AuthDep = Annotated[None, Depends(require_token)]

__all__ = ["SettingsDep", "StoreDep", "RunnerDep", "AuthDep", "ExpIdPath", "TrialIdPath", "get_settings",
           "get_store", "require_token", "EXP_ID_PATTERN", "NO_NUL_PATTERN"]

# -- path and query parameter types shared by the routers ---------------------------------
#: Experiment ids are uuid4 hex strings; anything else cannot exist (and never reaches SQL).
EXP_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
ExpIdPath = Annotated[str, _Path(pattern=EXP_ID_PATTERN, description="experiment id",
                                 examples=["3f2a9c1e0b7d4c5895b0c2d7e1f4a6b8"])]
TrialIdPath = Annotated[int, _Path(ge=1, le=2**31 - 1, description="trial id", examples=[17])]
#: Free text that goes into SQL as a bound value: no NUL bytes (PostgreSQL rejects them).
NO_NUL_PATTERN = r"^[^\x00]*$"


def experiment_or_404(store, exp_id: str):
    """The experiment's view, or a 404 naming it."""
    view = store.get_experiment(exp_id)
    if view is None:
        raise HTTPException(404, detail=f"experiment {exp_id!r} not found")
    return view
