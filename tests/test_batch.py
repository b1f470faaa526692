"""`dream3d batch`: prompt files, Ray vs the in-process reference, retries of killed and failing
runs, reuse on a second invocation, the index and the gallery."""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import TINY_RUN, free_port

from dream3d.batch import BatchJob, parse_seeds, read_prompts, run_batch
from dream3d.cli import main
from dream3d.kernel.schema import ConfigError

PRESET = "configs/toy/sds-nerf.yaml"
PROMPTS = "# three ToyWorld prompts\na red cube\na blue sphere\n\na green cylinder\n"


def prompt_file(tmp_path, text=PROMPTS, name="prompts.txt"):
    path = tmp_path / name
    path.write_text(text)
    return path


def metrics_by_job(index):
    return {(r["prompt"], r["seed"]): r["metrics"] for r in index["runs"]}


def test_prompt_files(tmp_path):
    jobs = read_prompts(prompt_file(tmp_path), [0, 1])
    assert [(j.prompt, j.seed) for j in jobs] == [("a red cube", 0), ("a red cube", 1), ("a blue sphere", 0),
                                                  ("a blue sphere", 1), ("a green cylinder", 0), ("a green cylinder", 1)]
    jsonl = prompt_file(tmp_path, '{"prompt": "a cube", "seeds": [3, 4]}\n{"prompt": "a cone", "overrides": ["train.steps=9"]}\n'
                        '{"prompt": "a cube", "seed": 3}\n', "p.jsonl")
    jobs = read_prompts(jsonl, [0])
    assert jobs == [BatchJob("a cube", 3), BatchJob("a cube", 4), BatchJob("a cone", 0, ("train.steps=9",))]
    assert jobs[2].name.startswith("a-cone-s0-") and jobs[0].name == "a-cube-s3"
    with pytest.raises(ConfigError, match="p2.jsonl:1"):
        read_prompts(prompt_file(tmp_path, "a cube\n", "p2.jsonl"), [0])
    with pytest.raises(ConfigError, match="no prompts"):
        read_prompts(prompt_file(tmp_path, "# nothing\n\n", "empty.txt"), [0])
    with pytest.raises(ConfigError, match="does not exist"):
        read_prompts(tmp_path / "missing.txt", [0])
    assert parse_seeds("0, 2,5") == [0, 2, 5]
    with pytest.raises(ConfigError, match="--seeds"):
        parse_seeds("a,b")


@pytest.mark.slow  # about a minute on 2 cores (default suite time, README)
def test_ray_gives_the_local_backend_metrics_and_reruns_do_no_work(tmp_path):
    pytest.importorskip("ray")
    prompts = prompt_file(tmp_path)
    local = run_batch(prompts, PRESET, tuple(TINY_RUN), "local", name="local", out=str(tmp_path), progress=False)
    ray_index = run_batch(prompts, PRESET, tuple(TINY_RUN), "ray", name="ray", out=str(tmp_path), progress=False)
    assert [r["status"] for r in ray_index["runs"]] == ["finished"] * 3
    assert metrics_by_job(local).keys() == metrics_by_job(ray_index).keys()
    for key, m in metrics_by_job(local).items():  # deterministic: the same numbers on both backends
        r = metrics_by_job(ray_index)[key]
        assert {k: v for k, v in m.items() if k != "wall_time_s"} == {k: v for k, v in r.items() if k != "wall_time_s"}
        assert 0 < m["silhouette_iou"] <= 1
    for r in ray_index["runs"]:
        assert Path(r["assets"]["glb"]).exists() and Path(r["assets"]["turntable"]).exists() and r["attempts"] == 1
    saved = json.loads((tmp_path / "ray" / "index.json").read_text())
    assert saved["runs"] == ray_index["runs"] and saved["backend"] == "ray"
    gallery = (tmp_path / "ray" / "gallery.html").read_text()
    assert gallery.count("<video") == 3 and "a blue sphere" in gallery and 'href="runs/a-red-cube-s0/model.glb"' in gallery
    # a second invocation reuses everything: no attempt, no checkpoint rewritten
    ckpts = {p: p.stat().st_mtime_ns for p in (tmp_path / "ray").rglob("last.pt")}
    again = run_batch(prompts, PRESET, tuple(TINY_RUN), "ray", name="ray", out=str(tmp_path), progress=False)
    assert all(r["reused"] and r["status"] == "finished" and r["attempts"] == 1 for r in again["runs"])
    assert metrics_by_job(again) == metrics_by_job(ray_index)
    assert {p: p.stat().st_mtime_ns for p in ckpts} == ckpts


