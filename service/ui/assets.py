"""Static assets served by the app itself: the pages' CSS and script, vendored htmx (with its
licence) and Plotly's bundle straight from the installed ``plotly`` package."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"


@lru_cache(maxsize=1)
def plotly_bundle() -> Path:
    """``plotly.min.js`` shipped inside the ``plotly`` Python package."""
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.is_file():  # pragma: no cover - a broken plotly install
        raise FileNotFoundError(f"Plotly's bundle is missing: {path}")
    return path


def plotly_version() -> str:
    from plotly.offline import get_plotlyjs_version

    return get_plotlyjs_version()


def mount(app: FastAPI, prefix: str) -> None:
    @app.get(f"{prefix}/static/vendor/plotly.min.js", include_in_schema=False)
    def _plotly() -> FileResponse:
        try:
            path = plotly_bundle()
        except (ImportError, FileNotFoundError) as exc:
            raise HTTPException(404, detail=str(exc)) from None
        return FileResponse(path, media_type="text/javascript",
                            headers={"Cache-Control": "public, max-age=86400"})

    app.mount(f"{prefix}/static", StaticFiles(directory=STATIC_DIR), name="ui-static")
