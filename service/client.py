"""Typed HTTP client of the rnnhpo API (httpx), plus helpers that render its answers with rich.

>>> c = Client("http://127.0.0.1:8000", token=None)
>>> exp = c.submit(open("examples/iris.yaml").read())          # JSON dict or YAML/JSON text
>>> c.wait(exp.id)                                             # polls until a final status
>>> c.trace(trial_id, metrics=["loss"], max_points=500)["loss"]  # numpy arrays
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import httpx
import numpy as np

from service.api.schemas import ExperimentOut, ExperimentPage, SubmitResponse, TrialPage
from service.db.models import FINAL_EXPERIMENT_STATUSES as FINAL_STATUSES


class ApiError(RuntimeError):
    """A 4xx/5xx answer; ``status`` and ``detail`` as the server sent them."""

    def __init__(self, status: int, detail: Any, url: str = ""):
        self.status, self.detail, self.url = status, detail, url
        super().__init__(f"HTTP {status} from {url}: {format_detail(detail)}")


def format_detail(detail: Any) -> str:
    if isinstance(detail, list):
        parts = []
        for e in detail:
            if isinstance(e, dict):
                loc = ".".join(str(x) for x in e.get("loc", []) if x != "body")
                parts.append(f"{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
            else:
                parts.append(str(e))
        return "; ".join(parts)
    return str(detail)


class Client:
    """One API server. All methods raise :class:`ApiError` on a 4xx/5xx answer."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", *, token: str | None = None,
                 timeout: float = 30.0, transport: httpx.BaseTransport | None = None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout,
                                  transport=transport)
        self.api = "/api/v1"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------------
    def _request(self, method: str, path: str, **kw) -> httpx.Response:
        r = self._http.request(method, path, **kw)
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except (ValueError, AttributeError):
                detail = r.text
            raise ApiError(r.status_code, detail, str(r.url))
        return r

    # -- experiments ------------------------------------------------------------------
    def submit(self, spec: dict | str | Path, *, fmt: Literal["json", "yaml"] | None = None) -> SubmitResponse:
        """Submit a spec: a dict (sent as JSON), YAML/JSON text, or a path to a .yaml/.json file."""
        if isinstance(spec, Path):
            fmt = fmt or ("json" if spec.suffix.lower() == ".json" else "yaml")
            spec = spec.read_text()
        if isinstance(spec, dict):
            r = self._request("POST", f"{self.api}/experiments", json=spec)
        else:
            if fmt is None:
                fmt = "json" if spec.lstrip().startswith("{") else "yaml"
            ctype = "application/json" if fmt == "json" else "application/yaml"
            r = self._request("POST", f"{self.api}/experiments", content=spec.encode(),
                              headers={"content-type": ctype})
        return SubmitResponse.model_validate(r.json())

    def get(self, exp_id: str) -> ExperimentOut:
        return ExperimentOut.model_validate(self._request("GET", f"{self.api}/experiments/{exp_id}").json())

    def list(self, *, status: str | None = None, limit: int = 50, offset: int = 0) -> ExperimentPage:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if status:
            params["status"] = status
        return ExperimentPage.model_validate(self._request("GET", f"{self.api}/experiments", params=params).json())

    def list_experiments(self, *, status: str | None = None, limit: int = 50, offset: int = 0) -> list[dict]:
        """Experiments as dicts shaped like the Store's ExperimentView (``n_trials_done`` ...)."""
        out = []
        for e in self.list(status=status, limit=limit, offset=offset).items:
            d = e.model_dump(mode="json")
            d["n_trials_done"] = e.progress.trials_done
            d["n_trials_total"] = e.progress.trials_total
            d["best"] = e.progress.best
            out.append(d)
        return out

    def cancel(self, exp_id: str) -> ExperimentOut:
        return ExperimentOut.model_validate(
            self._request("POST", f"{self.api}/experiments/{exp_id}/cancel").json())

    def delete(self, exp_id: str) -> None:
        self._request("DELETE", f"{self.api}/experiments/{exp_id}")

    def wait(self, exp_id: str, *, timeout: float | None = None, poll_s: float = 1.0,
             on_update=None) -> ExperimentOut:
        """Poll until the experiment reaches succeeded/failed/cancelled (TimeoutError after timeout)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            exp = self.get(exp_id)
            if on_update is not None:
                on_update(exp)
            if exp.status in FINAL_STATUSES:
                return exp
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"experiment {exp_id} still {exp.status} after {timeout} s")
            time.sleep(poll_s)

    # -- trials -----------------------------------------------------------------------
    def trials(self, exp_id: str, *, status: str | None = None, variant: str | None = None,
               sort: str = "number", descending: bool = False, limit: int = 100, offset: int = 0) -> list[dict]:
        """One page of trials as dicts (the Store's TrialView fields)."""
        return self.trials_page(exp_id, status=status, variant=variant, sort=sort, descending=descending,
                                limit=limit, offset=offset).items

    def trials_page(self, exp_id: str, *, status: str | None = None, variant: str | None = None,
                    sort: str = "number", descending: bool = False, limit: int = 100,
                    offset: int = 0) -> TrialPage:
        params: dict[str, Any] = {"sort": sort, "order": "desc" if descending else "asc",
                                  "limit": limit, "offset": offset}
        if status:
            params["status"] = status
        if variant:
            params["variant"] = variant
        return TrialPage.model_validate(
            self._request("GET", f"{self.api}/experiments/{exp_id}/trials", params=params).json())

    def all_trials(self, exp_id: str, **kw) -> list[dict]:
        out, offset = [], 0
        while True:
            page = self.trials_page(exp_id, limit=1000, offset=offset, **kw)
            out.extend(page.items)
            offset += len(page.items)
            if not page.items or offset >= page.total:
                return out

    def trial(self, trial_id: int) -> dict:
        return self._request("GET", f"{self.api}/trials/{trial_id}").json()

    def trace(self, trial_id: int, *, metrics: Iterable[str] | None = None, every: int = 1,
              max_points: int | None = None) -> dict[str, np.ndarray]:
        """The trace as numpy columns (``step`` included); NaN where the server sent null."""
        params: dict[str, Any] = {"every": every, "format": "json"}
        if metrics:
            params["metrics"] = ",".join(metrics)
        if max_points:
            params["max_points"] = max_points
        d = self._request("GET", f"{self.api}/trials/{trial_id}/trace", params=params).json()
        rows = d["rows"]
        mat = np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=float) \
            if rows else np.zeros((0, len(d["columns"])))
        out = {c: mat[:, i] for i, c in enumerate(d["columns"])}
        if "step" in out and not np.isnan(out["step"]).any():
            out["step"] = out["step"].astype(np.int64)
        return out

    def trace_csv(self, trial_id: int, *, metrics: Iterable[str] | None = None, every: int = 1,
                  max_points: int | None = None) -> str:
        params: dict[str, Any] = {"every": every, "format": "csv"}
        if metrics:
            params["metrics"] = ",".join(metrics)
        if max_points:
            params["max_points"] = max_points
        return self._request("GET", f"{self.api}/trials/{trial_id}/trace", params=params).text

    # -- comparison & plots -----------------------------------------------------------
    def compare(self, exp_ids: str | list[str], *, by: Literal["variant", "config"] = "variant",
                reference: str | None = None) -> list[dict]:
        """Rows of the comparison (the Store's VariantSummary fields), one per (experiment, variant)
        or, with ``by="config"``, per (experiment, variant, configuration)."""
        return self.compare_table(exp_ids, fmt="json", by=by, reference=reference)["rows"]

    def compare_table(self, exp_ids: str | list[str], *, fmt: Literal["json", "markdown", "csv"] = "json",
                      by: Literal["variant", "config"] = "variant", reference: str | None = None):
        """JSON: ``{"experiments", "rows", "table"}``; markdown/csv: the text."""
        ids = [exp_ids] if isinstance(exp_ids, str) else list(exp_ids)
        params = {"format": fmt, "by": by, **({"reference": reference} if reference else {})}
        if len(ids) == 1:
            r = self._request("GET", f"{self.api}/experiments/{ids[0]}/compare", params=params)
        else:
            r = self._request("GET", f"{self.api}/compare", params={"experiments": ",".join(ids), **params})
        return r.json() if fmt == "json" else r.text

    def plot(self, exp_id: str, kind: Literal["convergence", "sparsity", "grid", "pareto"] = "convergence",
             **params) -> bytes:
        """PNG bytes of one figure; ``params`` are the route's query parameters (width, height, ...)."""
        return self._request("GET", f"{self.api}/experiments/{exp_id}/plots/{kind}.png", params=params).content

    def health(self) -> dict:
        return self._request("GET", "/healthz").json()

    def ready(self) -> dict:
        r = self._http.get("/readyz")
        return r.json()


