"""The pack planner: packs follow the accelerators on GPU clusters, the cores on CPU ones."""

from __future__ import annotations

import math

import pytest

from search.packing import (DEFAULT_GPU_MEMORY_BYTES, GPU_MEMORY_HEADROOM, IRIS_MEMBER_BYTES,
                            MAX_PACK_SIZE, ClusterShape, make_packs, member_bytes, plan_packs)
from search.sink import TrialPlan

H100 = 80e9


def plans(n: int, family: str = "gru") -> list[TrialPlan]:
    return [TrialPlan(number=i, variant=family, params={"lr": i}, seed=0, fold=None,
                      config={"member": {"lr": 0.1, "seed": i}, "pack": {"family": family}})
            for i in range(n)]


def packs_for(n: int, cluster: ClusterShape, **kw) -> list:
    kw = {"cpus_per_pack": 1.0, "gpus_per_pack": "auto", "pack_size": None, **kw}
    plan = plan_packs(cluster, **kw)
    ps = plans(n)
    return make_packs(ps, {p.number: p.number for p in ps}, pack_size=plan.pack_size, slots=plan.slots,
                      dataset={"name": "iris"}, objective="test_metric", maximize=True)


def test_one_h100_with_16_cpus_trains_a_2400_trial_grid_in_one_large_pack():
    jobs = packs_for(2400, ClusterShape(cpus=16, gpus=1, gpu_memory_bytes=H100))
    assert len(jobs) == 1 and jobs[0].size == 2400


def test_one_gpu_with_little_memory_splits_only_as_memory_requires():
    memory = 200 * IRIS_MEMBER_BYTES / GPU_MEMORY_HEADROOM  # room for exactly 200 members
    plan = plan_packs(ClusterShape(16, 1, memory), cpus_per_pack=1, gpus_per_pack="auto", pack_size=None)
    assert plan.pack_size == 200 and plan.slots == 1 and plan.gpus_per_pack == 1
    jobs = packs_for(2400, ClusterShape(16, 1, memory))
    assert len(jobs) == 12 and {j.size for j in jobs} == {200}


def test_a_hundred_gpus_get_at_least_a_hundred_packs_of_at_least_64():
    cluster = ClusterShape(cpus=800, gpus=100, gpu_memory_bytes=H100)
    jobs = packs_for(6400, cluster)
    assert len(jobs) >= 100 and min(j.size for j in jobs) >= 64
    assert sum(j.size for j in jobs) == 6400
    plan = plan_packs(cluster, cpus_per_pack=1, gpus_per_pack="auto", pack_size=None)
    assert plan.slots == 100 and plan.gpus_per_pack == 1.0


