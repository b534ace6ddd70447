"""The private third-party internals starx relies on, fenced here and nowhere else.

Each is pinned from above in pyproject.toml (``submitit<1.6``, ``optuna<6``) and covered by a CPU
test (tests/test_launch.py: the requeue path; tests/test_sweep.py: the study). When a pin is
raised, this is the file to check.

- submitit (1.5): a job that requeues *itself* after starx's own preemption handling goes through
  submitit's checkpoint machinery: ``SignalHandler.has_timed_out`` (needs ``_start_time``),
  ``DelayedSubmission._timeout_countdown``, ``job_environment._checkpoint`` and
  ``JobEnvironment._requeue`` (SLURM: ``scontrol requeue``; locally: exit code 144, which
  submitit's local controller restarts).
- optuna (4, 5): a running trial's user attributes are set through the storage
  (``study._storage.set_trial_user_attr``) and a frozen trial's storage id is ``_trial_id``;
  the public ``Trial.set_user_attr`` needs a live Trial object, which a resumed driver has not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional


# ----------------------------------------------------------------------------- submitit
@dataclass
class RequeueDecision:
    requeue: bool  # False: the job timed out more often than max_requeues allows
    timed_out: bool  # the job reached its time limit (counts against max_requeues)
    countdown: int  # timeouts left after this one
    reason: str = ""  # why not (or why submitit refused to write the resubmission)


def submitit_prepare_requeue(env: Any, start_time: float) -> tuple[RequeueDecision, Any]:
    """Decide whether this submitit job may requeue itself, and write its resubmission pickle.

    ``env``: ``submitit.JobEnvironment()``; ``start_time``: when the job started (time.time()).
    Returns the decision and an opaque token for :func:`submitit_requeue`.
    """
    from submitit.core import job_environment as je
    from submitit.core.utils import DelayedSubmission

    paths = env.paths
    delayed = DelayedSubmission.load(paths.submitted_pickle)
    handler = je.SignalHandler(env, paths, delayed)
    handler._start_time = start_time
    timed_out = bool(handler.has_timed_out())
    countdown = delayed._timeout_countdown - int(timed_out)
    if countdown < 0:
        return RequeueDecision(False, timed_out, countdown,
                               f"timed out more than {delayed._timeout_countdown} times"), None
    reason = je._checkpoint(delayed, paths.submitted_pickle, countdown)
    if reason:
        return RequeueDecision(False, timed_out, countdown, str(reason)), None
    return RequeueDecision(True, timed_out, countdown), countdown


def submitit_requeue(env: Any, token: Any) -> None:
    """Ask the scheduler to requeue this job (SLURM: scontrol requeue; local: sys.exit(144))."""
    env._requeue(token)


def uncompleted_job_error() -> type[Exception]:
    from submitit.core.utils import UncompletedJobError

    return UncompletedJobError


# ----------------------------------------------------------------------------- optuna
def set_trial_user_attr(study: Any, trial_id: int, key: str, value: Any) -> None:
    """A user attribute on any trial of the study, by storage id (live Trial object or not)."""
    study._storage.set_trial_user_attr(trial_id, key, value)


def trial_id(trial: Any) -> int:
    """The storage id of a Trial or FrozenTrial (``number`` counts within the study; this is global)."""
    tid: Optional[int] = getattr(trial, "_trial_id", None)
    if tid is None:
        raise AttributeError(f"{type(trial).__name__} has no _trial_id (optuna changed its internals)")
    return tid
