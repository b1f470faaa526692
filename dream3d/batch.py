"""Batch generation: one run per (prompt, seed), on Ray or sequentially in-process.

`dream3d batch PROMPTS --config CONFIG` writes batch/<name>/:
  runs/<prompt-slug>-s<seed>/   a normal run folder per job
  attempts/<job>.txt            one line per attempt (pid, time), so retries are visible
  index.json                    prompt, seed, status, run dir, attempts, metrics, assets per job
  gallery.html                  the turntables, prompts and metrics side by side

Ray (`backend="ray"`) starts `workers` actors, each declaring `num_cpus`/`num_gpus` (one per GPU
with --gpus-per-run 1), and feeds them jobs as they free up. An actor builds a prior once and
keeps it for the jobs that share its settings (a Stable Diffusion pipeline loads once per worker,
not once per prompt). A job is retried (resuming from its run's last checkpoint) only when another
attempt can succeed: its worker died (killed, out of memory, node lost), an OS error (disk full, a
network file system), a CUDA out-of-memory error; a bad prompt, a corrupt checkpoint, NaN
gradients or a bug fail the same way again and are reported at once (`retryable`). On a remote
cluster (`address`), the dream3d packages travel with the job (Ray's runtime_env py_modules) and
the batch folder must be on a file system the cluster's nodes share. `backend="local"` runs the
same function one job at a time in this process: the reference the tests compare Ray against.
Rerunning a batch skips finished jobs and resumes interrupted ones; every job sets torch's thread
count to `cpus_per_run`, so a job gives the same numbers on either backend.
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
from dream3d.kernel.device import resolve_device
from dream3d.kernel.schema import ConfigError
from dream3d.runs import RunDir, slugify

BACKENDS = ("ray", "local")
PLACEMENT_TIMEOUT_S = 600  # how long a batch waits for its first Ray worker to be placed (an autoscaler may add nodes)
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
    keep_prior: bool = True  # a worker keeps its prior for its next job (False: built anew per job, freed between)

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


class PriorCache:
    """The prior of a worker's latest job, kept for the next job with the same prior settings.
    One at a time: a worker switching models frees the old one."""

    def __init__(self):
        self.key: str | None = None
        self.prior = None
        self.builds = 0

    def get(self, cfg: RunConfig):
        from guidance.priors import build_prior

        key = json.dumps({**dataclasses.asdict(cfg.prior), "train.device": cfg.train.device}, sort_keys=True, default=str)
        if key != self.key:
            self.prior, self.key = None, None  # freed before the next one loads; nothing kept if that fails
            self.prior = build_prior(cfg.prior, progress=False, device=resolve_device(cfg.train.device))
            self.key = key
            self.builds += 1
        else:
            self.prior.clear_run_cache()  # what the previous run left (its prompts' embeddings)
        return self.prior


def complete_job(spec: BatchSpec, job: BatchJob, priors: PriorCache | None = None) -> dict:
    """Run (or finish, or reuse) one job through dream3d.lifecycle.complete_run; returns its index
    record. Called in a Ray worker (with the worker's PriorCache) or in this process."""
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
        prior = priors.get(cfg) if priors is not None and spec.keep_prior else None
        complete_run(cfg, folder, Path(spec.config).stem, progress=False, prior=prior)
    return job_record(spec, job, "finished", reused=reused, seconds=time.time() - started)


def retryable(error: BaseException) -> bool:
    """Whether another attempt of a failed job can succeed: a lost worker (Ray's actor / worker /
    node died, out of memory), an OS error (disk full, a flaky network file system), MemoryError,
    CUDA out of memory, a failed output write. Anything else (bad input, a corrupt checkpoint, NaN
    gradients, a bug) fails the same way again. Ray wraps a job's own exception in RayTaskError,
    whose `cause` is judged instead."""
    import torch

    from dream3d.trainer import OutputWriteError

    try:
        from ray import exceptions as ray_errors
    except ImportError:
        ray_errors = None
    if ray_errors is not None and isinstance(error, ray_errors.RayTaskError):
        cause = getattr(error, "cause", None)
        return cause is not None and retryable(cause)
    if ray_errors is not None and isinstance(error, ray_errors.RayError):
        # the worker, its node or an object was lost: a fresh attempt can succeed. This includes
        # ActorUnavailableError, what a killed worker's run gets while Ray restarts the worker (Ray
        # cannot tell that from a network split in which the run goes on; then two attempts would share
        # the run folder, a risk taken for the common case)
        return True
    cuda_oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)  # torch.OutOfMemoryError from 2.5
    return isinstance(error, (OSError, MemoryError, cuda_oom, OutputWriteError))


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
    """One job at a time in this process (one prior kept across jobs), each tried up to
    1 + retries times while its failures are retryable."""
    import torch

    threads = torch.get_num_threads()
    priors = PriorCache()
    try:
        for job in jobs:
            for attempt in range(spec.retries + 1):
                try:
                    yield job, complete_job(spec, job, priors)
                    break
                except (ConfigError, KeyboardInterrupt):
                    raise
                except Exception as e:  # a failed attempt: retry (it resumes) when that can help, else report
                    if attempt == spec.retries or not retryable(e):
                        yield job, e
                        break
    finally:
        torch.set_num_threads(threads)


