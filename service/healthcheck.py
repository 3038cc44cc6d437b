"""Container health checks: ``python -m service.healthcheck database|jobs|http URL``.

Exit status 0 when the dependency answers, 1 otherwise (one line on stderr says why). Used by the
compose file and the Kubernetes probes; reads the same ``RNNHPO_*`` settings as the services.
"""

from __future__ import annotations

import sys
import urllib.request

from service.settings import Settings


def database(settings: Settings) -> None:
    """The database answers ``SELECT 1``."""
    import sqlalchemy as sa

    from service.db.engine import make_engine

    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    finally:
        engine.dispose()


def http(url: str, timeout: float = 5.0) -> None:
    """``url`` answers 2xx."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        if not 200 <= resp.status < 300:
            raise RuntimeError(f"{url}: HTTP {resp.status}")


def jobs(settings: Settings) -> None:
    """The cluster's Jobs API answers (with Ray's token, when one is configured)."""
    from ray.job_submission import JobSubmissionClient

    if not settings.ray_jobs_address:
        raise RuntimeError("RNNHPO_RAY_JOBS_ADDRESS is not set")
    JobSubmissionClient(settings.ray_jobs_address).get_version()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    checks = {"database": lambda: database(Settings()), "jobs": lambda: jobs(Settings()),
              "http": lambda: http(args[1])}
    if not args or args[0] not in checks or (args[0] == "http" and len(args) < 2):
        print("usage: python -m service.healthcheck database|jobs|http URL", file=sys.stderr)
        return 2
    try:
        checks[args[0]]()
    except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy", said in one line
        print(f"unhealthy: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
