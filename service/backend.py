"""One interface behind every CLI verb: :class:`Backend`, with a local (database) and a remote
(HTTP API) implementation. Callers never branch on where the data lives (as MLflow's tracking
stores: one interface, local and REST implementations).

Both return the API's own models (:class:`~service.api.schemas.ExperimentOut`, ...) and raise
the same errors, each a one-line message: :class:`InvalidInput` (exit 2), :class:`Missing`,
:class:`Unavailable` and :class:`Refused` (exit 1).
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

import numpy as np

from service.api.schemas import ExperimentOut, ExperimentPage, SubmitResponse, TrialPage
from service.reports.compare import VariantSummary
from service.settings import Settings


class BackendError(Exception):
    """A problem worth one line to the user; ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class InvalidInput(BackendError):
    """Bad input (a spec, an option value): every problem, one per line."""

    exit_code = 2

    def __init__(self, lines: list[str]):
        self.lines = lines
        super().__init__("; ".join(lines))


class Missing(BackendError):
    """No experiment or trial with that id."""


class Unavailable(BackendError):
    """The server or the database cannot be reached."""


class Refused(BackendError):
    """The server refused the request: no or a wrong API token."""


class Backend(Protocol):
    """What every CLI verb needs, wherever the data lives."""

    label: str

    def submit(self, raw: bytes, content_type: str) -> SubmitResponse: ...
    def get(self, exp_id: str) -> ExperimentOut: ...
    def list(self, *, status: str | None = None, limit: int = 50) -> ExperimentPage: ...
    def cancel(self, exp_id: str) -> ExperimentOut: ...
    def compare(self, exp_ids: list[str], *, by: Literal["variant", "config"] = "variant",
                reference: str | None = None) -> list[VariantSummary]: ...
    def trials(self, exp_id: str, *, sort: str = "number", descending: bool = False,
               status: str | None = None, variant: str | None = None, limit: int = 100) -> TrialPage: ...
    def trace(self, trial_id: int, *, metrics: list[str] | None = None, every: int = 1
              ) -> dict[str, np.ndarray]: ...


def open_backend(settings: Settings, server: str | None = None) -> Backend:
    """The remote backend for ``server``, else the local one on ``settings.database_url``."""
    return RemoteBackend(server, token=settings.token) if server else LocalBackend(settings)


