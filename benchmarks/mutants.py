"""Mutation check of the guidance maths: does the test suite notice when a formula is wrong?

Each mutant is one deliberate, meaningful break of `guidance/` or `guidance/priors/` (a flipped
sign, a dropped or squared factor, swapped cond/uncond, a wrong timestep, a removed inversion
step, a wrong schedule index). Each is applied in a scratch copy of the repository (never here)
and the fast guidance tests run against it; a failing run kills the mutant. Prints every mutant,
the kill rate and the survivors, and exits 1 when any survive.

    python benchmarks/mutants.py              # all mutants, one at a time (about 10-25 min on 2 cores)
    python benchmarks/mutants.py --list       # what each mutant breaks
    python benchmarks/mutants.py --only cfg-threestudio sds-sign --jobs 2 --out mutants.json
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# the fast guidance tests: every formula, prior and DDIM check (about a minute on 2 cores)
TESTS = ("tests/test_guidance_known_answers.py", "tests/test_guidance.py", "tests/test_guidance_family.py",
         "tests/test_perp_neg.py", "tests/test_prior.py", "tests/test_toyworld.py", "tests/test_stable_diffusion.py",
         "tests/test_multiview_prior.py", "tests/test_mvdream.py", "tests/test_image_to_3d.py", "tests/test_zero123.py")


@dataclass(frozen=True)
class Mutant:
    id: str
    path: str  # relative to the repository root
    find: str  # must occur exactly once in the file
    replace: str
    what: str

    def apply(self, text: str) -> str:
        if text.count(self.find) != 1:
            raise ValueError(f"mutant {self.id}: {self.find!r} occurs {text.count(self.find)} times in {self.path}, "
                             "not once: update the mutant to the current code")
        return text.replace(self.find, self.replace)


M = Mutant
MUTANTS: tuple[Mutant, ...] = (
    # shared machinery (guidance/core.py)
    M("weighting-sds", "guidance/core.py", 'if name == "sds":\n        return 1 - abar', 'if name == "sds":\n        return abar',
      "w(t) = abar instead of 1 - abar"),
    M("weighting-ism", "guidance/core.py", "return (1 - abar).sqrt() / abar.sqrt()", "return (1 - abar) / abar.sqrt()",
      "ISM weighting s_t / a_t loses its square root"),
    M("cfg-threestudio", "guidance/core.py", "return (eps_u + scale * (eps_y - eps_u), eps_y, eps_u, *rest)",
      "return (eps_y + scale * (eps_y - eps_u), eps_y, eps_u, *rest)", "CFG from eps_y (threestudio's w + 1 convention)"),
    M("cfg-swap-cond-uncond", "guidance/core.py",
      "[(x_t, t, cond.cond(cameras)), (x_t, t, cond.uncond(cameras)), *extra]",
      "[(x_t, t, cond.uncond(cameras)), (x_t, t, cond.cond(cameras)), *extra]", "cond and uncond predictions swapped"),
    M("inject-sign", "guidance/core.py", "target = (x - grad).detach()", "target = (x + grad).detach()",
      "gradient injected with the wrong sign"),
    M("noise-sign", "guidance/core.py", "return t, noise, self.prior.add_noise(x, t, noise)",
      "return t, noise, self.prior.add_noise(x, t, -noise)", "x_t noised with -noise while SDS subtracts +noise"),
    M("timestep-range", "guidance/core.py", "return draws.randint(lo, hi + 1, (batch // group,), generator, device)",
      "return draws.randint(lo, hi // 2 + 1, (batch // group,), generator, device)", "timesteps from half the configured range"),
    M("perp-neg-projection", "guidance/core.py", "    return a - coef * b\n", "    return a + coef * b\n",
      "Perp-Neg adds the parallel component instead of removing it"),
    M("pixel-clip-amax", "guidance/core.py", ".clamp(max=1.0).amin(1, keepdim=True)", ".clamp(max=1.0).amax(1, keepdim=True)",
      "pixel-wise clipping by the weakest channel's scale"),
    # objectives
    M("sds-sign", "guidance/sds.py", "(eps_w - noise)", "(noise - eps_w)", "SDS gradient sign flipped"),
    M("ddim-plain-scaling", "guidance/ddim.py", "x_u, u = ddim_step(prior, x_u, u, v, eps), v",
      "x_u, u = prior.coefficients(v, x.ndim)[0] * x, v", "DDIM inversion replaced by plain scaling a_t x"),
    M("ddim-one-step-fewer", "guidance/ddim.py", "n = max(1, min(max_steps, math.ceil(int(target.max()) / stride)))",
      "n = max(1, min(max_steps, math.ceil(int(target.max()) / stride)) - 1)", "one inversion step removed"),
    M("ddim-step-keeps-x", "guidance/ddim.py", "return prior.add_noise(prior.x0_from_eps(x_u, u, eps), v, eps)",
      "return prior.add_noise(x_u, v, eps)", "a DDIM step treats x_u as clean (no x0 prediction)"),
    M("ism-inverts-with-y", "guidance/ism.py", "empty = cond.empty(cameras)", "empty = cond.cond(cameras)",
      "ISM inverts with the prompt instead of the empty prompt"),
    M("ism-interval", "guidance/ism.py", "s = (t - int(round(self.delta_t(step)))).clamp(min=0)",
      "s = (t - 2 * int(round(self.delta_t(step)))).clamp(min=0)", "ISM interval doubled"),
    M("ism-weight-at-s", "guidance/ism.py", "return self.weight(t, x.ndim) * (eps_w - eps_s), batch_stats(t)",
      "return self.weight(s, x.ndim) * (eps_w - eps_s), batch_stats(t)", "ISM weighted at s instead of t"),
    M("tsm-gamma", "guidance/ism.py", "math.sqrt(1 - self.cfg.gamma**2)", "math.sqrt(1 - self.cfg.gamma)",
      "TSM's mu uses sqrt(1 - gamma)"),
    M("tsm-target-timestep", "guidance/ism.py", "extra=[(x_mu, mu, cond.empty(cameras))]",
      "extra=[(x_mu, t, cond.empty(cameras))]", "TSM's target predicted at t instead of mu"),
    M("csd-sign", "guidance/classifier_score.py", "direction = eps_y - eps_u", "direction = eps_u - eps_y",
      "CSD's classifier direction flipped"),
    M("csd-null-weight", "guidance/classifier_score.py", "a_null = -1.0 - a_neg", "a_null = 1.0 - a_neg",
      "CSD's weights no longer sum to zero"),
    M("csm-drops-scale", "guidance/classifier_score.py",
      "self.weight(t, x.ndim) * self.guidance_scale(step) * (eps_y - eps_u)", "self.weight(t, x.ndim) * (eps_y - eps_u)",
      "CSM drops the CFG scale"),
    M("nfsd-delta-sign", "guidance/classifier_score.py", "torch.where(small, eps_e, eps_e - eps_neg)",
      "torch.where(small, eps_e, eps_neg - eps_e)", "NFSD's realism term flipped"),
    M("nfsd-small-t", "guidance/classifier_score.py", "small = per_sample(t < self.cfg.small_t, x.ndim)",
      "small = per_sample(t > self.cfg.small_t, x.ndim)", "NFSD's small-t branch taken at large t"),
    M("bsd-drops-a_t", "guidance/bsd.py", "return self.weight(t, x.ndim) * g, batch_stats(t, alpha=alpha)",
      "return g, batch_stats(t, alpha=alpha)", "BSD drops its a_t factor"),
    M("bsd-no-clip", "guidance/bsd.py", ".clamp(min=1e-20)).clamp(0, 1)", ".clamp(min=1e-20))",
      "BSD's alpha leaves the segment"),
    M("asd-delay-sign", "guidance/asd.py", "t_d = t + torch.floor(", "t_d = t - torch.floor(", "ASD delays backwards"),
    M("asd-target-at-t", "guidance/asd.py", "extra=[(x_d, t_d, cond.cond(cameras))]", "extra=[(x_d, t, cond.cond(cameras))]",
      "ASD's delayed target predicted at t"),
    M("cds-sign", "guidance/cds.py", "(eps_t - eps_tp)", "(eps_tp - eps_t)", "CDS gradient sign flipped"),
    M("cds-linear-anneal", "guidance/cds.py", "* math.sqrt(f)))", "* f))", "CDS's t' annealed linearly, not by sqrt"),
    M("vsd-sign", "guidance/vsd.py", "(eps_w - eps_fake)", "(eps_fake - eps_w)", "VSD gradient sign flipped"),
    M("esd-lambda", "guidance/vsd.py", "return 1.0 - self.cfg.entropy_weight", "return self.cfg.entropy_weight",
      "ESD's camera scale is lambda instead of 1 - lambda"),
    M("fake-camera-cfg", "guidance/fake_score.py", "return eps_0 + scale * (eps_c - eps_0)",
      "return eps_c + scale * (eps_c - eps_0)", "camera CFG extrapolates from the conditional branch"),
    M("fake-loss-sign", "guidance/fake_score.py", "((pred - noise) ** 2).mean()", "((pred + noise) ** 2).mean()",
      "fake score trained to predict -noise"),
    M("fdiv-h-js", "guidance/fdiv.py", "return r / (1 + r)", "return 1 / (1 + r)", "Jensen-Shannon's h(r) is the softened KL's"),
    M("fdiv-disc-swap", "guidance/fdiv.py", "(F.softplus(l_fake) + F.softplus(-l_real))",
      "(F.softplus(-l_fake) + F.softplus(l_real))", "discriminator's real and fake swapped"),
    M("fdiv-kde-count", "guidance/fdiv.py", "torch.logsumexp(log_kernel, -1) - same.sum(-1).double().log()",
      "torch.logsumexp(log_kernel, -1)", "exact q_t loses its 1/N"),
    M("fdiv-h-unnormalised", "guidance/fdiv.py", "h = per_sample(h / h.mean(), x.ndim)", "h = per_sample(h, x.ndim)",
      "f-div's h not normalised by its batch mean"),
    # priors (guidance/priors/)
    M("x0-sign", "guidance/priors/base.py", "return (x_t - s * eps) / a", "return (x_t + s * eps) / a",
      "x0 prediction adds the noise"),
    M("marginal-unsquared", "guidance/priors/base.py", "return abar.sqrt(), (1 - abar).sqrt()", "return abar, (1 - abar)",
      "a_t, s_t without square roots"),
    M("schedule-not-squared", "guidance/priors/base.py",
      "betas = torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float64) ** 2",
      "betas = torch.linspace(beta_start, beta_end, T, dtype=torch.float64)", "linear instead of scaled-linear betas"),
    M("toyworld-logit-factor", "guidance/priors/toyworld.py", "return -d2.clamp(min=0) / (2 * (1 - abar)) + log_w",
      "return -d2.clamp(min=0) / (1 - abar) + log_w", "ToyWorld posterior drops the 1/2"),
    M("toyworld-window-swap", "guidance/priors/toyworld.py",
      "keep = (d_az < self.cfg.window_azimuth) & (d_el < self.cfg.window_elevation)",
      "keep = (d_az < self.cfg.window_elevation) & (d_el < self.cfg.window_azimuth)", "camera window's axes swapped"),
    M("toyworld-text-bucket", "guidance/priors/toyworld.py", "views = [v or view_bucket(float(e), float(a))",
      "views = [view_bucket(float(e), float(a))", "text conditioning ignores the prompt's view word"),
    M("multiview-likelihood-a2", "guidance/priors/toyworld_multiview.py", "+ a_t**2 * (cand * cand).sum(-1)",
      "+ a_t * (cand * cand).sum(-1)", "multi-view posterior: |a x_K|^2 with a instead of a^2"),
    M("multiview-views-averaged", "guidance/priors/toyworld_multiview.py", "(2 * s2)).sum(-1), 0)", "(2 * s2)).mean(-1), 0)",
      "multi-view posterior averages the views' log-likelihoods instead of summing them"),
    M("multiview-turns-reversed", "guidance/priors/toyworld_multiview.py", "az = (a - a[0])[None] + torch",
      "az = (a[0] - a)[None] + torch", "multi-view candidates turn the views the wrong way round"),
    M("multiview-timestep-per-view", "guidance/core.py",
      "return self.timesteps.sample(batch, step, generator, device, self.prior.joint_views)",
      "return self.timesteps.sample(batch, step, generator, device)", "a multi-view group's views noised at different t"),
    M("image-sigma-not-squared", "guidance/priors/toyworld_multiview.py", "/ (2 * sigma**2))", "/ (2 * sigma))",
      "image-to-3D: the reference likelihood divides by 2 sigma, not 2 sigma^2"),
    M("image-turn-reversed", "guidance/priors/toyworld_multiview.py", "self.object_views(obj, e, a[None] + turns[:, None])",
      "self.object_views(obj, e, a[None] - turns[:, None])", "image-to-3D: candidates turned the wrong way"),
    M("image-reference-ignored", "guidance/priors/toyworld_multiview.py", "w = torch.softmax(log_prior - (d2",
      "w = torch.softmax(0 * log_prior - (d2", "image-to-3D: the novel view's posterior forgets the reference"),
    M("mvdream-groups-strided", "guidance/priors/mvdream.py",
      "grouped = hidden_states.reshape(bn // self.views, self.views * length, channels)",
      "grouped = hidden_states.reshape(self.views, bn // self.views, length, channels).transpose(0, 1).reshape("
      "bn // self.views, self.views * length, channels)", "MVDream attends across strided images, not a group's views"),
    M("mvdream-no-camera", "guidance/priors/mvdream.py", '"class_labels": mvdream_camera(cameras).to(',
      '"class_labels": 0 * mvdream_camera(cameras).to(', "MVDream's camera embedding gets zeros"),
    M("mvdream-camera-z-up", "guidance/priors/mvdream.py", "torch.stack([c2w[:, 0], -c2w[:, 2], c2w[:, 1], c2w[:, 3]], 1)",
      "torch.stack([c2w[:, 0], c2w[:, 2], c2w[:, 1], c2w[:, 3]], 1)", "MVDream's camera turned to Z-up with a reflection"),
    M("zero123-latent-scaled", "guidance/priors/zero123.py",
      "latent = self.vae.encode((img * 2 - 1).to(self.device, self.vae.dtype)).latent_dist.mode()[0]",
      "latent = self.vae.encode((img * 2 - 1).to(self.device, self.vae.dtype)).latent_dist.mode()[0]"
      " * self.vae.config.scaling_factor", "Zero123's reference latent scaled like x (it is concatenated unscaled)"),
    M("zero123-polar-sign", "guidance/priors/zero123.py", "torch.deg2rad(ref_elev - elev)", "torch.deg2rad(elev - ref_elev)",
      "Zero123's polar change with the elevation's sign"),
    M("zero123-sin-cos", "guidance/priors/zero123.py", "torch.sin(d_az), torch.cos(d_az)", "torch.cos(d_az), torch.sin(d_az)",
      "Zero123's azimuth sine and cosine swapped"),
    M("zero123-uncond-latent", "guidance/priors/zero123.py",
      "torch.stack([e.latent if e.clip is not None else torch.zeros(shape) for e in text])",
      "torch.stack([text[0].latent if text[0].clip is not None else torch.zeros(shape) for e in text])",
      "Zero123's unconditional branch keeps the reference latent"),
    M("zero123-stable-polar", "guidance/priors/zero123.py", "torch.deg2rad(90 - ref_elev) if stable",
      "torch.deg2rad(ref_elev) if stable", "Stable Zero123's 4th number is the elevation, not the polar angle"),
    M("gmm-score-factor", "guidance/priors/gaussian_mixture.py", "(r[..., None] * (-diff / var[..., None])).sum(1)",
      "(r[..., None] * (-diff / var[..., None].sqrt())).sum(1)", "Gaussian-mixture score divided by the std"),
    M("sd-encode-scaling", "guidance/priors/stable_diffusion.py",
      "latents = self.vae.encode(x).latent_dist.mode() * self.vae.config.scaling_factor",
      "latents = self.vae.encode(x).latent_dist.mode()", "SD encode drops the VAE scaling_factor"),
    M("v-pred-swap", "guidance/priors/diffusers_unet.py", "s * x_t + a * out", "a * x_t + s * out",
      "v-prediction converted with a and s swapped"),
)


def repo_files(root: Path) -> list[str]:
    """The files a scratch copy needs: tracked and untracked-but-not-ignored."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=root, capture_output=True, text=True,
                         check=True).stdout
    return [line for line in out.splitlines() if line and (root / line).is_file()]


