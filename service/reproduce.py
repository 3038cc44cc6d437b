"""Running and reopening the experiments of ``rnnhpo reproduce`` (the CLI only parses and prints)."""

from __future__ import annotations

from typing import Any


def run_spec(spec_dict: dict[str, Any], db: str | None, *, say=print) -> tuple[Any, str, str]:
    """Create, claim and run one experiment in this process (local Ray); ``(store, id, status)``.
    ``say`` gets one line naming the experiment and the database."""
    from search.driver import run_experiment
    from search.spec import ExperimentSpec
    from service.runner import Runner, default_runner_id
    from service.settings import Settings
    from service.store import Store

    spec = ExperimentSpec.model_validate(spec_dict)
    settings = Settings()
    if db:
        settings = settings.model_copy(update={"database_url": db})
    store = Store(settings.database_url)
    exp_id = store.create_experiment(spec.name, spec.model_dump(mode="json"), n_trials_total=spec.count_trials())
    runner_id = default_runner_id()
    view = store.claim_experiment(runner_id, exp_id=exp_id)
    runner = Runner(settings, store=store, runner_id=runner_id, run_fn=run_experiment, init_ray=True)
    say(f"{spec.name}: experiment {exp_id}, {spec.count_trials()} trials, database {settings.database_url}")
    return store, exp_id, runner.execute(view)


def open_experiment(db: str | None, exp_id: str):
    """The store holding finished experiment ``exp_id`` (``db`` or the configured database), or
    None when it has no such experiment."""
    from service.settings import Settings
    from service.store import Store

    store = Store(db or Settings().database_url)
    return store if store.get_experiment(exp_id) is not None else None


def default_plots_dir(exp_id: str):
    from service.settings import Settings

    return Settings().plots_dir / exp_id