@pytest.mark.slow  # about a minute on 2 cores (default suite time, README)
def test_a_killed_worker_is_retried_and_resumes(tmp_path):
    """SIGKILL the Ray worker of one run after its first checkpoint: Ray retries the task, which
    resumes from the checkpoint; the index is complete and the numbers are those of an
    uninterrupted run (local backend)."""
    pytest.importorskip("ray")
    prompts = prompt_file(tmp_path, "a red cube\na blue sphere\n")
    longer = [*TINY_RUN, "train.steps=60", "output.checkpoint_every=5"]
    cmd = [sys.executable, "-m", "dream3d.cli", "batch", str(prompts), "--config", PRESET, "--name", "ray",
           "--out", str(tmp_path), "--retries", "2", *longer]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    attempts = tmp_path / "ray" / "attempts" / "a-red-cube-s0.txt"
    ckpt = tmp_path / "ray" / "runs" / "a-red-cube-s0" / "checkpoints" / "last.pt"
    deadline = time.time() + 180
    while not (ckpt.exists() and attempts.exists()) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert ckpt.exists(), "the run never checkpointed"
    os.kill(int(attempts.read_text().split()[1]), signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    index = json.loads((tmp_path / "ray" / "index.json").read_text())
    assert proc.returncode == 0, (out[-1000:], [(r["prompt"], r["status"], r["attempts"], r["error"]) for r in index["runs"]])
    by_prompt = {r["prompt"]: r for r in index["runs"]}
    assert [r["status"] for r in index["runs"]] == ["finished", "finished"]
    assert by_prompt["a red cube"]["attempts"] == 2 and by_prompt["a blue sphere"]["attempts"] == 1
    reference = run_batch(prompts, PRESET, tuple(longer), "local", name="ref", out=str(tmp_path), progress=False)
    for key, m in metrics_by_job(reference).items():
        got = metrics_by_job(index)[key]
        assert {k: v for k, v in m.items() if k != "wall_time_s"} == {k: v for k, v in got.items() if k != "wall_time_s"}


@pytest.mark.reliability
def test_only_failures_that_can_pass_are_retried_and_the_others_finish(tmp_path, capsys, monkeypatch):
    """An OS error (a full disk, a flaky network file system) is retried, then reported; a bug
    (RuntimeError) fails the same way again, so it is reported after one attempt; the other runs
    finish."""
    import dream3d.lifecycle

    real_run = dream3d.lifecycle.start_run

    def failing_run(cfg, *args, **kw):
        if cfg.prompt == "a blue cube":
            raise OSError(28, "simulated: no space left on device")
        if cfg.prompt == "a green cube":
            raise RuntimeError("simulated bug in the middle of training")
        return real_run(cfg, *args, **kw)

    monkeypatch.setattr(dream3d.lifecycle, "start_run", failing_run)
    prompts = prompt_file(tmp_path, "a red cube\na blue cube\na green cube\n", "p.txt")
    code = main(["batch", str(prompts), "--config", PRESET, "--backend", "local", "--retries", "2",
                 "--out", str(tmp_path), *TINY_RUN])
    assert code == 1
    out = capsys.readouterr().out
    assert "1 finished" in out and "2 failed" in out and "no space left" in out and "simulated bug" in out
    index = json.loads((tmp_path / "p" / "index.json").read_text())
    assert [r["status"] for r in index["runs"]] == ["finished", "failed", "failed"]
    disk, bug = index["runs"][1], index["runs"][2]
    assert disk["attempts"] == 3 and "no space left" in disk["error"] and disk["assets"] == {}
    assert bug["attempts"] == 1 and "simulated bug" in bug["error"]


def test_retryable_judges_the_cause_inside_ray_errors():
    ray = pytest.importorskip("ray")
    import torch

    from dream3d.batch import retryable
    from dream3d.runs import CheckpointError
    from dream3d.trainer import NonFiniteError, OutputWriteError

    for error in (OSError("disk"), MemoryError(), torch.OutOfMemoryError("cuda"), OutputWriteError("full"),
                  ray.exceptions.ActorDiedError(), ray.exceptions.WorkerCrashedError()):
        assert retryable(error), error
    for error in (ValueError("bad prompt"), RuntimeError("bug"), CheckpointError("corrupt"), NonFiniteError("nan"),
                  ConfigError("typo")):
        assert not retryable(error), error
    assert retryable(ray.exceptions.RayTaskError("run", "traceback", OSError("disk")))
    assert not retryable(ray.exceptions.RayTaskError("run", "traceback", CheckpointError("corrupt")))


def test_connection_failures_say_what_to_change(monkeypatch):
    """A head that is not there, and one whose server for this connection exits at startup (what a busy CI
    head did once: tried again, then explained), get different advice."""
    ray = pytest.importorskip("ray")
    from dream3d.batch import BatchSpec, _ray

    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # use_ray_token leaves a set mode alone
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    spec = BatchSpec(PRESET, (), "x")
    for failure, advice in (("Connection refused", "start one with `ray start --head`"),
                            ("Initialization failure from server: RuntimeError: Starting Ray client server failed. See "
                             "ray_client_server_23000.err", "exited at startup, twice")):
        calls = []

        def refuse(*args, failure=failure, **kwargs):
            calls.append(kwargs["address"])
            raise ConnectionError(failure)

        monkeypatch.setattr(ray, "init", refuse)
        monkeypatch.setattr("dream3d.batch.time.sleep", lambda s: None)
        with pytest.raises(ConfigError) as refused:
            next(_ray(spec, [], "ray://127.0.0.1:1", None))
        assert advice in str(refused.value) and failure in str(refused.value)
        assert len(calls) == (2 if "twice" in advice else 1)  # only a server that died at startup is tried again


def test_workers_fit_the_cluster_or_the_batch_is_refused():
    from dream3d.batch import BatchSpec, default_workers

    spec = BatchSpec(PRESET, (), "x", cpus_per_run=2, gpus_per_run=1)
    assert default_workers({"CPU": 16, "GPU": 3}, spec, jobs=10) == 3  # one worker per GPU
    assert default_workers({"CPU": 16, "GPU": 3}, spec, jobs=2) == 2  # no more workers than runs
    with pytest.raises(ConfigError, match="has 16 CPUs and 0 GPUs"):
        default_workers({"CPU": 16}, spec, jobs=2)
    assert default_workers({"CPU": 5}, BatchSpec(PRESET, (), "x", cpus_per_run=2), jobs=10) == 2


def test_a_kept_prior_gives_the_numbers_of_a_fresh_one(tmp_path):
    """A worker's second job on its kept prior trains exactly as the same job with a prior of its
    own (the prior carries nothing from one run to the next), and the prior was built once."""
    from dream3d.batch import BatchSpec, PriorCache, complete_job
    from dream3d.lifecycle import load_run

    warm_spec = BatchSpec(PRESET, tuple(TINY_RUN), str(tmp_path / "warm"))
    priors = PriorCache()
    complete_job(warm_spec, BatchJob("a blue sphere", 1), priors)
    warm = complete_job(warm_spec, BatchJob("a red cube", 0), priors)
    assert priors.builds == 1
    cold = complete_job(BatchSpec(PRESET, tuple(TINY_RUN), str(tmp_path / "cold")), BatchJob("a red cube", 0))
    a, b = load_run(warm["run_dir"])[0].scene.state_dict(), load_run(cold["run_dir"])[0].scene.state_dict()
    assert a.keys() == b.keys() and all(torch_equal(a[k], b[k]) for k in a)
    assert warm["metrics"] == {**cold["metrics"], "wall_time_s": warm["metrics"]["wall_time_s"]}
    complete_job(warm_spec, BatchJob("a red cube", 0, ("prior.resolution=8",)), priors)  # other prior settings
    assert priors.builds == 2


def torch_equal(a, b) -> bool:
    import torch

    return torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b


@pytest.mark.slow
def test_ray_client_and_ray_jobs_on_a_running_cluster(tmp_path):
    """`ray start --head` with token authentication, then `dream3d batch --address ray://...` (Ray
    Client: the packages travel in the runtime_env) and `dream3d batch --submit http://...` (Ray
    Jobs); the client knows only RAY_AUTH_TOKEN, as a user given the cluster's token does."""
    pytest.importorskip("ray")
    import secrets
    import urllib.request

    token = secrets.token_hex(32)
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    client_port, dashboard_port = free_port(), free_port()
    # the job's entrypoint runs `python` from the PATH, as on a cluster: this test's Python
    head_env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
                "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    start = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", f"--port={free_port()}",
             f"--ray-client-server-port={client_port}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
             "--num-cpus=2", "--min-worker-port=30000", "--max-worker-port=30999", "--disable-usage-stats",
             f"--temp-dir={temp_dir}"]
    # --block: this cluster lives as long as this process, which the test stops (no `ray stop` of other clusters)
    head = subprocess.Popen(start, env=head_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{dashboard_port}/", timeout=2)
            break
        except urllib.error.HTTPError:  # answering (it wants the token)
            break
        except OSError:
            assert head.poll() is None, "ray start --head failed"
            time.sleep(1)
    client_env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | {"RAY_AUTH_TOKEN": token}
    try:
        prompts = prompt_file(tmp_path, "a red cube\na blue sphere\n")
        common = ["--config", str(Path(PRESET).absolute()), "--out", str(tmp_path / "out"), *TINY_RUN]
        for name, where in (("client", ["--address", f"ray://127.0.0.1:{client_port}"]),
                            ("jobs", ["--submit", f"http://127.0.0.1:{dashboard_port}"])):
            done = subprocess.run([sys.executable, "-m", "dream3d.cli", "batch", str(prompts), "--name", name, *where,
                                   *common], env=client_env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
            server_logs = "".join(f"\n--- {log.name}\n{log.read_text()[-3000:]}"
                                  for log in Path(temp_dir).glob("session_latest/logs/ray_client_server*.err"))
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:] + server_logs
            index = json.loads((tmp_path / "out" / name / "index.json").read_text())
            assert [r["status"] for r in index["runs"]] == ["finished", "finished"], index
            assert all(Path(r["assets"]["glb"]).exists() for r in index["runs"])
        assert "SUCCEEDED" in done.stdout
    finally:
        head.terminate()  # `ray start --block` stops its cluster's processes when terminated
        head.wait(timeout=120)


@pytest.mark.reliability
def test_bad_input_fails_before_any_run(tmp_path, capsys):
    prompts = prompt_file(tmp_path, "a red cube\na red dragon\n")
    assert main(["batch", str(prompts), "--config", PRESET, "--backend", "local", "--out", str(tmp_path), *TINY_RUN]) == 2
    assert "dragon" in capsys.readouterr().err and not (tmp_path / "prompts").exists()
    ok = prompt_file(tmp_path, "a red cube\n", "ok.txt")
    assert main(["batch", str(ok), "--config", PRESET, "--backend", "local", "--out", str(tmp_path), "guidance.scal=3"]) == 2
    assert "guidance_scale" in capsys.readouterr().err
    # the same batch name with other settings would mix results: refused, naming the key
    assert main(["batch", str(ok), "--config", PRESET, "--backend", "local", "--out", str(tmp_path), *TINY_RUN]) == 0
    assert main(["batch", str(ok), "--config", PRESET, "--backend", "local", "--out", str(tmp_path), *TINY_RUN,
                 "guidance.guidance_scale=3"]) == 2
    assert "guidance.guidance_scale" in capsys.readouterr().err