class BatchWorker:
    """A Ray actor that runs jobs one after another, keeping its prior between them."""

    def __init__(self):
        self.priors = PriorCache()

    def run(self, spec: BatchSpec, job: BatchJob) -> dict:
        return complete_job(spec, job, self.priors)

    def ready(self) -> bool:
        """Answers once the worker has been placed and started."""
        return True


def default_workers(resources: dict, spec: BatchSpec, jobs: int) -> int:
    """As many workers as the cluster's CPUs (and GPUs, when runs take GPUs) hold, at most one per
    job; ConfigError when not even one fits."""
    cpus, gpus = resources.get("CPU", 0), resources.get("GPU", 0)
    fits = [cpus // spec.cpus_per_run]
    if spec.gpus_per_run > 0:
        fits.append(gpus // spec.gpus_per_run)
    if min(fits) < 1:
        raise ConfigError(f"one run needs {spec.cpus_per_run} CPUs and {spec.gpus_per_run:g} GPUs, and the Ray cluster "
                          f"has {cpus:g} CPUs and {gpus:g} GPUs; lower --cpus-per-run / --gpus-per-run (0 runs on CPUs)")
    return int(min(jobs, *fits))


def runtime_env() -> dict:
    """What a remote cluster's workers need to run dream3d: its three packages (uploaded by Ray)."""
    import dream3d
    import guidance
    import renderers

    packages = [str(Path(m.__file__).parent) for m in (dream3d, guidance, renderers)]  # paths: Ray Client pickles these
    return {"py_modules": packages, "env_vars": {"PYTHONDONTWRITEBYTECODE": "1"}}


def use_ray_token() -> None:
    """Ray Client and the job-submission client send the cluster's auth token only when
    RAY_AUTH_MODE=token, while `ray start` enables token authentication whenever a token exists:
    when this machine has a token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token) and the
    mode is unset, send it, as ray.init does for plain cluster addresses."""
    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", "~/.ray/auth_token")).expanduser()
    if os.environ.get("RAY_AUTH_MODE") is None and (os.environ.get("RAY_AUTH_TOKEN") or token_file.exists()):
        os.environ["RAY_AUTH_MODE"] = "token"


SERVER_START_FAILED = "Starting Ray client server failed"  # Ray Client: the per-connection server exited at startup


def _connect(ray, address: str, **kwargs) -> None:
    """ray.init(address, ...), tried once more when Ray Client's per-connection server exits at startup, as it
    did once on a busy CI head (with an empty log; not reproduced since): a second try costs 2 s."""
    for attempt in range(2):
        try:
            ray.init(address=address, **kwargs)
            return
        except ConnectionError as e:
            if SERVER_START_FAILED not in str(e) or attempt == 1:
                raise
            time.sleep(2)


def _ray(spec: BatchSpec, jobs: list[BatchJob], address: str | None, workers: int | None
         ) -> Iterator[tuple[BatchJob | None, dict | BaseException | None]]:
    """Jobs on a pool of BatchWorker actors; results as they complete; retryable failures go back
    in the queue (a dead actor is restarted by Ray) up to `retries` times."""
    if address is not None and address.startswith("ray://"):
        use_ray_token()  # before Ray reads its config (at import)
    try:
        import ray
    except ImportError:
        raise ConfigError("Ray is not installed: pip install 'dream3d[batch]', or run with --backend local") from None
    started_here = not ray.is_initialized()
    if started_here:
        try:
            if address is None:
                ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
            elif "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ:  # a submitted Ray job (submit_batch): the job ships the code
                ray.init(address=address, log_to_driver=False)
            else:  # an existing cluster: ship the code; a ray:// address connects through Ray Client
                _connect(ray, address, runtime_env=runtime_env(), log_to_driver=False)
        except ConnectionError as e:
            if SERVER_START_FAILED in str(e):  # the head answered; the server it starts for this connection died
                raise ConfigError(f"the Ray cluster at {address!r} answered, but the server it starts for this "
                                  f"connection exited at startup, twice ({e}); its log is ray_client_server_PORT.err in "
                                  "the head's log folder (by default /tmp/ray/session_latest/logs)") from None
            raise ConfigError(f"could not connect to the Ray cluster at {address!r} ({e}); start one with "
                              "`ray start --head`, or leave out --address for a local cluster. A cluster with token "
                              "authentication needs its token here: RAY_AUTH_TOKEN=... or ~/.ray/auth_token") from None
        except RuntimeError as e:
            if "ray[client]" in str(e) or "grpc" in str(e).lower():
                raise ConfigError(f"{e}; pip install 'dream3d[batch]' installs Ray with its client") from None
            raise
    try:
        n = workers or default_workers(ray.cluster_resources(), spec, len(jobs))
        actor = ray.remote(BatchWorker).options(num_cpus=spec.cpus_per_run, num_gpus=spec.gpus_per_run,
                                               max_restarts=-1, max_task_retries=0)
        # a worker takes runs once it is placed: with --workers above what the cluster holds, the rest wait
        starting = {}
        for _ in range(n):
            worker = actor.remote()
            starting[worker.ready.remote()] = worker
        idle, queue, tries, running = [], list(jobs), dict.fromkeys(jobs, 0), {}
        waited = time.monotonic()
        while queue or running:
            while queue and idle:
                job, worker = queue.pop(0), idle.pop()
                tries[job] += 1
                running[worker.run.remote(spec, job)] = (job, worker)
            done, _ = ray.wait([*running, *starting], num_returns=1, timeout=1.0)
            if not done:
                if not running and not idle and time.monotonic() - waited > PLACEMENT_TIMEOUT_S:
                    raise ConfigError(f"no Ray worker could start in {PLACEMENT_TIMEOUT_S} s (each needs "
                                      f"{spec.cpus_per_run} CPUs, {spec.gpus_per_run:g} GPUs; the cluster has "
                                      f"{ray.cluster_resources()}); lower --cpus-per-run / --gpus-per-run")
                yield None, None  # a tick for the progress display
                continue
            if done[0] in starting:
                worker = starting.pop(done[0])
                try:
                    ray.get(done[0])
                    idle.append(worker)
                except Exception:  # noqa: BLE001 - died while starting; Ray restarts it, ask again
                    starting[worker.ready.remote()] = worker
                continue
            job, worker = running.pop(done[0])
            try:
                result = ray.get(done[0])
            except Exception as e:  # the job raised, or its worker died (Ray restarts the actor)
                if isinstance(e, ray.exceptions.RayActorError):
                    starting[worker.ready.remote()] = worker  # takes runs again once restarted, not before
                else:
                    idle.append(worker)
                if retryable(e) and tries[job] <= spec.retries:
                    queue.append(job)
                else:
                    yield job, e
            else:
                idle.append(worker)
                yield job, result
    finally:
        if started_here:
            ray.shutdown()


def submit_batch(address: str, prompts: str | Path, config: str, args: list[str], poll_s: float = 2.0,
                 echo=print) -> tuple[str, str]:
    """`dream3d batch --submit http://HEAD:8265`: run this batch as a Ray job on the cluster (Ray Jobs
    API). The prompt file and the preset travel in the job's working_dir with the dream3d packages;
    on the cluster the job runs `dream3d batch PROMPTS --config CONFIG --address auto ARGS`, so
    `--out` in ARGS must be a path the cluster can write (a shared file system to see the results here).
    Echoes the job's log as it grows; returns (job id, final status)."""
    import shlex
    import shutil
    import tempfile

    use_ray_token()  # before Ray reads its config (at import)
    try:
        from ray.job_submission import JobStatus, JobSubmissionClient
    except ImportError:
        raise ConfigError("Ray Jobs needs Ray with its job API: pip install 'dream3d[batch]'") from None
    for path in (prompts, config):
        if not Path(path).is_file():
            raise ConfigError(f"{path} does not exist")
    try:
        client = JobSubmissionClient(address)
    except Exception as e:  # noqa: BLE001 - connection refused, wrong address, missing auth token
        raise ConfigError(f"could not reach the Ray job server at {address!r} ({str(e).splitlines()[0][:300]}); give "
                          "the dashboard address, e.g. http://HEAD:8265, and for a cluster with token authentication "
                          "its token (RAY_AUTH_TOKEN=... or ~/.ray/auth_token)") from None
    with tempfile.TemporaryDirectory(prefix="dream3d-job-") as staging:
        shutil.copy(prompts, Path(staging) / Path(prompts).name)
        shutil.copy(config, Path(staging) / Path(config).name)
        entry = ["python", "-m", "dream3d.cli", "batch", Path(prompts).name, "--config", Path(config).name,
                 "--address", "auto", *args]
        env = runtime_env()
        env["working_dir"] = staging
        job_id = client.submit_job(entrypoint=" ".join(shlex.quote(a) for a in entry), runtime_env=env)
    echo(f"submitted Ray job {job_id} to {address}")
    shown = 0
    try:
        while True:
            status = client.get_job_status(job_id)
            logs = client.get_job_logs(job_id)
            if len(logs) > shown:
                echo(logs[shown:].rstrip("\n"))
                shown = len(logs)
            if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
                return job_id, str(status.value)
            time.sleep(poll_s)
    except KeyboardInterrupt:
        echo(f"stopped following Ray job {job_id}; it goes on on the cluster (`ray job logs {job_id}` to follow it, "
             f"`ray job stop {job_id}` to stop it)")
        raise


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
              progress: bool = True, workers: int | None = None, keep_prior: bool = True) -> dict:
    """Run every (prompt, seed) of `prompts` with `config` + `overrides`; returns the index.

    Every job's config is checked before anything starts (a typo fails at once, not in job 37).
    gpus_per_run=None: 1 for Stable Diffusion configs, 0 for ToyWorld ones."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if cpus_per_run < 1 or retries < 0 or (gpus_per_run is not None and gpus_per_run < 0) or (workers or 1) < 1:
        raise ConfigError("--cpus-per-run and --workers must be >= 1, --gpus-per-run and --retries >= 0")
    jobs = read_prompts(prompts, list(seeds))
    folder = (Path(out) / slugify(name or Path(prompts).stem)).absolute()  # workers may run elsewhere (a cluster)
    first = load_config(config, list(overrides))
    if gpus_per_run is None:
        device = first.train.device  # a GPU for runs that train on one (auto: a diffusion model's runs)
        gpus_per_run = 1.0 if device.startswith("cuda") or (device == "auto" and first.prior.name != "toyworld") else 0.0
    spec = BatchSpec(str(Path(config).absolute()), tuple(overrides), str(folder), cpus_per_run, gpus_per_run, retries,
                     keep_prior)
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
    results = _local(spec, jobs) if backend == "local" else _ray(spec, jobs, address, workers)
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
