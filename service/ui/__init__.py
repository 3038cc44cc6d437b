"""The results explorer: server-rendered pages at ``/ui`` on the API's own app.

- ``/ui`` -- experiments with live progress, filters, cancel and Ray links (:mod:`.pages`);
- ``/ui/experiments/{id}`` -- comparison table and interactive charts;
- ``/ui/trials/{id}`` -- one trial and its trace explorer;
- ``/ui/submit`` -- the spec editor.

Pages are Jinja2 templates with a small script layer (htmx for partial updates, Plotly for
charts); every asset is served by the app (:mod:`.assets`), nothing comes from another host.
Data comes from the same store and reports layer as the API and the CLI (:mod:`.data`).
"""

from __future__ import annotations

from fastapi import FastAPI

UI_PREFIX = "/ui"


def mount(app: FastAPI) -> None:
    """Add the pages, their data routes and static assets to ``app`` (hidden from OpenAPI)."""
    from service.ui import assets, data, pages

    app.include_router(pages.router, prefix=UI_PREFIX, include_in_schema=False)
    app.include_router(data.router, prefix=UI_PREFIX, include_in_schema=False)
    assets.mount(app, UI_PREFIX)
