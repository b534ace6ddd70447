"""Issue 16 on a 2-GPU machine, everything through the `starx` command line (run by bench/multi_gpu.sh).

    python3 bench/multi_gpu.py --out OUT [--work /tmp/starx-mg] [--budget-s 480] [--parts abdc]
    python3 bench/multi_gpu.py --cpu --out OUT     # the same steps on CPU at toy sizes (gloo): checks this script

a  placement: `starx sweep` of 3 quick-start trials, -j 3, one GPU each (launch.subprocess.gpus_per_node=1)
   on 2 GPUs: two run at once on different GPUs, the third waits for a free one. Evidence: each
   trial's result.json `devices` (CUDA_VISIBLE_DEVICES, the GPU's uuid read by torch inside the
   trial), the job start/finish times, and nvidia-smi's compute processes sampled once a second.
b  scaling: STAR-B k=4 pretraining at 192 px from a generated JPEG ImageFolder through the FFCV
   loader, `starx run` with launch.kind=subprocess (submitit tasks, the real one-node DDP path) on
   1 GPU (batch 256) and 2 GPUs (256 each), eager: images/s after the first log lines, scaling
   efficiency, the time rank 0 waited for the loader (data_wait_frac) and nvidia-smi utilisation.
c  compile modes under 2-GPU DDP: compile=true with compile_mode default and reduce-overhead
   (CUDA graphs), log_every=1: the first 10 losses side by side, images/s.
d  resume 2 -> 1: b's 1-GPU spec (global batch 256) on 2 GPUs, cancelled (`starx cancel`: SIGTERM,
   a checkpoint at the next multiple of 10 steps), then the same spec on 1 GPU continues it; its
   losses against b's uninterrupted 1-GPU run.

Writes OUT/summary.json, OUT/summary.md, OUT/log.txt, OUT/runs.tar.gz (run directories without
checkpoints, the sweep, nvidia-smi samples) and OUT/env.txt. Each part has a time limit and the
whole stays within --budget-s; a part that fails is recorded and the next one runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PY = sys.executable
T0 = time.time()


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.cpu = args.cpu
        self.work = Path(args.work)
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.deadline = T0 + args.budget_s
        self.logf = open(self.out / "log.txt", "a", buffering=1)
        self.summary: dict[str, Any] = {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "mode": "cpu" if self.cpu else "gpu",
            "commit": _git_commit(), "parts": {}}
        self.samplers: list[subprocess.Popen] = []
        if self.cpu:  # toy sizes: the code paths of the GPU run in a few minutes on 2 cores
            self.gpus = 2
            self.per_gpu_batch, self.steps, self.workers = 32, 20, 1
            self.big_spec = ROOT / "specs" / "quickstart.yaml"
            self.model = ["model.img_size=32", "model.patch_size=8", "model.cluster_size=2", "model.in_chans=3",
                          "model.depth=2", "model.embed_dim=32", "model.decoder_dim=32", "model.decoder_depth=1",
                          "model.decoder_heads=2", "cpu_threads=1", "optim.base_lr=1e-3"]
            self.device = "cpu"
            self.classes = 4
        else:
            self.gpus = 2
            self.per_gpu_batch, self.steps, self.workers = 256, 40, 14
            self.big_spec = ROOT / "specs" / "star_base_in1k.yaml"
            self.model = []
            self.device = "cuda"
            self.classes = 100
        self.images = self.per_gpu_batch * self.steps  # one epoch = `steps` steps on 1 GPU
        self.beton = self.work / "images.beton"

    # ------------------------------------------------------------------ plumbing
    def log(self, msg: str) -> None:
        line = f"[{time.time() - T0:6.1f}s] {msg}"
        print(line, flush=True)
        self.logf.write(line + "\n")

    def left(self) -> float:
        return self.deadline - time.time()

    def sh(self, argv: list[str], *, timeout: float, name: str, env: Optional[dict] = None) -> int:
        """Run a command (its own process group), its output into work/logs/<name>.log; rc, or 124 on timeout."""
        timeout = max(5.0, min(timeout, self.left()))
        logs = self.work / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.log(f"$ {' '.join(argv)}   (limit {timeout:.0f} s)")
        t0 = time.time()
        with open(logs / f"{name}.log", "ab") as f:
            p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=env, start_new_session=True)
            try:
                rc = p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.log(f"{name}: time limit reached, stopping it")
                _kill_group(p)
                rc = 124
        tail = (logs / f"{name}.log").read_text(errors="replace").splitlines()[-6:]
        self.log(f"{name}: rc {rc} after {time.time() - t0:.0f} s; last lines:\n    " + "\n    ".join(tail))
        return rc

    def starx(self, *argv: str) -> list[str]:
        return [PY, "-m", "starx.cli", *argv]

    def part(self, key: str, fn, min_left: float) -> None:
        if self.left() < min_left:
            self.log(f"part {key}: skipped, {self.left():.0f} s left (needs about {min_left:.0f})")
            self.summary["parts"][key] = {"skipped": f"time budget ({self.left():.0f} s left)"}
            return
        t0 = time.time()
        try:
            self.summary["parts"][key] = fn()
        except Exception as e:  # noqa: BLE001 - record it, go on with the next part
            import traceback

            self.log(f"part {key} failed: {traceback.format_exc()}")
            self.summary["parts"][key] = {"error": f"{type(e).__name__}: {e}"}
        self.summary["parts"][key]["wall_s"] = round(time.time() - t0, 1)
        self.write_summary()

    def write_summary(self) -> None:
        (self.out / "summary.json").write_text(json.dumps(self.summary, indent=1, default=str) + "\n")

    # ------------------------------------------------------------------ machine
    def environment(self) -> None:
        lines = [f"date {self.summary['date']}", f"python {sys.version.split()[0]}", f"cwd {ROOT}"]
        for cmd in (["nvidia-smi", "-L"], ["nvidia-smi", "topo", "-m"], ["nproc"],
                    [PY, "-c", "import torch, numba, numpy; print('torch', torch.__version__, 'cuda', torch.version.cuda, "
                               "'gpus', torch.cuda.device_count(), 'numba', numba.__version__, 'numpy', numpy.__version__)"],
                    [PY, "-c", "import optuna, submitit, typer, omegaconf, ffcv; print('optuna', optuna.__version__, "
                               "'submitit', submitit.__version__, 'typer', typer.__version__, 'omegaconf', "
                               "omegaconf.__version__, 'ffcv', ffcv.__file__)"]):
            try:
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
                lines.append(f"$ {' '.join(cmd[:3])}\n{out.stdout.strip()}{out.stderr.strip()[-500:]}")
            except (OSError, subprocess.TimeoutExpired) as e:
                lines.append(f"$ {' '.join(cmd[:3])}: {e}")
        env = {k: os.environ.get(k) for k in ("NCCL_NVLS_ENABLE", "TORCH_SYMM_MEM_DISABLE_MULTICAST",
                                              "NVSHMEM_DISABLE_NVLS", "CUDA_VISIBLE_DEVICES", "STARX_GPUS", "PYTHONPATH")}
        lines.append(f"env {json.dumps(env)}")
        (self.out / "env.txt").write_text("\n".join(lines) + "\n")
        self.summary["environment"] = lines[:4] + [lines[-1]]
        self.log("\n".join(lines))

    def start_samplers(self) -> None:
        if self.cpu or shutil.which("nvidia-smi") is None:
            return
        for name, argv in (
            ("gpu_util", ["nvidia-smi", "--query-gpu=timestamp,index,uuid,utilization.gpu,memory.used",
                          "--format=csv,noheader,nounits", "-lms", "500"]),
            ("gpu_apps", ["nvidia-smi", "--query-compute-apps=gpu_uuid,pid,used_gpu_memory",
                          "--format=csv,noheader,nounits", "-l", "1"]),
        ):
            f = open(self.work / f"{name}.csv", "w")
            self.samplers.append(subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, start_new_session=True))

    def stop_samplers(self) -> None:
        for p in self.samplers:
            _kill_group(p)

    # ------------------------------------------------------------------ data
    def start_images(self) -> Optional[subprocess.Popen]:
        """Generate the JPEG ImageFolder (bench/loader_bench.py's generator) in the background, while
        part a's sweep runs; None when the .beton is already there."""
        if self.beton.exists():
            return None
        folder = self.work / "images"
        shutil.rmtree(folder, ignore_errors=True)
        code = ("import sys, json, pathlib; from bench.loader_bench import make_imagefolder; print(json.dumps("
                "make_imagefolder(pathlib.Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))))")
        argv = [PY, "-c", code, str(folder), str(self.images), str(self.classes), str(os.cpu_count() or 2)]
        self.log(f"$ {' '.join(argv[:2])}... (generating {self.images} JPEGs in the background)")
        self._images_t0 = time.time()
        return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True, env={**os.environ, "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}"})

    def make_data(self, gen: Optional[subprocess.Popen]) -> dict:
        """Wait for the JPEGs, then build them into a .beton with `starx data build`."""
        if gen is None:
            return {"images": self.images, "reused": str(self.beton)}
        try:
            text, _ = gen.communicate(timeout=max(5.0, self.left() - 120))
        except subprocess.TimeoutExpired:
            _kill_group(gen)
            raise RuntimeError("generating the JPEGs took too long") from None
        if gen.returncode != 0:
            raise RuntimeError(f"generating the JPEGs failed: {text[-1000:]}")
        gen_s = time.time() - self._images_t0
        mean = float(text.strip().splitlines()[-1])
        t0 = time.time()
        rc = self.sh(self.starx("data", "build", f"imagefolder:{self.work / 'images'}", str(self.beton), "--write-mode",
                                "jpg", "--max-resolution", "256", "--no-progress"), timeout=300, name="data_build")
        if rc != 0:
            raise RuntimeError(f"starx data build failed (rc {rc})")
        return {"images": self.images, "classes": self.classes, "mean_jpeg_kb": round(mean / 1024, 1),
                "generate_s": round(gen_s, 1), "build_s": round(time.time() - t0, 1),
                "beton_mb": round(self.beton.stat().st_size / 1e6, 1)}

    # ------------------------------------------------------------------ a: placement
    def sweep_placement(self) -> dict:
        out_dir = self.work / "results_a"
        overrides = [f"output_dir={out_dir}", f"data.cache_dir={self.work / 'cache'}", f"device={self.device}",
                     "finetune.enabled=false", "eval.pixel_baseline=false", "eval.knn.enabled=false",
                     "eval.linear_probe.enabled=false", "pretrain.epochs=1", "log_every=20",
                     "launch.kind=subprocess", "launch.subprocess.gpus_per_node=1"]
        if self.cpu:
            overrides += ["pretrain.epochs=0.1", "model.depth=2", "model.embed_dim=32", "model.decoder_dim=32",
                          "model.decoder_depth=1", "model.decoder_heads=2", "cpu_threads=1"]
        sweep = {"name": "mg_placement", "spec": str(ROOT / "specs" / "quickstart.yaml"), "overrides": overrides,
                 "params": {"seed": [0, 1, 2]}, "objective": {"metric": "pretrain_loss", "direction": "minimize"},
                 "sampler": "grid", "n_parallel": 3, "poll_s": 1, "max_failures": 3}
        path = self.work / "sweep_a.yaml"
        path.write_text(json.dumps(sweep))
        env = dict(os.environ)
        if self.cpu:
            env["STARX_GPUS"] = "0,1"  # a fake pool: the placement runs, the trials train on CPU
        rc = self.sh(self.starx("sweep", str(path), "-j", "3"), timeout=200, name="a_sweep", env=env)
        trials = (_read_json(out_dir / "mg_placement" / "trials.json") or {}).get("trials", [])
        rows = []
        for t in trials:
            rd = Path(t["run_dir"]) if t.get("run_dir") else None
            result = _read_json(rd / "result.json") if rd else None
            events = _read_jsonl(rd / "launch" / "events.jsonl") if rd else []
            start = next((e for e in events if e.get("event") == "start"), {})
            end = next((e for e in events if e.get("event") in ("finished", "failed")), {})
            ranks = ((result or {}).get("devices") or {}).get("ranks") or [{}]
            rows.append({"trial": t["number"], "state": t["state"], "gpus": t.get("gpus"), "pid": start.get("pid"),
                         "CUDA_VISIBLE_DEVICES": ((result or {}).get("devices") or {}).get("CUDA_VISIBLE_DEVICES"),
                         "device": ranks[0].get("device"), "name": ranks[0].get("name"), "uuid": ranks[0].get("uuid"),
                         "start": start.get("time"), "end": end.get("time"),
                         "pretrain_loss": ((result or {}).get("metrics") or {}).get("pretrain_loss")})
        overlaps = []
        for i, r in enumerate(rows):
            for o in rows[i + 1:]:
                if r["start"] and o["start"] and r["end"] and o["end"] and r["start"] < o["end"] and o["start"] < r["end"]:
                    overlaps.append({"trials": [r["trial"], o["trial"]], "gpus": [r["CUDA_VISIBLE_DEVICES"],
                                                                                  o["CUDA_VISIBLE_DEVICES"]],
                                     "uuids": [r["uuid"], o["uuid"]],
                                     "disjoint": r["CUDA_VISIBLE_DEVICES"] != o["CUDA_VISIBLE_DEVICES"]})
        seen_by_smi = _smi_pids(self.work / "gpu_apps.csv")
        for r in rows:
            r["nvidia_smi_gpu_uuids_of_pid"] = sorted(seen_by_smi.get(str(r["pid"]), []))
        ok = (rc == 0 and len(rows) == 3 and all(r["state"] == "COMPLETE" for r in rows) and overlaps
              and all(o["disjoint"] for o in overlaps))
        return {"rc": rc, "ok": bool(ok), "trials": rows, "overlapping_pairs": overlaps,
                "driver_log_waits": _grep(self.work / "logs" / "a_sweep.log", "waits for")}

    # ------------------------------------------------------------------ b, c, d: STAR-B runs
    def big(self, out: str, gpus: int, global_batch: int, steps: int, *extra: str) -> list[str]:
        epochs = steps * global_batch / self.images
        return [f"output_dir={self.work / out}", f"device={self.device}", f"data.dataset={self.beton}",
                f"data.eval_dataset={self.beton}", f"data.cache_dir={self.work / 'cache'}",
                f"data.num_workers={self.workers}", f"data.batch_size={global_batch}", f"pretrain.epochs={epochs}",
                "pretrain.warmup_epochs=0.1", "finetune.enabled=false", "eval.knn.enabled=false",
                "eval.linear_probe.enabled=false", "eval.pixel_baseline=false", "checkpoint.every_steps=100000",
                "checkpoint.every_minutes=0", "launch.kind=subprocess", "launch.subprocess.timeout_min=30",
                f"launch.subprocess.tasks_per_node={gpus}", f"launch.subprocess.gpus_per_node={0 if self.cpu else gpus}",
                *self.model, *extra]

    def run_dir(self, overrides: list[str]) -> Path:
        from starx.api import show
        from starx.spec import load_spec

        _, _, run_id = show(str(self.big_spec), overrides)
        cfg = load_spec(str(self.big_spec), overrides)
        return Path(cfg.output_dir) / cfg.experiment / run_id

    def starx_run(self, name: str, overrides: list[str], timeout: float) -> dict:
        rc = self.sh(self.starx("run", str(self.big_spec), *overrides, "--follow"), timeout=timeout, name=name)
        rd = self.run_dir(overrides)
        return {"rc": rc, "run_dir": str(rd), **_run_stats(rd, self.work / "gpu_util.csv")}

    def scaling(self) -> dict:
        b = self.per_gpu_batch
        one = self.starx_run("b_1gpu", self.big("results_b", 1, b, self.steps, "log_every=5"), timeout=150)
        two = self.starx_run("b_2gpu", self.big("results_b", 2, 2 * b, self.steps, "log_every=5"), timeout=150)
        out = {"per_gpu_batch": b, "steps": self.steps, "1gpu": one, "2gpu": two}
        if one.get("images_per_s") and two.get("images_per_s"):
            out["scaling_efficiency"] = round(two["images_per_s"] / (2 * one["images_per_s"]), 3)
        return out

    def compile_modes(self) -> dict:
        b = 2 * self.per_gpu_batch
        runs = {}
        for mode in ("default", "reduce-overhead"):
            # b's 2-GPU spec (same data, batches and lr schedule), compiled, every loss logged
            runs[mode] = self.starx_run(f"c_{mode}", self.big("results_c", 2, b, self.steps, "log_every=1",
                                                              "compile=true", f"compile_mode={mode}"), timeout=240)
        la, lb = runs["default"].get("losses", {}), runs["reduce-overhead"].get("losses", {})
        first = sorted(set(la) & set(lb))[:10]
        rel = [abs(la[s] - lb[s]) / max(abs(la[s]), 1e-12) for s in first]
        out = {"global_batch": b, "steps": self.steps, "runs": runs,
               "first_losses": [{"step": s, "default": la[s], "reduce_overhead": lb[s]} for s in first],
               "max_rel_diff_first10": max(rel) if rel else None}
        warn = _grep(Path(runs["reduce-overhead"]["run_dir"]) / "train.log", "compile_mode=")
        out["warning_in_train_log"] = warn[:2]
        eager = _losses(Path(self.summary["parts"].get("b", {}).get("2gpu", {}).get("run_dir", "/nonexistent")))
        out["eager_2gpu_same_batch"] = {str(s): eager[s] for s in sorted(eager) if s <= 10}
        # a yardstick: how far compiled (default mode) is from eager on the same batches
        out["eager_vs_default_rel"] = {str(s): round(abs(eager[s] - la[s]) / max(abs(eager[s]), 1e-12), 6)
                                       for s in sorted(set(eager) & set(la)) if s <= 10}
        # Whether reduce-overhead is safe under DDP: the same Inductor kernels replayed as
        # CUDA graphs give default mode's losses unless the graphs miss DDP's gradient all-reduce or
        # replay stale inputs (then the losses part from step 2 on).
        ro = runs["reduce-overhead"]
        if 124 in (ro.get("rc"), runs["default"].get("rc")):
            out["verdict"] = "undecided: a run was stopped by the time limit (run part c alone: --parts c)"
        elif ro.get("status") != "done":
            out["verdict"] = f"error: reduce-overhead under DDP did not finish ({ro.get('status')}, rc {ro.get('rc')}: {ro.get('error')})"
        elif runs["default"].get("status") != "done" or out["max_rel_diff_first10"] is None:
            out["verdict"] = "undecided: the default-mode run did not finish"
        elif out["max_rel_diff_first10"] <= 1e-3:
            out["verdict"] = f"safe: the first {len(first)} losses match default mode (max rel diff {out['max_rel_diff_first10']:.2e})"
        else:
            out["verdict"] = f"error: the losses part from default mode's (max rel diff {out['max_rel_diff_first10']:.2e})"
        return out

    def resume(self) -> dict:
        b = self.per_gpu_batch
        # b's 1-GPU spec (log_every is not part of a run's identity), on 2 processes; every step logged,
        # so that the cancel lands long before the end
        over = self.big("results_d", 2, b, self.steps, "log_every=1")
        rd = self.run_dir(over)
        shutil.rmtree(rd, ignore_errors=True)
        from starx.launch.control import cancel_run

        name = "d_2gpu_stopped"
        logs = self.work / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        argv = self.starx("run", str(self.big_spec), *over, "--follow")
        self.log(f"$ {' '.join(argv)}   (cancelled at its first log line)")
        with open(logs / f"{name}.log", "ab") as f:
            p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
            limit = time.time() + min(150, self.left())
            cancelled = None
            while p.poll() is None and time.time() < limit:
                steps = [r.get("step", 0) for r in _read_jsonl(rd / "metrics.jsonl") if "loss" in r]
                if steps and cancelled is None:  # what `starx cancel RUN` does: SIGTERM to the submitit job
                    cancelled = max(steps)
                    done = cancel_run(rd, wait_s=90)
                    self.log(f"cancelled at step {cancelled}: {done.action}; now {done.state}")
                time.sleep(0.1)
            if p.poll() is None:
                _kill_group(p)
        first = _read_json(rd / "result.json") or {}
        stopped_at = max((r.get("step", 0) for r in _read_jsonl(rd / "metrics.jsonl") if "loss" in r), default=0)
        over1 = [o for o in over if not o.startswith("launch.subprocess.")]
        over1 += ["launch.subprocess.tasks_per_node=1", f"launch.subprocess.gpus_per_node={0 if self.cpu else 1}"]
        assert self.run_dir(over1) == rd, "the launch section changed the run id"
        second = self.starx_run("d_1gpu_resumed", over1, timeout=150)
        ref = _losses(Path(self.summary["parts"].get("b", {}).get("1gpu", {}).get("run_dir", "/nonexistent")))
        got = second.get("losses", {})
        steps = [r.get("step") for r in _read_jsonl(rd / "metrics.jsonl") if r.get("stage") == "pretrain" and "loss" in r]
        rel = {s: abs(got[s] - ref[s]) / max(abs(ref[s]), 1e-12) for s in sorted(set(got) & set(ref))}
        return {"first": {"status": first.get("status"), "world_size": first.get("world_size"),
                          "error": (first.get("error") or "")[:300], "cancel_seen_at_step": cancelled,
                          "last_logged_step": stopped_at},
                "resumed": second, "steps_logged": steps,
                "each_step_once": steps == sorted(set(steps)),
                "reference": "b 1gpu (uninterrupted, same spec)",
                "rel_diff_vs_reference": {str(k): round(v, 6) for k, v in rel.items()},
                "max_rel_diff": max(rel.values()) if rel else None}

    # ------------------------------------------------------------------ report
    def report(self) -> None:
        s, P = self.summary, self.summary["parts"]
        md = [f"# bench/multi_gpu.sh ({s['mode']}), {s['date']}, commit {s['commit']}", ""]
        md += [f"    {line}" for line in s.get("environment", [])] + [""]
        a = P.get("a", {})
        md += ["## a: one trial per GPU (starx sweep -j 3, 3 trials, gpus_per_node=1)", "",
               "| trial | state | gpus (driver) | CUDA_VISIBLE_DEVICES (in trial) | GPU (torch) | uuid "
               "| nvidia-smi uuid of its pid | start | end |",
               "|---|---|---|---|---|---|---|---|---|"]
        t0 = min((r["start"] for r in a.get("trials", []) if r.get("start")), default=0)
        for r in a.get("trials", []):
            md.append(f"| {r['trial']} | {r['state']} | {r['gpus']} | {r['CUDA_VISIBLE_DEVICES']} | {r['name'] or r['device']} "
                      f"| {r['uuid']} | {', '.join(r['nvidia_smi_gpu_uuids_of_pid']) or '-'} "
                      f"| {_rel(r['start'], t0)} | {_rel(r['end'], t0)} |")
        md += ["", f"overlapping pairs: {a.get('overlapping_pairs')}; ok: {a.get('ok')}; "
               f"driver: {a.get('driver_log_waits')}", ""]
        b = P.get("b", {})
        md += ["## b: STAR-B k=4, 192 px, FFCV from JPEG, eager, `starx run` (submitit tasks)", "",
               "| GPUs | global batch | images/s (steady) | per GPU | data wait (rank 0) | GPU util (nvidia-smi) | peak mem GB "
               "| wall s | GPUs (CUDA_VISIBLE_DEVICES: uuid per rank) |",
               "|---|---|---|---|---|---|---|---|---|"]
        for k, n in (("1gpu", 1), ("2gpu", 2)):
            r = b.get(k, {})
            md.append(f"| {n} | {n * self.per_gpu_batch} | {_f(r.get('images_per_s'))} | "
                      f"{_f((r.get('images_per_s') or 0) / n)} | {_pct(r.get('data_wait_frac'))} | {_pct(r.get('gpu_util'), 1)} "
                      f"| {_f(r.get('mem_gb'), 1)} | {_f(r.get('wall_s'))} | {_devices(r.get('devices'))} |")
        md += ["", f"scaling efficiency: {b.get('scaling_efficiency')}", ""]
        c = P.get("c", {})
        md += ["## c: compile modes under 2-GPU DDP (global batch "
               f"{c.get('global_batch')})", "", "| step | default | reduce-overhead |", "|---|---|---|"]
        for r in c.get("first_losses", []):
            md.append(f"| {r['step']} | {r['default']:.6f} | {r['reduce_overhead']:.6f} |")
        runs = c.get("runs", {})
        md += ["", f"**verdict: {c.get('verdict')}**", f"eager 2-GPU run of part b, the same spec uncompiled: "
               f"{c.get('eager_2gpu_same_batch')} (relative difference to default mode: {c.get('eager_vs_default_rel')})",
               f"max relative difference (first 10): {c.get('max_rel_diff_first10')}; images/s default "
               f"{_f(runs.get('default', {}).get('images_per_s'))}, reduce-overhead "
               f"{_f(runs.get('reduce-overhead', {}).get('images_per_s'))}; rc {runs.get('default', {}).get('rc')} / "
               f"{runs.get('reduce-overhead', {}).get('rc')}", ""]
        d = P.get("d", {})
        md += ["## d: 2 processes cancelled, resumed on 1 GPU", "",
               f"first: {d.get('first')}", f"resumed: status {d.get('resumed', {}).get('status')}, world size "
               f"{d.get('resumed', {}).get('world_size')}; each step logged once: {d.get('each_step_once')}; "
               f"max relative loss difference against the uninterrupted 1-GPU run: {d.get('max_rel_diff')}",
               f"per logged step: {d.get('rel_diff_vs_reference')}", ""]
        (self.out / "summary.md").write_text("\n".join(md) + "\n")

    def pack(self) -> None:
        """Run directories (no checkpoints), the sweep, logs and nvidia-smi samples into OUT/runs.tar.gz."""
        def small(info: tarfile.TarInfo) -> Optional[tarfile.TarInfo]:
            parts = Path(info.name).parts
            if "checkpoints" in parts or info.name.endswith((".pt", ".beton", ".pkl")) or "images" in parts[:2]:
                return None
            return info if info.size < 20_000_000 else None

        with tarfile.open(self.out / "runs.tar.gz", "w:gz") as tar:
            for p in sorted(self.work.iterdir()):
                if p.name not in ("images", "cache") and not p.name.endswith(".beton"):
                    tar.add(p, arcname=f"multi_gpu/{p.name}", filter=small)


