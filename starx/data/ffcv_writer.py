"""FFCV's DatasetWriter with a rich progress bar and worker failures turned into DataError.

Upstream, a worker that raises (say, on a corrupt JPEG) dies silently and the
parent polls its progress counter forever; here the parent watches the workers.
"""

from __future__ import annotations

import ctypes
import queue
import time
from multiprocessing import Process, Queue, Value

from ffcv.writer import DatasetWriter, worker_job_indexed_dataset

from .errors import DataError

_POLL_S = 0.05


def _die_with_parent() -> None:
    """SIGTERM ends this worker (not the parent's handler, inherited through fork), and on Linux
    it gets SIGKILL when the process that started it dies (kill -9 included), instead of waiting
    forever on a queue nobody reads."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _guarded_job(errors: Queue, *args) -> None:
    """Run FFCV's worker loop; report any exception's text to the parent, then exit non-zero."""
    _die_with_parent()
    try:
        worker_job_indexed_dataset(*args)
    except BaseException as e:  # noqa: BLE001 - everything must reach the parent
        errors.put(str(e) if isinstance(e, DataError) else f"{type(e).__name__}: {e}")
        raise SystemExit(1) from e


class GuardedWriter(DatasetWriter):
    def __init__(self, fname, fields, *, page_size, num_workers, show_progress=True,
                 description="writing", stop=None):
        super().__init__(fname, fields, page_size=page_size, num_workers=num_workers)
        self.show_progress = show_progress
        self.description = description
        self.stop = stop or (lambda: None)  # raises to abandon the write (a SIGTERM arrived)

    def _write_common(self, num_samples, queue_content, work_fn, extra_worker_args):
        if work_fn is not worker_job_indexed_dataset:
            raise NotImplementedError("GuardedWriter supports indexed datasets only")
        from ffcv.memory_allocator import MemoryAllocator

        self.num_samples = num_samples
        self.prepare()
        todo, allocations, errors = Queue(), Queue(), Queue()
        for chunk in queue_content:
            todo.put(chunk)
        for _ in range(self.num_workers):
            todo.put(None)  # one stop token per worker
        done = Value(ctypes.c_uint64, 0)
        allocator = MemoryAllocator(self.fname, self.data_region_start, self.page_size)
        args = (errors, todo, self.metadata_sm, self.metadata_type, self.fields,
                allocator, done, allocations, *extra_worker_args)
        workers = [Process(target=_guarded_job, args=args, daemon=True)
                   for _ in range(self.num_workers)]
        try:
            for p in workers:
                p.start()
            self._wait(workers, done, errors)
            allocation_list = []
            for _ in workers:
                allocation_list.extend(allocations.get())
            for p in workers:
                p.join()
            self.finalize(allocation_list)
        finally:
            for p in workers:
                if p.is_alive():
                    p.terminate()
                    p.join(timeout=10)
                if p.is_alive():
                    p.kill()
                    p.join()
            # After a failure the queue may hold chunks nobody will read; without this its
            # feeder thread blocks interpreter exit forever.
            todo.cancel_join_thread()
            self.metadata_sm.close()
            self.metadata_sm.unlink()

    def _wait(self, workers, done, errors) -> None:
        """Show progress until every sample is written; raise DataError if a worker fails."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("images"), TimeRemainingColumn())
        with Progress(*columns, disable=not self.show_progress, transient=True) as bar:
            task = bar.add_task(self.description, total=self.num_samples)
            while done.value < self.num_samples:
                self.stop()
                failed = [p for p in workers if p.exitcode not in (None, 0)]
                if failed:
                    try:
                        message = errors.get(timeout=2.0)
                    except queue.Empty:
                        message = f"a writer process died (exit code {failed[0].exitcode})"
                    raise DataError(message)
                bar.update(task, completed=done.value)
                time.sleep(_POLL_S)
            bar.update(task, completed=done.value)
