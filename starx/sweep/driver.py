"""The sweep driver: an Optuna study on disk, N trials in flight, resumable.

One driver process per sweep (a lock file says so) asks the study for a trial, prepares its
run directory (``starx.api.prepare``), launches it (``starx.launch.launch``), and polls the
run directories; as soon as one trial ends its result is told to the study and the next
trial starts (no waiting for a whole batch). Everything lives under ``<output_dir>/<name>/``:

- ``study.journal``  the Optuna study (JournalFileBackend: append-only, survives kill -9);
- ``sweep.yaml``     the sweep file as parsed;
- ``trials.json``    a plain-JSON mirror of the trials (what ``starx results`` reads);
- ``driver.lock``    held (flock) by the running driver.

Resume (running the same sweep again, or ``--resume``): trials the study records as running
are re-attached to their jobs when those are still queued/running, told when their run
directory already holds a final result, and relaunched (they resume from their checkpoints)
when their job vanished. Finished trials are never run again: a trial whose run directory is
already done is told its recorded result without launching anything. With ``retry_failed``, each
point of the space whose trials all failed is queued once more as a new trial, once per driver
start (its run resumes from its checkpoint if it has one); the failed trials stay in the record.

GPUs (subprocess trials, ``launch.subprocess.gpus_per_node`` > 0): each trial in flight gets its
own devices from a pool (``starx.launch.gpus``: ``STARX_GPUS``, else the driver's
``CUDA_VISIBLE_DEVICES``, else every GPU torch sees), given back when it ends. A trial that finds
too few free waits (it is asked and prepared, not launched) until a running one ends: ``-j``
larger than the pool allows runs as many trials as fit. Which devices a trial holds is recorded
in its ``launch.json`` (``gpus``) and its trial attributes; a restarted driver takes the devices of
the trials it re-attaches to back out of the pool before it launches anything.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from starx import _compat
from starx.launch import gpus as gpus_mod
from starx.launch import scheduler
from starx.launch.submit import PrepareFn
from starx.rundir import SweepDir, write_json_atomic

from .config import SweepConfig, SweepError, resolve_spec_path

log = logging.getLogger(__name__)

MAX_RELAUNCHES = 2  # a trial whose job vanishes more often than this fails


@dataclass
class _InFlight:
    number: int
    trial_id: int
    params: dict[str, Any]
    run_dir: Path
    relaunches: int = 0
    lost_polls: int = 0
    started: float = field(default_factory=time.time)
    gpus: tuple[str, ...] = ()  # device ids this trial's job holds (from the driver's pool)
    prepared: Any = None  # while waiting for GPUs: its prepared run, and the launch kind
    kind: str = ""
    said_wait: bool = False

    @property
    def holder(self) -> str:
        return f"trial {self.number}"


@dataclass
class SweepSummary:
    name: str
    dir: Path
    n_trials: int
    complete: int
    failed: int
    running: int
    best: Optional[dict]
    stopped: str  # "finished" | "too many failures" | "no trial completed" | "time limit" | "detached"

    @property
    def ok(self) -> bool:
        return self.stopped in ("finished", "time limit", "detached")


def sweep_root(cfg: SweepConfig) -> Path:
    """The results root of a sweep: its base spec's ``output_dir`` after the fixed overrides."""
    from starx.spec import load_spec

    spec = load_spec(resolve_spec_path(cfg), cfg.overrides)
    return Path(spec.output_dir).expanduser()