# ---------------------------------------------------------------------- helpers
def _kill_group(p: subprocess.Popen) -> None:
    try:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired, PermissionError):
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        p.wait()


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip() or os.environ.get("STARX_COMMIT", "unknown")
    except (OSError, subprocess.TimeoutExpired):
        return os.environ.get("STARX_COMMIT", "unknown")


def _read_json(path: Path) -> Optional[dict]:
    try:
        data = json.loads(Path(path).read_text())
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def _read_jsonl(path: Path) -> list[dict]:
    out = []
    try:
        for line in Path(path).read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
    except OSError:
        pass
    return out


def _losses(rd: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in _read_jsonl(rd / "metrics.jsonl") if r.get("stage") == "pretrain" and "loss" in r}


def _run_stats(rd: Path, util_csv: Path) -> dict:
    """images/s and data wait over the log lines after the first two (start-up, compilation), from metrics.jsonl."""
    result = _read_json(rd / "result.json") or {}
    lines = [r for r in _read_jsonl(rd / "metrics.jsonl") if r.get("stage") == "pretrain" and "loss" in r]
    steady = lines[2:] if len(lines) > 3 else lines
    out: dict[str, Any] = {"status": result.get("status"), "world_size": result.get("world_size"),
                           "wall_s": result.get("wall_time_s"), "error": (result.get("error") or "")[:300] or None,
                           "devices": result.get("devices"), "losses": {r["step"]: r["loss"] for r in lines}}
    if steady:
        out["images_per_s"] = round(statistics.median(r["images_per_s"] for r in steady), 1)
        waits = [r["data_wait_frac"] for r in steady if "data_wait_frac" in r]
        out["data_wait_frac"] = round(statistics.mean(waits), 4) if waits else None
        out["data_wait_frac_max"] = round(max(waits), 4) if waits else None
        out["mem_gb"] = max((r.get("mem_gb") or 0) for r in steady) or None
        t0 = lines[lines.index(steady[0]) - 1]["time"] if steady[0] is not lines[0] else steady[0]["time"]
        out["gpu_util"] = _util(util_csv, t0, steady[-1]["time"], (result.get("devices") or {}).get("ranks") or [])
        out["first_log_s"] = round(lines[0]["time"] - (result.get("started") or lines[0]["time"]), 1)
    return out


