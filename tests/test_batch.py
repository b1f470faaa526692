"""`dream3d batch`: prompt files, Ray vs the in-process reference, retries of killed and failing
runs, reuse on a second invocation, the index and the gallery."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY_RUN

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
    assert proc.returncode == 0, err[-2000:]
    index = json.loads((tmp_path / "ray" / "index.json").read_text())
    by_prompt = {r["prompt"]: r for r in index["runs"]}
    assert [r["status"] for r in index["runs"]] == ["finished", "finished"]
    assert by_prompt["a red cube"]["attempts"] == 2 and by_prompt["a blue sphere"]["attempts"] == 1
    reference = run_batch(prompts, PRESET, tuple(longer), "local", name="ref", out=str(tmp_path), progress=False)
    for key, m in metrics_by_job(reference).items():
        got = metrics_by_job(index)[key]
        assert {k: v for k, v in m.items() if k != "wall_time_s"} == {k: v for k, v in got.items() if k != "wall_time_s"}


@pytest.mark.reliability
def test_a_failing_run_is_retried_then_reported_and_the_others_finish(tmp_path, capsys, monkeypatch):
    import dream3d.lifecycle

    real_run = dream3d.lifecycle.start_run

    def flaky_run(cfg, *args, **kw):  # "a blue cube" fails in the middle of every attempt
        if cfg.prompt == "a blue cube":
            raise RuntimeError("simulated failure in the middle of training")
        return real_run(cfg, *args, **kw)

    monkeypatch.setattr(dream3d.lifecycle, "start_run", flaky_run)
    prompts = prompt_file(tmp_path, "a red cube\na blue cube\na green cube\n", "p.txt")
    code = main(["batch", str(prompts), "--config", PRESET, "--backend", "local", "--retries", "1",
                 "--out", str(tmp_path), *TINY_RUN])
    assert code == 1
    out = capsys.readouterr().out
    assert "2 finished" in out and "1 failed" in out and "simulated failure" in out
    index = json.loads((tmp_path / "p" / "index.json").read_text())
    assert [r["status"] for r in index["runs"]] == ["finished", "failed", "finished"]
    bad = index["runs"][1]
    assert bad["attempts"] == 2 and "simulated failure" in bad["error"] and bad["assets"] == {}


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