def _normalise(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


class SweepDriver:
    def __init__(self, cfg: SweepConfig, *, root: Optional[Path] = None,
                 prepare: Optional[PrepareFn] = None, entry: Optional[str] = None,
                 max_wall_s: Optional[float] = None, detach: bool = False, retry_failed: bool = False,
                 force: bool = False):
        """cfg: the parsed sweep; root: results root (default: the base spec's output_dir);
        prepare/entry: injectable for tests (default: starx.api.prepare, the engine's run_job);
        max_wall_s: return after this long, leaving trials running (resume later);
        detach: return once the last trials are launched, without waiting for them;
        retry_failed: queue each failed point of the space once more (see the module docstring);
        force: a trial whose run is already done runs again (its old outputs moved to superseded/)
        instead of reusing that result; trials this study already completed are kept."""
        from starx.launch.submitit_job import DEFAULT_ENTRY

        if prepare is None:
            from starx.api import prepare as api_prepare

            prepare = api_prepare
        self.cfg = cfg
        self.root = Path(root) if root is not None else sweep_root(cfg)
        self.dir = self.root / cfg.name
        self.files = SweepDir(self.dir)
        self.prepare = prepare
        self.entry = entry or DEFAULT_ENTRY
        self.max_wall_s = max_wall_s
        self.detach = detach
        self.retry_failed = retry_failed
        self.force = force
        self.spec_path = resolve_spec_path(cfg)
        self.inflight: dict[int, _InFlight] = {}
        self.waiting: list[_InFlight] = []  # asked and prepared, waiting for free GPUs (in order)
        self._pool: Optional[gpus_mod.GpuPool] = None
        self._pool_read = False
        try:  # read now: a bad value is the user's input, refused before anything runs
            self._per_gpu = gpus_mod.trials_per_gpu()
        except ValueError as e:
            raise SweepError(str(e)) from None
        self._lock_file = None

    # ------------------------------------------------------------------ study
    def _open_study(self):
        import optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.dir.mkdir(parents=True, exist_ok=True)
        path = str(self.files.study)
        storage = JournalStorage(JournalFileBackend(path, lock_obj=JournalFileSymlinkLock(path, grace_period=5)))
        existing = [s.study_name for s in storage.get_all_studies()]
        n_before = 0
        if self.cfg.name in existing:
            study = optuna.load_study(study_name=self.cfg.name, storage=storage)
            saved = study.user_attrs.get("sweep")
            if saved is not None and _normalise(saved) != _normalise(self.cfg.identity()):
                diff = sorted(k for k in set(saved) | set(self.cfg.identity())
                              if _normalise(saved.get(k)) != _normalise(self.cfg.identity().get(k)))
                raise SweepError(
                    f"{self.cfg.source}: {', '.join(diff)} changed since the study in {self.dir} was created; "
                    f"use a new name, or delete {self.dir} to start over")
            n_before = len(study.trials)
        else:
            study = optuna.create_study(study_name=self.cfg.name, storage=storage,
                                        direction=self.cfg.objective.direction)
            if self.cfg.sampler == "grid":
                # every cell queued up front, in the declared order (baseline first): ask() hands
                # them out one by one, and a resumed driver finds the rest still waiting
                for cell in self.cfg.grid_cells()[: self.cfg.total_trials()]:
                    study.enqueue_trial(cell, skip_if_exists=False)
            study.set_user_attr("sweep", _normalise(self.cfg.identity()))
        study.sampler = self._sampler(n_before)
        if self.retry_failed:
            self._queue_retries(study)
        return study

    def _queue_retries(self, study) -> None:
        from optuna.trial import TrialState

        def point(ft) -> str:  # a waiting trial holds its params as fixed_params until asked
            return json.dumps(_normalise(ft.params or ft.system_attrs.get("fixed_params", {})), sort_keys=True)

        trials = study.get_trials(deepcopy=False)
        covered = {point(ft) for ft in trials if ft.state != TrialState.FAIL}
        for ft in trials:
            if ft.state == TrialState.FAIL and point(ft) not in covered:
                study.enqueue_trial(dict(ft.params), user_attrs={"retry_of": ft.number}, skip_if_exists=False)
                covered.add(point(ft))
                log.info("trial %d (%s) failed before: queued again", ft.number, _fmt_params(ft.params))

    @staticmethod
    def _retries(trials) -> int:
        return sum("retry_of" in ft.user_attrs for ft in trials)

    def _sampler(self, n_before: int):
        import optuna

        if self.cfg.sampler == "grid":
            class _Grid(optuna.samplers.GridSampler):
                def after_trial(self, study, trial, state, values):  # noqa: ARG002
                    pass  # the driver decides when to stop (GridSampler calls study.stop())

            return _Grid(self.cfg.grid(), seed=self.cfg.seed)
        seed = self.cfg.seed + n_before  # a resumed sweep must not replay the first draws
        if self.cfg.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed, constant_liar=self.cfg.n_parallel > 1)

    def _distributions(self) -> dict[str, Any]:
        return {name: p.distribution() for name, p in self.cfg.params.items()}

    def _set_attrs(self, study, trial_id: int, **attrs: Any) -> None:
        for k, v in attrs.items():
            _compat.set_trial_user_attr(study, trial_id, k, _normalise(v))

    # ------------------------------------------------------------------ lock
    def _acquire(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        f = open(self.files.lock, "a+")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            who = f.read().strip()
            f.close()
            raise SweepError(f"another driver is running the sweep in {self.dir} ({who})") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
        f.flush()
        self._lock_file = f

    def _release(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    # ------------------------------------------------------------------ trials
    def _launch(self, study, t: _InFlight, overrides: list[str]) -> None:
        """Prepare and launch (or attach to / reuse) the run of a trial; fail it on a spec error."""
        from starx.launch.config import LaunchKind

        try:
            prepared = self.prepare(self.spec_path, overrides)
        except ValueError as e:  # SpecError: this point of the space is not a valid spec
            self._fail(study, t, f"spec: {e}")
            return
        t.run_dir = Path(prepared.run_dir).resolve()
        self._set_attrs(study, t.trial_id, run_dir=str(t.run_dir), run_id=prepared.run_id,
                        experiment=prepared.experiment, overrides=overrides)
        st = scheduler.run_state(t.run_dir)
        if st.state == scheduler.DONE and self.force:
            from starx.provenance import supersede

            log.info("trial %d: %s is already done; running it again (--force)", t.number, t.run_dir.name)
            supersede(t.run_dir)
            st = scheduler.run_state(t.run_dir)
        if st.state == scheduler.DONE:
            from starx.provenance import stale_reason

            log.info("trial %d: %s is already done; using its result", t.number, t.run_dir.name)
            stale = stale_reason(t.run_dir)
            if stale:
                log.warning("trial %d reuses a finished run: %s", t.number, stale)
            self._set_attrs(study, t.trial_id, reused=True)
            self.inflight[t.number] = t
            return
        kind = prepared.cfg.launch.kind if "launch" in prepared.cfg else "local"
        kind = getattr(kind, "value", kind)
        if kind == LaunchKind.local.value:
            kind = LaunchKind.subprocess.value  # trials run beside the driver and outlive it
        if not self._submit(study, t, prepared, kind):
            self.waiting.append(t)

    def _submit(self, study, t: _InFlight, prepared, kind: str) -> bool:
        """Launch a prepared trial on its own GPUs; False (nothing launched) while too few are free."""
        from starx.launch import launch
        from starx.launch.submit import launch_config

        gpus: Optional[tuple[str, ...]] = None
        need = launch_config(prepared.cfg).subprocess.gpus_per_node if kind == "subprocess" else 0
        pool = self._gpu_pool() if need > 0 else None
        if pool is not None:
            try:
                gpus = pool.acquire(need, t.holder)
            except gpus_mod.NotEnoughGpus as e:
                self._fail(study, t, f"launch: trial {t.number} {e}")
                return True
            if gpus is None:
                t.prepared, t.kind = prepared, kind
                if not t.said_wait:
                    t.said_wait = True
                    log.info("trial %d waits for %d free GPU%s (pool %s; in use: %s)", t.number, need,
                             "s" if need != 1 else "", pool.source.describe(), pool.describe_use())
                return False
        t.prepared = None
        try:
            placed = {"gpus": gpus} if gpus is not None else {}  # no devices of its own: launch as ever
            handle = launch(prepared, kind=kind, entry=self.entry, **placed)
        except Exception as e:  # noqa: BLE001 - a submission error fails this trial only
            if gpus and pool is not None:
                pool.release(gpus, t.holder)
            self._fail(study, t, f"launch: {type(e).__name__}: {e}")
            return True
        if handle.attached and pool is not None and gpus:
            # the run already had a live job (another sweep's trial, say): it holds the devices
            # its launch record names, not the ones just taken
            pool.release(gpus, t.holder)
            gpus = None
            self._claim_recorded(t, scheduler.read_launch(t.run_dir))
        elif gpus:
            t.gpus = gpus
        self._set_attrs(study, t.trial_id, backend=handle.kind, job_id=handle.job_id, gpus=list(t.gpus) or None)
        self.inflight[t.number] = t
        verb = "attached to" if handle.attached else "launched"
        on = f" on GPU {','.join(t.gpus)}" if t.gpus else ""
        log.info("trial %d %s: %s -> %s job %s%s", t.number, verb, _fmt_params(t.params), handle.kind,
                 handle.job_id, on)
        return True

    def _gpu_pool(self) -> Optional[gpus_mod.GpuPool]:
        """The devices trials are placed on, read once (None: no GPUs here, place nothing)."""
        if not self._pool_read:
            self._pool_read = True
            source = gpus_mod.machine_pool()
            if source.ids:
                self._pool = gpus_mod.GpuPool(source, per_device=self._per_gpu)
                log.info("GPU pool %s: %s", source.describe(), "each trial in flight gets its own" if self._per_gpu == 1
                         else f"up to {self._per_gpu} trials in flight share each ({gpus_mod.ENV_PER_GPU})")
            else:
                log.warning("no GPUs found (%s): trials that ask for GPUs (launch.subprocess.gpus_per_node) "
                            "are launched without a device of their own", source.describe())
        return self._pool

    def _claim_recorded(self, t: _InFlight, launch_rec: Optional[dict]) -> None:
        """Take the devices a live job of ``t`` holds (its launch record's ``gpus``) out of the pool."""
        ids = (launch_rec or {}).get("gpus")
        if (launch_rec or {}).get("backend") != "subprocess" or not isinstance(ids, list) or not ids:
            return
        pool = self._gpu_pool()
        if pool is None:
            return
        t.gpus = tuple(str(d) for d in ids)
        clash = pool.claim(t.gpus, t.holder)
        if clash:
            log.warning("trial %d's job holds GPU %s, which the pool had also given to another trial",
                        t.number, ",".join(clash))

    def _drop(self, t: _InFlight) -> None:
        """``t`` is no longer in flight (or waiting): its devices go back to the pool."""
        self.inflight.pop(t.number, None)
        if t in self.waiting:
            self.waiting.remove(t)
        if t.gpus and self._pool is not None:
            self._pool.release(t.gpus, t.holder)
        t.gpus = ()

    def _fail(self, study, t: _InFlight, reason: str) -> None:
        from optuna.trial import TrialState

        reason = reason.strip()
        self._set_attrs(study, t.trial_id, fail_reason=reason[-2000:])
        study.tell(t.number, state=TrialState.FAIL)
        self._drop(t)
        log.warning("trial %d failed: %s", t.number, reason.splitlines()[-1] if reason else "")

    def _complete(self, study, t: _InFlight, result: dict) -> None:
        metrics = result.get("metrics") or {}
        metric = self.cfg.objective.metric
        value = metrics.get(metric)
        numeric = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self._set_attrs(study, t.trial_id, metrics=numeric, wall_time_s=result.get("wall_time_s"))
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            have = ", ".join(sorted(metrics)) or "none"
            self._fail(study, t, f"objective metric '{metric}' is {value!r} in result.json (metrics: {have})")
            return
        study.tell(t.number, float(value))
        self._drop(t)
        best = self._best(study)
        log.info("trial %d done: %s=%.4g  (best: %s)", t.number, metric, value,
                 f"trial {best['number']}, {best['value']:.4g}" if best else "-")

    def _poll(self, study) -> None:
        slurm_ids = []
        for t in self.inflight.values():
            rec = scheduler.read_launch(t.run_dir)
            if rec and rec.get("backend") == "slurm" and rec.get("job_id"):
                slurm_ids.append(rec["job_id"])
        states = scheduler.query_slurm(slurm_ids) if slurm_ids else {}
        if states is None:
            return  # the controller did not answer: decide nothing this round
        for t in list(self.inflight.values()):
            st = scheduler.run_state(t.run_dir, states)
            if st.state == scheduler.DONE:
                self._complete(study, t, st.result or {})
            elif st.state == scheduler.FAILED:
                self._fail(study, t, "\n".join(st.error_tail) or st.detail or "failed")
            elif st.active:
                t.lost_polls = 0
            else:  # preempted without requeue, lost, or never launched: relaunch (it resumes)
                t.lost_polls += 1
                if t.lost_polls < 2:
                    continue  # look once more before deciding (a result may be landing)
                if t.relaunches >= MAX_RELAUNCHES:
                    self._fail(study, t, f"job {st.state} {t.relaunches + 1} times: {st.detail}")
                    continue
                t.relaunches += 1
                t.lost_polls = 0
                self._set_attrs(study, t.trial_id, relaunches=t.relaunches)
                log.warning("trial %d: run is %s (%s); relaunching it (%d/%d)", t.number, st.state,
                            st.detail, t.relaunches, MAX_RELAUNCHES)
                self._drop(t)
                self._launch(study, t, self.cfg.trial_overrides(t.params))

    def _reattach(self, study) -> None:
        from optuna.trial import TrialState

        unlaunched = []
        for ft in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            ua = ft.user_attrs
            t = _InFlight(ft.number, _compat.trial_id(ft), dict(ft.params), Path(ua.get("run_dir", ".")),
                          relaunches=int(ua.get("relaunches", 0)))
            st = scheduler.run_state(t.run_dir) if "run_dir" in ua else None
            if st is None or st.state == scheduler.PREPARED:
                # the driver stopped between ask and launch (or while the trial waited for GPUs)
                unlaunched.append(t)
                continue
            self.inflight[t.number] = t
            if st.active:  # its job keeps the devices it was given: none of them is handed out again
                self._claim_recorded(t, st.launch)
            log.info("trial %d: re-attached (%s)%s", t.number, st.state,
                     f" on GPU {','.join(t.gpus)}" if t.gpus else "")
        for t in unlaunched:  # after every live trial has taken its devices back
            log.info("trial %d: launching (the previous driver stopped before it did)", t.number)
            self._launch(study, t, self.cfg.trial_overrides(t.params))

    def _best(self, study) -> Optional[dict]:
        from optuna.trial import TrialState

        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not done:
            return None
        pick = max if self.cfg.objective.direction == "maximize" else min
        b = pick(done, key=lambda ft: ft.value)
        return {"number": b.number, "value": b.value, "params": b.params, "run_dir": b.user_attrs.get("run_dir")}

    # ------------------------------------------------------------------ mirror
    def write_trials_json(self, study) -> None:
        trials = []
        for ft in study.get_trials(deepcopy=False):
            ua = ft.user_attrs
            trials.append({
                "number": ft.number, "state": ft.state.name,
                "params": ft.params or dict(ft.system_attrs.get("fixed_params") or {}), "value": ft.value,
                "run_dir": ua.get("run_dir"), "run_id": ua.get("run_id"), "experiment": ua.get("experiment"),
                "backend": ua.get("backend"), "job_id": ua.get("job_id"), "fail_reason": ua.get("fail_reason"),
                "metrics": ua.get("metrics"), "wall_time_s": ua.get("wall_time_s"),
                "relaunches": ua.get("relaunches", 0), "reused": ua.get("reused", False), "gpus": ua.get("gpus"),
                "started": ft.datetime_start.timestamp() if ft.datetime_start else None,
                "finished": ft.datetime_complete.timestamp() if ft.datetime_complete else None,
            })
        write_json_atomic(self.files.trials, {
            "name": self.cfg.name, "spec": str(self.spec_path), "source": self.cfg.source,
            "objective": {"metric": self.cfg.objective.metric, "direction": self.cfg.objective.direction},
            "sampler": self.cfg.sampler, "params": list(self.cfg.params), "n_trials": self.cfg.total_trials(),
            "n_parallel": self.cfg.n_parallel, "updated": time.time(), "best": self._best(study),
            "trials": trials,
        })

    # ------------------------------------------------------------------ main loop
    def run(self) -> SweepSummary:
        from optuna.trial import TrialState

        self._acquire()
        try:
            study = self._open_study()
            import yaml

            self.files.sweep_yaml.write_text(yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))
            self._reattach(study)
            self.write_trials_json(study)
            dists = self._distributions()
            t0 = time.time()
            stopped = "finished"
            while True:
                self._poll(study)
                trials = study.get_trials(deepcopy=False)
                retries = self._retries(trials)  # retried failures count once, as their retry
                total = self.cfg.total_trials() + retries
                started = sum(ft.state != TrialState.WAITING for ft in trials)
                failed = sum(ft.state == TrialState.FAIL for ft in trials) - retries
                too_many = failed > self.cfg.max_failures
                if too_many:
                    stopped = "too many failures"
                while not too_many and len(self.inflight) < self.cfg.n_parallel:
                    if self.waiting:  # trials asked before wait for GPUs first, in order
                        t = self.waiting.pop(0)
                        if not self._submit(study, t, t.prepared, t.kind):
                            self.waiting.insert(0, t)
                            break
                        continue
                    if started >= total:
                        break
                    trial = study.ask(dists)
                    started += 1
                    t = _InFlight(trial.number, _compat.trial_id(trial), dict(trial.params), Path("."))
                    self._launch(study, t, self.cfg.trial_overrides(t.params))
                    if t in self.waiting:
                        break  # no free GPUs: ask for no more trials until one ends
                    if t.number not in self.inflight:  # failed at once (spec error) or reused
                        failed = sum(ft.state == TrialState.FAIL for ft in study.get_trials(deepcopy=False)) - retries
                        too_many = failed > self.cfg.max_failures
                if too_many:  # launch-time failures count as much as failures found by polling
                    stopped = "too many failures"
                self.write_trials_json(study)
                if not self.inflight and self.waiting and not too_many:
                    # nothing runs, yet these found no free GPUs: devices still held (a bug) must not hang the sweep
                    for t in list(self.waiting):
                        self._fail(study, t, f"launch: no free GPUs with no trial in flight "
                                             f"({self._pool.describe_use() if self._pool else 'no pool'})")
                    continue
                if not self.inflight:
                    break
                if self.detach and not self.waiting and (started >= total or too_many):
                    stopped = "detached"
                    break
                if self.max_wall_s is not None and time.time() - t0 > self.max_wall_s:
                    stopped = "time limit"
                    break
                time.sleep(self.cfg.poll_s)
            trials = study.get_trials(deepcopy=False)
            if stopped == "finished" and not any(ft.state == TrialState.COMPLETE for ft in trials):
                stopped = "no trial completed"
                log.error("sweep %s: no trial completed", self.cfg.name)
            if stopped == "too many failures":
                log.error("sweep %s stopped: %d trials failed (max_failures=%d)", self.cfg.name,
                          sum(ft.state == TrialState.FAIL for ft in trials), self.cfg.max_failures)
            self.write_trials_json(study)
            return SweepSummary(
                name=self.cfg.name, dir=self.dir, n_trials=self.cfg.total_trials() + self._retries(trials),
                complete=sum(ft.state == TrialState.COMPLETE for ft in trials),
                failed=sum(ft.state == TrialState.FAIL for ft in trials),
                running=sum(ft.state == TrialState.RUNNING for ft in trials),
                best=self._best(study), stopped=stopped)
        finally:
            self._release()


def _fmt_params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items())


def run_sweep(sweep: str | Path | SweepConfig, **kwargs: Any) -> SweepSummary:
    """Drive (or resume) a sweep to its end; see :class:`SweepDriver` for the keyword arguments."""
    from .config import load_sweep

    cfg = sweep if isinstance(sweep, SweepConfig) else load_sweep(sweep)
    return SweepDriver(cfg, **kwargs).run()