def _util(csv: Path, t0: float, t1: float, ranks: list) -> Optional[float]:
    """Mean nvidia-smi utilization.gpu of the run's GPUs (by uuid) between t0 and t1 (unix times)."""
    uuids = {r.get("uuid") for r in ranks if r.get("uuid")}
    vals = []
    try:
        text = csv.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 5:
            continue
        try:
            ts = datetime.strptime(parts[0], "%Y/%m/%d %H:%M:%S.%f").timestamp()
        except ValueError:
            continue
        if t0 <= ts <= t1 and (not uuids or parts[2] in uuids):
            try:
                vals.append(float(parts[3]))
            except ValueError:
                pass
    return round(statistics.mean(vals) / 100, 3) if vals else None


def _smi_pids(csv: Path) -> dict[str, set]:
    out: dict[str, set] = {}
    try:
        for line in csv.read_text().splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) >= 2 and parts[0].startswith("GPU-"):
                out.setdefault(parts[1], set()).add(parts[0])
    except OSError:
        pass
    return out


def _grep(path: Path, needle: str) -> list[str]:
    try:
        return [ln.strip()[-300:] for ln in path.read_text(errors="replace").splitlines() if needle in ln][:6]
    except OSError:
        return []


def _devices(d) -> str:
    if not d:
        return "-"
    ranks = ", ".join(f"{r.get('rank')}: {r.get('uuid') or r.get('device')}" for r in d.get("ranks") or [])
    return f"{d.get('CUDA_VISIBLE_DEVICES')!r}: {ranks}"