class LocalBackend:
    """The database directly (the store and the reports layer)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.label = f"database {settings.database_label()}"
        self._store = None

    @property
    def store(self):
        if self._store is None:
            from service.store import Store

            try:
                self.settings.ensure_dirs()
                self._store = Store(self.settings.database_url)
            except Exception as exc:  # noqa: BLE001 - a bad URL or an unreachable server
                raise Unavailable(f"cannot open {self.label}: {_first_line(exc)}") from None
        return self._store

    def _view(self, exp_id: str):
        view = self.store.get_experiment(exp_id)
        if view is None:
            raise Missing(f"no experiment {exp_id} in {self.label}")
        return view

    def submit(self, raw: bytes, content_type: str) -> SubmitResponse:
        from service.api.schemas import links_for
        from service.submission import store_queued, validate
        from service.validation import SpecError, format_errors

        try:
            spec, n_trials = validate(self.settings, raw, content_type)
        except SpecError as exc:
            raise InvalidInput(format_errors(exc.errors)) from None
        sub = store_queued(self.store, spec, n_trials)
        return SubmitResponse(id=sub.id, status="queued", name=sub.name, trials_planned=sub.n_trials,
                              links=links_for(sub.id))

    def get(self, exp_id: str) -> ExperimentOut:
        from service.api.schemas import experiment_out

        return experiment_out(self._view(exp_id), with_spec=True)

    def list(self, *, status: str | None = None, limit: int = 50) -> ExperimentPage:
        from service.api.schemas import experiment_out

        try:
            views, total = self.store.list_experiments(status=status, limit=limit)
        except ValueError as exc:
            raise InvalidInput([f"--status: {exc}"]) from None
        return ExperimentPage(items=[experiment_out(v) for v in views], total=total, limit=limit, offset=0)

    def cancel(self, exp_id: str) -> ExperimentOut:
        from service.api.schemas import experiment_out
        from service.store import NotFound

        try:
            return experiment_out(self.store.request_cancel(exp_id))
        except NotFound:
            raise Missing(f"no experiment {exp_id} in {self.label}") from None

    def compare(self, exp_ids: list[str], *, by: Literal["variant", "config"] = "variant",
                reference: str | None = None) -> list[VariantSummary]:
        from service.reports.compare import compare
        from service.store import NotFound

        try:
            return compare(self.store, exp_ids, by_config=by == "config", reference=reference)
        except NotFound as exc:
            raise Missing(f"{exc} in {self.label}") from None

    def trials(self, exp_id: str, *, sort: str = "number", descending: bool = False,
               status: str | None = None, variant: str | None = None, limit: int = 100) -> TrialPage:
        self._view(exp_id)
        try:
            views, total = self.store.list_trials(exp_id, status=status, variant=variant, sort=sort,
                                                  descending=descending, limit=limit)
        except ValueError as exc:
            raise InvalidInput([f"--sort/--status: {exc}"]) from None
        return TrialPage(items=[v.model_dump(mode="json") for v in views], total=total, limit=limit,
                         offset=0)

    def trace(self, trial_id: int, *, metrics: list[str] | None = None, every: int = 1
              ) -> dict[str, np.ndarray]:
        if self.store.get_trial(trial_id) is None:
            raise Missing(f"no trial {trial_id} in {self.label}")
        try:
            return self.store.get_trace(trial_id, metrics=metrics, every=every)
        except ValueError as exc:
            raise InvalidInput([f"--metrics: {exc}"]) from None


class RemoteBackend:
    """An rnnhpo API server over HTTP (the typed :class:`~service.client.Client`)."""

    def __init__(self, server: str, *, token: str | None = None):
        from service.client import Client

        self.label = f"server {server}"
        self.client = Client(server, token=token)

    def _call(self, what: str, fn, *args, **kw) -> Any:
        import httpx

        from service.client import ApiError, format_detail

        try:
            return fn(*args, **kw)
        except ApiError as exc:
            if exc.status == 404:
                raise Missing(f"{what}: {format_detail(exc.detail)} ({self.label})") from None
            if exc.status == 422 and isinstance(exc.detail, list):
                from service.validation import format_errors

                raise InvalidInput(format_errors(exc.detail)) from None
            if exc.status in (401, 403):
                raise Refused(f"{what}: {format_detail(exc.detail)} (HTTP {exc.status}; set "
                              "RNNHPO_API_TOKEN to the server's token)") from None
            if exc.status in (400, 413, 415, 422):
                raise InvalidInput([f"{what}: {format_detail(exc.detail)} (HTTP {exc.status})"]) from None
            raise Unavailable(f"{what}: HTTP {exc.status} from {self.label}: "
                              f"{_first_line(format_detail(exc.detail))}") from None
        except httpx.HTTPError as exc:
            raise Unavailable(f"cannot reach {self.label}: {_first_line(exc) or type(exc).__name__}") from None

    def submit(self, raw: bytes, content_type: str) -> SubmitResponse:
        fmt = "json" if content_type.endswith("json") else "yaml"
        return self._call("submit", self.client.submit, raw.decode("utf-8", "replace"), fmt=fmt)

    def get(self, exp_id: str) -> ExperimentOut:
        return self._call(f"experiment {exp_id}", self.client.get, exp_id)

    def list(self, *, status: str | None = None, limit: int = 50) -> ExperimentPage:
        return self._call("experiments", self.client.list, status=status, limit=limit)

    def cancel(self, exp_id: str) -> ExperimentOut:
        return self._call(f"cancel {exp_id}", self.client.cancel, exp_id)

    def compare(self, exp_ids: list[str], *, by: Literal["variant", "config"] = "variant",
                reference: str | None = None) -> list[VariantSummary]:
        rows = self._call("compare", self.client.compare, exp_ids, by=by, reference=reference)
        return [VariantSummary.model_validate(r) for r in rows]

    def trials(self, exp_id: str, *, sort: str = "number", descending: bool = False,
               status: str | None = None, variant: str | None = None, limit: int = 100) -> TrialPage:
        return self._call(f"trials of {exp_id}", self.client.trials_page, exp_id, sort=sort,
                          descending=descending, status=status, variant=variant, limit=limit)

    def trace(self, trial_id: int, *, metrics: list[str] | None = None, every: int = 1
              ) -> dict[str, np.ndarray]:
        return self._call(f"trial {trial_id}", self.client.trace, trial_id, metrics=metrics, every=every)


def _first_line(exc: Any) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
