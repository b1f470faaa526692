"""benchmarks/gpu_check.py, the one command for a CUDA machine: its dry run passes here end to end
(every check's CPU half), and a failing check makes the command exit non-zero."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses resolve their module's annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def table_rows(output: str) -> dict[str, list[str]]:
    """The final table's rows by check number: [step, status, numbers, seconds]."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in output.splitlines()
            if line.startswith("| ") and line[2:3].isdigit()]
    return {r[0].split()[0]: r for r in rows}


@pytest.mark.slow  # about a minute on 2 cores (default suite time, README)
def test_dry_run_passes_and_reports_all_six_checks(tmp_path):
    """~45-60 s on 2 cores: 3 training steps per run, both presets on both sides, the tiny SD pipeline."""
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--steps", "3", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = table_rows(proc.stdout)
    assert sorted(rows) == ["1", "2", "3", "4", "5", "6"], proc.stdout
    assert rows["1"][1] == "skipped (dry run)"
    assert all(rows[n][1] == "ok (dry run)" for n in "23456"), proc.stdout
    assert "3 steps" in rows["3"][2] and "IoU" in rows["3"][2]
    assert "inf dB" in rows["4"][2]  # the torch path against itself
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["exit_code"] == 0 and result["dry_run"] and len(result["rows"]) == 6
    assert len(list((tmp_path / "cpu").glob("*/metrics.json"))) == 2  # the subprocess references ran


def test_an_exception_in_a_check_is_a_failed_row_and_a_non_zero_exit(monkeypatch, tmp_path, capsys):
    gpu_check = load_script()

    def broken(ctx):
        raise RuntimeError("Error building extension 'gsplat_cuda'\nninja: build stopped")

    monkeypatch.setattr(gpu_check, "CHECKS", [(1, "kernels", broken), *gpu_check.CHECKS[1:]])
    assert gpu_check.main(["--dry-run", "--only", "1", "--out", str(tmp_path)]) == 1
    rows = table_rows(capsys.readouterr().out)
    assert rows["1"][1:3] == ["FAIL", "RuntimeError: Error building extension 'gsplat_cuda'"]
    assert all(rows[n][1] == "skipped (not in --only)" for n in "23456")
    assert json.loads((tmp_path / "gpu_check.json").read_text())["exit_code"] == 1

    monkeypatch.setattr(gpu_check, "CHECKS", [(1, "kernels", lambda ctx: ("ok", "")), *gpu_check.CHECKS[1:]])
    assert gpu_check.main(["--dry-run", "--only", "1", "--out", str(tmp_path)]) == 0


def test_exit_code_is_one_when_any_row_failed():
    gpu_check = load_script()
    Row = gpu_check.Row
    ok = [Row("1", "ok", "", 0.0), Row("2", "skipped (dry run)", "", 0.0), Row("3", "ok (dry run)", "", 0.0)]
    assert gpu_check.exit_code(ok) == 0
    assert gpu_check.exit_code(ok + [Row("4", "FAIL", "PSNR 20.1 dB < 35", 1.0)]) == 1


def test_on_a_gpu_a_skipped_cuda_test_fails_the_pytest_check():
    gpu_check = load_script()
    judge, counts = gpu_check.judge_pytest, gpu_check.pytest_counts
    assert counts("...\n2 passed, 1 skipped, 451 deselected in 5.29s\n") == {"passed": 2, "skipped": 1, "deselected": 451}
    assert counts("1 failed, 1 passed, 2 errors in 3.1s") == {"failed": 1, "passed": 1, "errors": 2}
    assert counts("no tests ran in 0.12s") == {}
    assert judge(0, {"passed": 3, "deselected": 451}, dry=False)[0] == "ok"
    assert judge(0, {"passed": 2, "skipped": 1}, dry=False)[0] == "FAIL"
    assert judge(0, {"skipped": 3}, dry=False)[0] == "FAIL"
    assert judge(1, {"passed": 2, "failed": 1}, dry=False)[0] == "FAIL"
    assert judge(5, {"deselected": 454}, dry=False)[0] == "FAIL"  # no CUDA test at all
    assert judge(0, {"skipped": 3}, dry=True)[0] == "ok"
    assert judge(5, {}, dry=True)[0] == "FAIL"
    # nvdiffrast is optional (not on PyPI): its tests may skip on a GPU, and are reported
    out = ("SKIPPED [2] tests/test_mesh_rasterizer.py:196: nvdiffrast is not installed (pip install ...)\n"
           "SKIPPED [1] tests/test_x.py:3: needs a CUDA device\n")
    assert gpu_check.optional_skips(out) == 2
    status, shown = judge(0, {"passed": 5, "skipped": 2}, dry=False, optional=2)
    assert status == "ok" and "nvdiffrast is not installed" in shown
    assert judge(0, {"passed": 5, "skipped": 3}, dry=False, optional=2)[0] == "FAIL"


def test_cuda_quality_far_below_the_cpu_reference_fails():
    gpu_check = load_script()

    def run(iou, err, export_error=None):
        return gpu_check.RunResult(Path("."), "cuda", 300, 10.0, iou, err, export_error=export_error)

    cpu = run(0.90, 0.05)
    assert gpu_check.compare_quality("nerf", run(0.86, 0.08), cpu) == []
    assert "IoU" in gpu_check.compare_quality("nerf", run(0.84, 0.05), cpu)[0]
    assert "colour error" in gpu_check.compare_quality("nerf", run(0.90, 0.11), cpu)[0]
    assert "export failed" in gpu_check.compare_quality("nerf", run(0.90, 0.05, "no surface"), cpu)[0]
