"""Preemption signals: a handler only sets a flag; the training loop saves at the next step boundary.

SLURM sends a signal some time before it kills a job (``--signal``); saving inside the
handler could catch an optimizer step half-way, so the loop polls ``preempt_requested()``
between steps, writes its checkpoint, and raises ``Preempted``. Launchers catch
``Preempted`` and requeue the job.

Ctrl-C (SIGINT) is the same request from a terminal: the first saves at the next step boundary
(status preempted), a second one aborts at once (``KeyboardInterrupt``, nothing saved).
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Callable

log = logging.getLogger(__name__)

DEFAULT_SIGNALS = ("SIGUSR1", "SIGUSR2", "SIGTERM")

_requested = threading.Event()
_received: list[str] = []


class Preempted(Exception):
    """Raised by the engine after it saved a checkpoint because a preemption signal arrived."""

    def __init__(self, signame: str, step: int):
        super().__init__(f"preempted by {signame}: checkpoint saved at step {step}")
        self.signame = signame
        self.step = step


def _handler(signum, frame):  # noqa: ARG001 - signal handler signature
    name = signal.Signals(signum).name
    if name == "SIGINT" and "SIGINT" in _received:
        raise KeyboardInterrupt
    if name == "SIGINT":
        log.warning("Ctrl-C: saving a checkpoint at the next step boundary (Ctrl-C again to stop without saving)")
    _received.append(name)
    _requested.set()
    log.warning("received %s: will checkpoint at the next step boundary", name)


def install(names=(*DEFAULT_SIGNALS, "SIGINT")) -> Callable[[], None]:
    """Route the given signals to the flag. Only possible from the main thread. Returns the undo
    (the handlers that were there before)."""
    if threading.current_thread() is not threading.main_thread():
        log.debug("not in the main thread: preemption signals not installed")
        return lambda: None
    before = {}
    for name in names:
        signum = getattr(signal, name)
        before[signum] = signal.signal(signum, _handler)

    def undo() -> None:
        if threading.current_thread() is threading.main_thread():
            for signum, handler in before.items():
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)

    return undo


def preempt_requested() -> bool:
    return _requested.is_set()


def last_signal() -> str:
    return _received[-1] if _received else "signal"


def reset() -> None:
    _requested.clear()
    _received.clear()
