"""A sweep on Ray (exchange/sweep/executors.py): a local Ray instance started here (2
CPUs), the same small sweep through the library and through `wattmesh sweep --ray auto`,
and the same table, byte for byte, as on local processes."""

from __future__ import annotations

from pathlib import Path

import ray

from wattmesh.exchange.sweep.sweep import run_sweep


def test_a_sweep_on_ray_gives_the_local_processes_table(sweep_spec, cli, tmp_path: Path):
    spec = sweep_spec()
    # Local processes first: nothing of Ray runs in this process yet.
    local = run_sweep(spec, tmp_path / "local", workers=2)
    assert not local.failed
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        on_ray = run_sweep(spec, tmp_path / "ray", ray_address="auto")
        code, out, err = cli("sweep", spec, "--out", tmp_path / "cli", "--ray", "auto")
        assert ray.is_initialized()  # a driver that was connected stays connected
    finally:
        ray.shutdown()
    assert (on_ray.ran, on_ray.failed) == (6, [])
    assert code == 0, err
    assert out.startswith("6 points: 6 ok, 0 failed (6 run now, 0 finished before)")
    table = (tmp_path / "local" / "sweep.parquet").read_bytes()
    assert (tmp_path / "ray" / "sweep.parquet").read_bytes() == table
    assert (tmp_path / "cli" / "sweep.parquet").read_bytes() == table
