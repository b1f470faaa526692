"""Batch generation: one run per (prompt, seed), on Ray or sequentially in-process.

`dream3d batch PROMPTS --config CONFIG` writes batch/<name>/:
  runs/<prompt-slug>-s<seed>/   a normal run folder per job
  attempts/<job>.txt            one line per attempt (pid, time), so retries are visible
  index.json                    prompt, seed, status, run dir, attempts, metrics, assets per job
  gallery.html                  the turntables, prompts and metrics side by side

Ray (`backend="ray"`) runs every job as a task declaring `num_cpus`/`num_gpus`, so Ray packs
them onto whatever the cluster has; a task whose worker dies or raises is retried up to
`retries` times (it resumes from its run's last checkpoint), then reported as failed while the
rest go on. `backend="local"` runs the same function one job at a time in this process: the
reference the tests compare Ray against. Rerunning a batch skips finished jobs and resumes
interrupted ones; every job sets torch's thread count to `cpus_per_run`, so a job gives the
same numbers on either backend.
"""
from __future__ import annotations

import dataclasses
import hashlib
import html
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from dream3d.config import RunConfig, changed_keys, load_config
from dream3d.export.config import EXPORT_FORMATS
from dream3d.kernel.atomic_io import atomic_write_text, write_json
from dream3d.kernel.schema import ConfigError
from dream3d.runs import RunDir, slugify

BACKENDS = ("ray", "local")
MAX_PROMPTS = 100_000


@dataclasses.dataclass(frozen=True)
class BatchJob:
    """One run of a batch: a prompt, a seed and per-prompt overrides (from a .jsonl line)."""

    prompt: str
    seed: int
    overrides: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """<prompt slug>-s<seed>, plus a short hash of the prompt where the slug does not spell it
        exactly ("A RED CUBE", "a red cube!", long prompts) and of the overrides where there are any,
        so that two different jobs never share a run folder."""
        slug = slugify(self.prompt)
        tag = ""
        if slug.replace("-", " ") != self.prompt:
            slug, tag = slugify(self.prompt, 30), f"-{hashlib.sha1(self.prompt.encode()).hexdigest()[:6]}"
        extra = f"-{hashlib.sha1(' '.join(self.overrides).encode()).hexdigest()[:6]}" if self.overrides else ""
        return f"{slug}{tag}-s{self.seed}{extra}"  # at most 30+7+21+7 = 65 characters: RunDir keeps all of them


@dataclasses.dataclass(frozen=True)
class BatchSpec:
    """What every job of a batch shares."""

    config: str
    overrides: tuple[str, ...]
    folder: str  # batch/<name>
    cpus_per_run: int = 1
    gpus_per_run: float = 0.0
    retries: int = 2

    def job_dir(self, job: BatchJob) -> Path:
        return Path(self.folder) / "runs" / job.name

    def attempts_file(self, job: BatchJob) -> Path:
        return Path(self.folder) / "attempts" / f"{job.name}.txt"

    def job_config(self, job: BatchJob) -> RunConfig:
        return load_config(self.config, [*self.overrides, *job.overrides, f"prompt={job.prompt}", f"seed={job.seed}",
                                         f"output.out_dir={Path(self.folder) / 'runs'}", f"output.name={job.name}",
                                         "output.progress=false"])


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2]; a clear error otherwise."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: use comma-separated integers, e.g. 0,1,2") from None
    if not seeds:
        raise ConfigError("--seeds is empty; e.g. --seeds 0,1,2")
    return seeds