def _f(v, nd: int = 0) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def _pct(v, nd: int = 1) -> str:
    return "-" if v is None else f"{100 * v:.{nd}f}%"


def _rel(t, t0) -> str:
    return "-" if not t else f"{t - t0:+.1f}s"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--work", default="/tmp/starx-mg")
    p.add_argument("--cpu", action="store_true", help="toy sizes on CPU (gloo): checks this script")
    p.add_argument("--budget-s", type=float, default=480, help="stop starting parts after this long")
    p.add_argument("--parts", default="abcd")
    args = p.parse_args()
    bench = Bench(args)
    bench.work.mkdir(parents=True, exist_ok=True)
    bench.environment()
    bench.start_samplers()
    try:
        gen = bench.start_images() if set(args.parts) & set("bcd") else None  # made while part a's sweep runs
        if "a" in args.parts:
            bench.part("a", bench.sweep_placement, min_left=60)
        data = _safe(lambda: bench.make_data(gen)) if set(args.parts) & set("bcd") else {}
        bench.summary["data"] = data
        if set(args.parts) & set("bcd") and ("error" in data or not bench.beton.exists()):
            bench.log(f"no dataset: {data}; parts b, c, d skipped")
        else:
            if "b" in args.parts:
                bench.part("b", bench.scaling, min_left=120)
            if "d" in args.parts:  # before c: its compilations take the time that is left
                bench.part("d", bench.resume, min_left=90)
            if "c" in args.parts:
                bench.part("c", bench.compile_modes, min_left=150)
    finally:
        bench.stop_samplers()
        bench.summary["total_s"] = round(time.time() - T0, 1)
        bench.write_summary()
        bench.report()
        bench.pack()
        bench.log(f"done in {time.time() - T0:.0f} s: {bench.out}/summary.md")


def _safe(fn) -> dict:
    try:
        return fn()
    except Exception as e:  # noqa: BLE001
        return {"error": f"{type(e).__name__}: {e}"}


if __name__ == "__main__":
    main()