def scratch_copy(root: Path, dest: Path) -> Path:
    for rel in repo_files(root):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, target)
    return dest


def run_tests(copy: Path, timeout: float) -> tuple[bool, str, float]:
    """(passed, the first failing test or the reason, seconds) of the fast guidance tests in `copy`."""
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *TESTS], cwd=copy,
                              env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout:.0f} s", time.perf_counter() - start
    seconds = time.perf_counter() - start
    if proc.returncode == 0:
        return True, "", seconds
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", proc.stdout, re.M)
    return False, failed[0] if failed else (proc.stdout + proc.stderr).strip().splitlines()[-1][:200], seconds


def check_mutant(m: Mutant, copy: Path, timeout: float) -> dict:
    path = copy / m.path
    original = path.read_text()
    path.write_text(m.apply(original))
    try:
        passed, why, seconds = run_tests(copy, timeout)
    finally:
        path.write_text(original)
    return {**asdict(m), "killed": not passed, "killed_by": why, "seconds": round(seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", help="mutant ids to run (default: all)")
    ap.add_argument("--jobs", type=int, default=1, help="scratch copies tested at once (default 1: 2-core machines)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per test run")
    ap.add_argument("--out", type=Path, help="write the results as JSON")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = ap.parse_args(argv)
    mutants = [m for m in MUTANTS if not args.only or m.id in args.only]
    unknown = set(args.only or ()) - {m.id for m in MUTANTS}
    if unknown:
        ap.error(f"unknown mutant ids: {', '.join(sorted(unknown))}; see --list")
    for m in mutants:  # stale mutants fail before any work
        m.apply((ROOT / m.path).read_text())
    if args.list:
        for m in mutants:
            print(f"{m.id:24s} {m.path:38s} {m.what}")
        return 0
    with tempfile.TemporaryDirectory(prefix="dream3d-mutants-") as tmp:
        copies = [scratch_copy(ROOT, Path(tmp) / f"copy{i}") for i in range(max(1, args.jobs))]
        probe = subprocess.run([sys.executable, "-c", "import guidance; print(guidance.__file__)"], cwd=copies[0],
                               env={**os.environ, "PYTHONPATH": str(copies[0])}, capture_output=True, text=True)
        if not probe.stdout.startswith(str(copies[0])):
            print(f"error: the scratch copy's code is not the one imported ({probe.stdout.strip()})", file=sys.stderr)
            return 2
        print(f"baseline: the {len(TESTS)} test files on an unmutated copy ...", flush=True)
        passed, why, seconds = run_tests(copies[0], args.timeout)
        if not passed:
            print(f"error: the tests fail without any mutant ({why}); fix that first", file=sys.stderr)
            return 2
        print(f"baseline passed in {seconds:.0f} s; {len(mutants)} mutants", flush=True)
        results: list[dict] = []

        def work(i: int, m: Mutant) -> dict:
            r = check_mutant(m, copies[i % len(copies)], args.timeout)
            print(f"[{i + 1}/{len(mutants)}] {m.id}: {'killed by ' + r['killed_by'] if r['killed'] else 'SURVIVED'} "
                  f"({r['seconds']} s)", flush=True)
            return r

        with ThreadPoolExecutor(len(copies)) as pool:
            # one copy per worker: mutant i goes to copy i mod jobs, and a copy runs one mutant at a time
            lanes = [[(i, m) for i, m in enumerate(mutants) if i % len(copies) == k] for k in range(len(copies))]
            futures = [pool.submit(lambda lane: [work(i, m) for i, m in lane], lane) for lane in lanes]
            for f in futures:
                results += f.result()
    results.sort(key=lambda r: [m.id for m in mutants].index(r["id"]))
    print("\n| mutant | file | what | killed by | s |\n|---|---|---|---|---|")
    for r in results:
        verdict = r["killed_by"] if r["killed"] else "**SURVIVED**"
        print(f"| {r['id']} | {r['path']} | {r['what']} | {verdict} | {r['seconds']} |")
    survivors = [r["id"] for r in results if not r["killed"]]
    print(f"\nkilled {len(results) - len(survivors)} of {len(results)} "
          f"({100 * (len(results) - len(survivors)) / max(1, len(results)):.0f}%); survivors: {', '.join(survivors) or 'none'}")
    if args.out:
        args.out.write_text(json.dumps({"tests": TESTS, "results": results, "survivors": survivors}, indent=1))
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
