"""A real 2-node SLURM job on this one machine: gloo DDP on CPU, one task per node, gives the losses
of one process with the same global batch.

The two-node test cluster (scripts/slurm/start_local_cluster.sh with STARX_SLURM_NODES=2, started by
scripts/test.sh as root) runs one slurmd per node on this host (nodes starx-node1 and starx-node2,
resolving to 127.0.0.1). The job goes the way a job on a real cluster goes: ``launch.kind=slurm
launch.slurm.nodes=2`` -> sbatch -> srun starts a task on each node -> StarxJob exports
MASTER_ADDR (the first node's name), RANK, WORLD_SIZE, LOCAL_RANK from SLURM_* -> run_job
initialises torch.distributed (gloo). Skipped when that cluster does not answer."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from starx.launch import scheduler
from tests.test_engine import QUICKSTART, losses, tiny

CONF = Path(os.environ.get("STARX_SLURM_2N_DIR", "/tmp/starx-slurm-2n")) / "slurm.conf"
NODES = ("starx-node1", "starx-node2")
# as tests/test_ddp.py: 13 steps of a global batch of 64 images (k=4: 16 sequences, 8 per rank)
COMMON = ["finetune.enabled=false", "pretrain.epochs=0.08", "cpu_threads=1", "device=cpu"]


def _two_nodes_answer() -> bool:
    if not CONF.exists() or shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True, text=True, timeout=60,
                             env={**os.environ, "SLURM_CONF": str(CONF)})
    except (OSError, subprocess.TimeoutExpired):
        return False
    states = dict(line.split() for line in out.stdout.splitlines() if len(line.split()) == 2)
    return out.returncode == 0 and all(states.get(n) in ("idle", "mixed") for n in NODES)


@pytest.fixture(scope="module")
def two_node_cluster():
    if not _two_nodes_answer():
        pytest.skip(f"no two-node SLURM cluster answers at {CONF} (as root: STARX_SLURM_NODES=2 "
                    "STARX_SLURM_DIR=/tmp/starx-slurm-2n STARX_SLURM_PORT=6827 scripts/slurm/start_local_cluster.sh)")
    before = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(CONF)  # sbatch and squeue, here and in the job
    try:
        yield CONF
    finally:
        if before is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = before


@pytest.mark.slurm
def test_two_node_slurm_job_matches_one_process(tmp_path, two_node_cluster):
    from starx.api import prepare
    from starx.launch import launch
    from starx.train.job import run_job

    cache = f"data.cache_dir={tmp_path / 'cache'}"
    one = prepare(QUICKSTART, tiny(tmp_path / "one", *COMMON, cache))
    run_job(one.run_dir)  # the reference, in this process (and the dataset cache, built once)
    expected = losses(one.run_dir)

    two = prepare(QUICKSTART, tiny(tmp_path / "two", *COMMON, cache, "launch.kind=slurm", "launch.slurm.nodes=2",
                                   "launch.slurm.cpus_per_task=1", "launch.slurm.timeout_min=10"))
    handle = launch(two)
    st = handle.wait(poll_s=0.5, timeout_s=240)
    logs = "\n".join(line for p in sorted(two.run_dir.glob("launch/*_log.*")) for line in p.read_text().splitlines()[-15:])
    assert st.state == "done", f"{st.state}: {st.detail}\n{logs}"
    result = json.loads((two.run_dir / "result.json").read_text())
    assert result["world_size"] == 2
    ranks = result["devices"]["ranks"]
    assert [(r["rank"], r["slurm_node"]) for r in ranks] == [(0, NODES[0]), (1, NODES[1])]  # one task per node
    start = next(e for e in scheduler.read_events(two.run_dir) if e["event"] == "start")
    assert start["tasks"] == 2 and start["backend"] == "slurm"

    got = losses(two.run_dir)
    assert sorted(got) == sorted(expected) and len(expected) >= 10
    for step, loss in expected.items():
        assert got[step] == pytest.approx(loss, rel=1e-4), (step, got, expected)


def _job_id_with_a_free_port() -> str:
    """A job id whose MASTER_PORT (submitit derives it from the id, as in a real job) is free here."""
    import random
    import socket

    for job_id in range(4242, 4342):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", random.Random(str(job_id)).randint(20000, 60000)))
            except OSError:
                continue
        return str(job_id)
    raise AssertionError("no free port")


@pytest.mark.parametrize("nodelist", ["localhost,127.0.0.1"])
def test_the_environment_of_a_two_node_job_reaches_torch_distributed(tmp_path, nodelist):
    """Without a cluster: the SLURM_* variables srun gives the two tasks of a 2-node job with one task per
    node (NODEID and PROCID 0 / 1, LOCALID 0 on both), through StarxJob (submitit's JobEnvironment and
    TorchDistributedEnvironment) to a gloo process group: rank 1 is LOCAL_RANK 0 on the second node,
    MASTER_ADDR is the first node, MASTER_PORT comes from the job id."""
    import sys

    from starx import rundir
    from starx.launch.testing import fake_prepare

    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps({"experiment": "fake", "root": str(tmp_path / "results"), "x": 1.0}))
    run_dir = fake_prepare(spec).run_dir
    code = "import sys; from starx.launch.submitit_job import StarxJob; StarxJob(sys.argv[1], sys.argv[2])()"
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("SLURM_", "SUBMITIT_"))
            and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    job_id = _job_id_with_a_free_port()
    procs = []
    for node in (0, 1):
        env = {**base, "SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": job_id, "SLURM_NTASKS": "2",
               "SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_NODELIST": nodelist, "SLURM_NODEID": str(node),
               "SLURM_PROCID": str(node), "SLURM_LOCALID": "0", "SLURMD_NODENAME": f"node{node}"}
        procs.append(subprocess.Popen([sys.executable, "-c", code, str(run_dir), "starx.launch.testing:fake_dist_job"],
                                      env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-3000:]
    result = rundir.read_json(run_dir / "result.json")
    assert result["metrics"] == {"sum": 3.0, "world_size": 2}
    first = nodelist.split(",")[0]
    assert [(e["RANK"], e["LOCAL_RANK"], e["WORLD_SIZE"], e["MASTER_ADDR"]) for e in result["envs"]] == [
        ("0", "0", "2", first), ("1", "0", "2", first)]
    start = next(e for e in scheduler.read_events(run_dir) if e["event"] == "start")
    assert start["backend"] == "slurm" and start["tasks"] == 2 and start["job_id"] == job_id
