"""Shared fixtures: a throwaway PostgreSQL database per test run, a SQLite URL per test."""

from __future__ import annotations

import os
import uuid

import pytest

# Without CUDA the Triton kernels (tests/test_triton_pack.py) run in Triton's interpreter. Triton
# reads the variable when it is first imported (its own language functions) and when a kernel is
# defined, and other tests import it early (through torch), so it is set here, before any of them;
# a test of what a user without a GPU sees removes it for itself.
if "TRITON_INTERPRET" not in os.environ:
    import torch

    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"

PG_ADMIN_URL = os.environ.get("RNNHPO_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")


def _pg_admin_connect():
    import psycopg

    return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)


@pytest.fixture(scope="session")
def pg_url():
    """SQLAlchemy URL of a fresh PostgreSQL database, dropped at the end of the run.

    Without a reachable server the test is skipped locally and *fails* in CI (CI=true).
    """
    try:
        admin = _pg_admin_connect()
    except Exception as exc:  # noqa: BLE001 - report any connection problem the same way
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is required in CI: {exc}")
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc}")
    name = f"rnnhpo_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    yield f"{base}/{name}"
    with _pg_admin_connect() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request):
    """A fresh, empty database per test: a SQLite file, or a PostgreSQL database created beside
    the session's ``pg_url`` one (tests that claim experiments must see only their own)."""
    from service.db.engine import dispose_engines

    if request.param == "sqlite":
        yield request.getfixturevalue("sqlite_url")
        dispose_engines()
        return
    base_url = request.getfixturevalue("pg_url")
    name = f"rnnhpo_t_{uuid.uuid4().hex[:12]}"
    with _pg_admin_connect() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield base_url.rsplit("/", 1)[0] + f"/{name}"
    dispose_engines()
    with _pg_admin_connect() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session", autouse=True)
def private_home(tmp_path_factory):
    """Every test run gets its own RNNHPO_HOME: nothing is read from or written to the user's
    ~/.local/share/rnnhpo (default database, data, plots, Ray files)."""
    home = tmp_path_factory.mktemp("rnnhpo-home")
    old = os.environ.get("RNNHPO_HOME")
    os.environ["RNNHPO_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("RNNHPO_HOME", None)
    else:
        os.environ["RNNHPO_HOME"] = old


def _no_network(*args, **kwargs):
    raise OSError("network access is blocked in this test")


@pytest.fixture
def no_network(monkeypatch):
    """Every socket connection and name lookup raises: proves the code under test needs none."""
    import socket

    monkeypatch.setattr(socket.socket, "connect", _no_network)
    monkeypatch.setattr(socket.socket, "connect_ex", _no_network)
    monkeypatch.setattr(socket, "create_connection", _no_network)
    monkeypatch.setattr(socket, "getaddrinfo", _no_network)


@pytest.fixture
def one_thread():
    """Tiny models: a second intra-op thread only adds contention on a shared machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def iris():
    """The Iris task, split seed 0 (shared by the trainer tests)."""
    from trainer.tasks import load_task

    return load_task("iris", seed=0)


@pytest.fixture(scope="module")
def funcapprox():
    """The eq. 40 function-approximation task, seed 0 (shared by the trainer tests)."""
    from trainer.tasks import load_task

    return load_task("funcapprox", seed=0)


@pytest.fixture
def sqlite_url(tmp_path):
    """SQLAlchemy URL of a SQLite file private to one test."""
    return f"sqlite:///{tmp_path / 'rnnhpo.db'}"


@pytest.fixture(scope="session")
def ray_local(tmp_path_factory):
    """A real local Ray, started once per test session (``ray.init`` costs seconds and ~400 MB)."""
    import ray

    from search.ray_runtime import ensure_ray

    os.environ.setdefault("RNNHPO_VAR_DIR", str(tmp_path_factory.mktemp("var")))
    url = ensure_ray(num_cpus=2)
    yield url
    ray.shutdown()


@pytest.fixture(autouse=True)
def no_idle_pack_workers():
    """A long-lived runner keeps its pack workers after an experiment (holding their CPUs); each
    test ends them, so the next test finds the session's Ray as free as it expects."""
    yield
    import sys

    pool = sys.modules.get("search.pack_pool")
    if pool is not None:
        import ray

        if ray.is_initialized():
            pool.release(0)