def read_prompts(path: str | Path, seeds: list[int]) -> list[BatchJob]:
    """Jobs from a .txt file (one prompt per line; blank lines and # comments skipped) or a
    .jsonl file (objects with "prompt" and optionally "seed"/"seeds" and "overrides"), times
    `seeds` where a line names none. Duplicate jobs are dropped."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"prompt file {str(path)!r} does not exist")
    jobs: list[BatchJob] = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[:e.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not valid UTF-8 text (byte {e.start}); save the prompt file as UTF-8") from None
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if path.suffix == ".jsonl":
            try:
                item = json.loads(line)
                prompt = item["prompt"]
            except (json.JSONDecodeError, TypeError, KeyError):
                raise ConfigError(f"{path}:{n}: expected a JSON object with a \"prompt\", got {line[:80]!r}") from None
            line_seeds = item.get("seeds", [item["seed"]] if "seed" in item else seeds)
            overrides = item.get("overrides", [])
            if not isinstance(prompt, str) or not isinstance(overrides, list) or not all(
                    isinstance(s, int) for s in line_seeds):
                raise ConfigError(f"{path}:{n}: \"prompt\" must be a string, \"seed(s)\" integers, \"overrides\" a list")
            jobs += [BatchJob(prompt, s, tuple(str(o) for o in overrides)) for s in line_seeds]
        else:
            jobs += [BatchJob(line, s) for s in seeds]
    jobs = list(dict.fromkeys(jobs))
    names: dict[str, BatchJob] = {}
    for job in jobs:  # a 24-bit hash clash, however unlikely, must not merge two jobs into one folder
        if names.setdefault(job.name, job) != job:
            raise ConfigError(f"{path}: prompts {names[job.name].prompt!r} and {job.prompt!r} map to the same run "
                              f"folder {job.name!r}; reword one of them")
    if not jobs:
        raise ConfigError(f"{path} holds no prompts")
    if len(jobs) > MAX_PROMPTS:
        raise ConfigError(f"{path} makes {len(jobs)} runs; the limit is {MAX_PROMPTS}")
    return jobs


def check_job(spec: BatchSpec, job: BatchJob) -> RunConfig:
    """The job's config; ConfigError/PromptError for bad overrides, a prompt the ToyWorld prior
    cannot read, or an existing run folder made with other settings."""
    from dream3d.toyworld import parse_prompt

    cfg = spec.job_config(job)
    if cfg.prior.name == "toyworld":
        parse_prompt(cfg.prompt)
    folder = RunDir(spec.job_dir(job))
    if folder.config.exists():
        changed = [k for k in changed_keys(load_config(folder.config), cfg) if k != "output.progress"]
        if changed:
            raise ConfigError(f"{folder.path} was made with other settings ({', '.join(changed[:5])}); "
                              "use another --name for this batch")
    return cfg


def complete_job(spec: BatchSpec, job: BatchJob) -> dict:
    """Run (or finish, or reuse) one job through dream3d.lifecycle.complete_run; returns its index
    record. Called in a Ray worker or in this process."""
    import torch

    from dream3d.lifecycle import complete_run, is_finished

    torch.set_num_threads(max(1, int(spec.cpus_per_run)))
    cfg = check_job(spec, job)
    folder = RunDir(spec.job_dir(job))
    started = time.time()
    reused = is_finished(folder, cfg)
    if not reused:
        attempts = spec.attempts_file(job)
        attempts.parent.mkdir(parents=True, exist_ok=True)
        with open(attempts, "a") as f:
            f.write(f"pid {os.getpid()} start {time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
        complete_run(cfg, folder, Path(spec.config).stem, progress=False)
    return job_record(spec, job, "finished", reused=reused, seconds=time.time() - started)


def job_record(spec: BatchSpec, job: BatchJob, status: str, error: str | None = None, reused: bool = False,
               seconds: float | None = None) -> dict:
    """The index entry of a job, read from its run folder (metrics, eval, assets)."""
    folder = RunDir(spec.job_dir(job))
    attempts = spec.attempts_file(job)
    record = {"prompt": job.prompt, "seed": job.seed, "overrides": list(job.overrides), "name": job.name,
              "status": status, "run_dir": str(folder.path),
              "attempts": len(attempts.read_text().splitlines()) if attempts.exists() else 0,
              "reused": reused, "error": error, "seconds": None if seconds is None else round(seconds, 2),
              "metrics": {}, "assets": {}}
    if status == "finished":
        train = json.loads(folder.metrics.read_text())
        record["metrics"] = {"wall_time_s": train.get("wall_time_s"), "step": train.get("step")}
        if folder.eval.exists() or load_config(folder.config).prior.name == "toyworld":
            from dream3d.evaluate import evaluate_run

            ev = json.loads(folder.eval.read_text()) if folder.eval.exists() else evaluate_run(folder.path)
            record["metrics"].update({k: ev.get(k) for k in ("silhouette_iou", "colour_error", "saturation",
                                                             "volumetric_iou")})
        files = {f: folder.asset(f) for f in EXPORT_FORMATS}
        if (video := folder.turntable()) is not None:
            files["turntable"] = video
        record["assets"] = {k: str(p) for k, p in files.items() if p.exists()}
    return record


# -- backends ------------------------------------------------------------------------------
def _local(spec: BatchSpec, jobs: list[BatchJob]) -> Iterator[tuple[BatchJob, dict | BaseException]]:
    """One job at a time in this process, each tried up to 1 + retries times."""
    import torch

    threads = torch.get_num_threads()
    try:
        for job in jobs:
            for attempt in range(spec.retries + 1):
                try:
                    yield job, complete_job(spec, job)
                    break
                except (ConfigError, KeyboardInterrupt):
                    raise
                except Exception as e:  # a failed attempt: retry (it resumes), then report
                    if attempt == spec.retries:
                        yield job, e
    finally:
        torch.set_num_threads(threads)


def _ray(spec: BatchSpec, jobs: list[BatchJob], address: str | None) -> Iterator[tuple[BatchJob, dict | BaseException]]:
    """Every job as a Ray task; results as they complete."""
    try:
        import ray
    except ImportError:
        raise ConfigError("Ray is not installed: pip install 'dream3d[batch]' (or pip install ray), "
                          "or run with --backend local") from None
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        except ConnectionError as e:
            raise ConfigError(f"could not connect to the Ray cluster at {address!r} ({e}); start one with "
                              "`ray start --head`, or leave out --address for a local cluster") from None
    try:
        task = ray.remote(complete_job).options(num_cpus=spec.cpus_per_run, num_gpus=spec.gpus_per_run,
                                                max_retries=spec.retries, retry_exceptions=True)
        pending = {task.remote(spec, job): job for job in jobs}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            if not done:
                yield None, None  # a tick for the progress display
                continue
            job = pending.pop(done[0])
            try:
                yield job, ray.get(done[0])
            except Exception as e:  # retries exhausted (worker died or the job raised)
                yield job, e
    finally:
        if started_here:
            ray.shutdown()


# -- the batch -----------------------------------------------------------------------------
def write_gallery(folder: Path, records: list[dict]) -> Path:
    """gallery.html: one card per job with its turntable, prompt, status, metrics and GLB link."""
    cards = []
    for r in records:
        rel = {k: os.path.relpath(v, folder) for k, v in r["assets"].items()}
        media = (f'<video src="{html.escape(rel["turntable"])}" autoplay loop muted playsinline></video>'
                 if "turntable" in rel else '<div class="none">no turntable</div>')
        numbers = " · ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in r["metrics"].items()
                             if isinstance(v, float) and k != "wall_time_s")
        links = " ".join(f'<a href="{html.escape(rel[k])}">{k.upper()}</a>' for k in ("glb", "obj", "ply", "splat")
                         if k in rel)
        cards.append(f'<div class="card {r["status"]}">{media}<p><b>{html.escape(r["prompt"])}</b> (seed {r["seed"]})</p>'
                     f'<p>{r["status"]}{" (reused)" if r["reused"] else ""}, attempts {r["attempts"]}'
                     f'{"<br>" + html.escape(str(r["error"])) if r["error"] else ""}</p><p>{numbers}</p><p>{links}</p></div>')
    page = ("<!doctype html><meta charset='utf-8'><title>dream3d batch</title><style>"
            "body{font-family:sans-serif;margin:1em}.grid{display:flex;flex-wrap:wrap;gap:1em}"
            ".card{width:260px;border:1px solid #ccc;border-radius:6px;padding:.5em}.failed{border-color:#c33}"
            "video{width:256px;height:256px;background:#eee}.none{width:256px;height:256px;background:#eee}</style>"
            f"<h1>{html.escape(folder.name)}</h1><p>{len(records)} runs</p><div class='grid'>{''.join(cards)}</div>")
    return atomic_write_text(folder / "gallery.html", page)


def run_batch(prompts: str | Path, config: str, overrides: tuple[str, ...] = (), backend: str = "ray",
              address: str | None = None, cpus_per_run: int = 1, gpus_per_run: float | None = None,
              seeds: list[int] = (0,), retries: int = 2, name: str | None = None, out: str = "batch",
              progress: bool = True) -> dict:
    """Run every (prompt, seed) of `prompts` with `config` + `overrides`; returns the index.

    Every job's config is checked before anything starts (a typo fails at once, not in job 37).
    gpus_per_run=None: 1 for Stable Diffusion configs, 0 for ToyWorld ones."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if cpus_per_run < 1 or retries < 0 or (gpus_per_run is not None and gpus_per_run < 0):
        raise ConfigError("--cpus-per-run must be >= 1, --gpus-per-run and --retries >= 0")
    jobs = read_prompts(prompts, list(seeds))
    folder = Path(out) / slugify(name or Path(prompts).stem)
    first = load_config(config, list(overrides))
    if gpus_per_run is None:
        gpus_per_run = 1.0 if first.prior.name == "stable_diffusion" else 0.0
    spec = BatchSpec(str(config), tuple(overrides), str(folder), cpus_per_run, gpus_per_run, retries)
    for job in jobs:  # bad overrides or prompts fail here, before any work
        check_job(spec, job)
    records = {job: job_record(spec, job, "pending") for job in jobs}
    index = {"batch": folder.name, "config": str(config), "overrides": list(overrides), "backend": backend,
             "cpus_per_run": cpus_per_run, "gpus_per_run": gpus_per_run, "retries": retries, "runs": []}

    def save() -> None:
        index["runs"] = list(records.values())
        index["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        write_json(folder / "index.json", index)
        write_gallery(folder, index["runs"])

    folder.mkdir(parents=True, exist_ok=True)
    save()
    results = _local(spec, jobs) if backend == "local" else _ray(spec, jobs, address)
    bar = tqdm(total=len(jobs), desc="batch", unit="run", disable=not progress)
    t_start = time.time()
    counts = {"done": 0, "failed": 0}
    try:
        for job, result in results:
            if job is not None:
                if isinstance(result, BaseException):
                    records[job] = job_record(spec, job, "failed", error=_short_error(result))
                    counts["failed"] += 1
                else:
                    records[job] = result
                    counts["done"] += 1
                save()
            running = sum(1 for j, r in records.items() if r["status"] == "pending" and spec.attempts_file(j).exists()
                          and spec.attempts_file(j).stat().st_mtime >= t_start)
            bar.set_postfix(done=counts["done"], running=running, failed=counts["failed"], refresh=False)
            bar.update(int(job is not None))
    finally:
        bar.close()
        save()
    return index


def _short_error(e: BaseException) -> str:
    """The last line of an error (Ray wraps the worker's traceback around it)."""
    lines = [line for line in str(e).strip().splitlines() if line.strip()]
    return (lines[-1] if lines else type(e).__name__)[:500]