# ------------------------------------------------------------------ rendering (for the CLI)

def render_experiment(exp: ExperimentOut, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    p = exp.progress
    t = Table(show_header=False, box=None)
    t.add_row("id", exp.id)
    t.add_row("name", exp.name)
    t.add_row("status", exp.status + (" (cancel requested)" if exp.cancel_requested and exp.status == "running" else ""))
    t.add_row("progress", f"{p.trials_done}/{p.trials_total if p.trials_total is not None else '?'} trials"
              + (f" ({100 * p.fraction:.0f}%)" if p.fraction is not None else ""))
    if p.phase and exp.status == "running":
        n = p.packs_running or 0
        t.add_row("phase", f"running {n} pack{'' if n == 1 else 's'}" if p.phase == "running" else p.phase)
    if p.elapsed_s is not None:
        t.add_row("elapsed", f"{p.elapsed_s:.1f} s")
    if p.eta_s is not None and exp.status == "running":
        t.add_row("ETA", f"{p.eta_s:.1f} s")
    if p.best:
        b = p.best
        t.add_row("best", f"#{b.get('number')} {b.get('variant', '')} {b.get('metric', '')}="
                          f"{b.get('value')} {json.dumps(b.get('params', {}))}")
    if exp.dashboard_url:
        t.add_row("Ray dashboard", exp.dashboard_url)
    if exp.error:
        t.add_row("error", exp.error.splitlines()[0][:200])
    console.print(t)


def render_experiments(page: ExperimentPage, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    t = Table(title=f"experiments ({page.total})")
    for col in ("id", "name", "status", "trials", "created"):
        t.add_column(col)
    for e in page.items:
        t.add_row(e.id, e.name, e.status, f"{e.progress.trials_done}/{e.progress.trials_total or '?'}",
                  e.created_at.isoformat(timespec="seconds") if e.created_at else "")
    console.print(t)


def render_trials(page: TrialPage | list[dict], console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    items = page.items if isinstance(page, TrialPage) else page
    t = Table(title=f"trials ({page.total if isinstance(page, TrialPage) else len(items)})")
    for col in ("id", "#", "variant", "status", "params", "seed", "train", "test", "sparsity"):
        t.add_column(col)

    def f(v):
        return "" if v is None else f"{v:.4g}"

    for tr in items:
        t.add_row(str(tr["id"]), str(tr["number"]), tr["variant"], tr["status"], json.dumps(tr.get("params", {})),
                  str(tr.get("seed")), f(tr.get("train_metric")), f(tr.get("test_metric")), f(tr.get("sparsity_out")))
    console.print(t)


def render_compare(result: dict | list[dict], console=None) -> None:
    from rich.console import Console

    from service.reports.compare import VariantSummary
    from service.reports.tables import rich_table

    console = console or Console()
    rows = [VariantSummary.model_validate(r) for r in (result["rows"] if isinstance(result, dict) else result)]
    console.print(rich_table(rows, title="comparison (mean ± std over seeds)"))


def trace_to_csv(trace: dict[str, np.ndarray]) -> str:
    out = io.StringIO()
    w = csv.writer(out)
    cols = list(trace)
    w.writerow(cols)
    for row in zip(*(trace[c].tolist() for c in cols)):
        w.writerow(row)
    return out.getvalue()