def test_gpu_fractions_share_a_gpu_between_packs_and_share_its_memory():
    plan = plan_packs(ClusterShape(16, 2, H100), cpus_per_pack=1, gpus_per_pack=0.25, pack_size=None)
    assert plan.slots == 8 and plan.gpus_per_pack == 0.25
    whole = plan_packs(ClusterShape(16, 2, 1e9), cpus_per_pack=1, gpus_per_pack=1, pack_size=None)
    quarter = plan_packs(ClusterShape(16, 2, 1e9), cpus_per_pack=1, gpus_per_pack=0.25, pack_size=None)
    assert quarter.pack_size == math.floor(0.25 * 1e9 * GPU_MEMORY_HEADROOM // IRIS_MEMBER_BYTES)
    assert whole.pack_size == math.floor(1e9 * GPU_MEMORY_HEADROOM // IRIS_MEMBER_BYTES)


def test_a_pack_size_set_in_the_spec_caps_gpu_packs_and_the_trainer_limit_caps_all():
    capped = plan_packs(ClusterShape(16, 1, H100), cpus_per_pack=1, gpus_per_pack="auto", pack_size=512)
    assert capped.pack_size == 512
    huge = plan_packs(ClusterShape(16, 1, 1e15), cpus_per_pack=1, gpus_per_pack="auto", pack_size=None)
    assert huge.pack_size == MAX_PACK_SIZE


@pytest.mark.parametrize("cpus,cpus_per_pack,slots", [(16, 1, 16), (2, 1, 2), (8, 2, 4), (1, 4, 1)])
def test_cpu_clusters_keep_packs_spread_over_the_cores(cpus, cpus_per_pack, slots):
    plan = plan_packs(ClusterShape(cpus), cpus_per_pack=cpus_per_pack, gpus_per_pack="auto", pack_size=None)
    assert (plan.pack_size, plan.slots, plan.gpus_per_pack) == (64, slots, 0.0)
    jobs = packs_for(2400, ClusterShape(cpus), cpus_per_pack=cpus_per_pack)
    assert len(jobs) == max(slots, math.ceil(2400 / 64))
    explicit = plan_packs(ClusterShape(cpus), cpus_per_pack=cpus_per_pack, gpus_per_pack=0, pack_size=9)
    assert explicit.pack_size == 9


def test_gpus_per_pack_zero_keeps_cpu_packing_on_a_gpu_cluster():
    plan = plan_packs(ClusterShape(16, 4, H100), cpus_per_pack=1, gpus_per_pack=0, pack_size=None)
    assert (plan.pack_size, plan.slots, plan.gpus_per_pack) == (64, 16, 0.0)


def test_gpu_packs_never_ask_for_more_cpus_than_a_gpu_slot_has():
    plan = plan_packs(ClusterShape(4, 8, H100), cpus_per_pack=2, gpus_per_pack="auto", pack_size=None)
    assert plan.slots == 8 and plan.cpus_per_pack == 0.5


def test_unknown_gpu_memory_assumes_the_default():
    plan = plan_packs(ClusterShape(16, 1, None), cpus_per_pack=1, gpus_per_pack="auto", pack_size=None)
    assert plan.pack_size == min(MAX_PACK_SIZE, int(DEFAULT_GPU_MEMORY_BYTES * GPU_MEMORY_HEADROOM
                                                     // IRIS_MEMBER_BYTES))


def test_member_memory_estimate_is_the_measured_iris_figure_and_grows_with_the_shape():
    iris = member_bytes(hidden=32, seq_len=4, n_inputs=1, n_outputs=3, batch=32)
    assert iris == pytest.approx(IRIS_MEMBER_BYTES)
    assert member_bytes(hidden=32, seq_len=4, n_inputs=1, n_outputs=3, batch=32, itemsize=8) == pytest.approx(2 * iris)
    wider = member_bytes(hidden=64, seq_len=4, n_inputs=1, n_outputs=3, batch=32)
    longer = member_bytes(hidden=32, seq_len=28, n_inputs=28, n_outputs=10, batch=32)
    assert 2 * iris < wider < 5 * iris and longer > 5 * iris


def test_the_driver_estimates_an_iris_member_as_measured_and_plans_from_the_spec():
    from search.driver import _Run, spec_member_bytes
    from search.spec import ExperimentSpec

    spec = ExperimentSpec.model_validate({"name": "t", "dataset": {"name": "iris"},
                                          "variants": [{"name": "GRU", "family": "gru"}],
                                          "training": {"batch_size": 32, "hidden": 32}})
    assert spec.execution.gpus_per_pack == "auto" and "pack_size" not in spec.execution.model_fields_set
    assert spec_member_bytes(spec) == pytest.approx(IRIS_MEMBER_BYTES)
    run = _Run.__new__(_Run)
    run.spec, run._cluster, run._member_bytes = spec, ClusterShape(16, 1, H100), IRIS_MEMBER_BYTES
    assert run.pack_plan() == plan_packs(ClusterShape(16, 1, H100), cpus_per_pack=1, gpus_per_pack="auto",
                                         pack_size=None)
    assert run.pack_plan().pack_size == MAX_PACK_SIZE and run.parallel_slots() == 1


def test_resource_check_resolves_auto_as_the_plan_does():
    from search.driver import check_resources
    from search.faults import ResourceUnsatisfiable
    from search.spec import ExperimentSpec

    spec = ExperimentSpec.model_validate({"name": "t", "dataset": {"name": "iris"},
                                          "variants": [{"name": "GRU", "family": "gru"}]})
    check_resources(spec, [{"CPU": 2, "GPU": 0}])
    explicit = spec.model_copy(update={"execution": spec.execution.model_copy(update={"gpus_per_pack": 1.0})})
    with pytest.raises(ResourceUnsatisfiable, match="execution.gpus_per_pack: 1 GPU per pack"):
        check_resources(explicit, [{"CPU": 2, "GPU": 0}])


def test_headless_ray_warns_once(monkeypatch, caplog):
    import ray._private.utils as ray_utils

    from search.ray_runtime import dashboard_available

    monkeypatch.setattr(ray_utils, "get_dashboard_dependency_error", lambda: ImportError("No module named 'aiohttp'"))
    with caplog.at_level("WARNING", logger="rnnhpo.ray"):
        assert dashboard_available() is False
    assert [r.getMessage() for r in caplog.records if "headless" in r.getMessage()] == [
        "Ray runs headless: the dashboard needs ray[default] (No module named 'aiohttp')"]
