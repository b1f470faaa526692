"""What a run costs before it starts: peak memory and wall time on a 2-core CPU, per phase.

A shared web UI refuses a request whose estimate exceeds its budget (webapp.RequestBudget), so
no single visitor can exhaust the server through any combination of keys (texture size, face
budget, dataset size, Gaussian count, steps x resolution, ...). The model is a sum of simple
work counts (samples marched, pixels x Gaussians, texels, grid points, dataset images) times
per-unit constants measured on this project's 2-core machines; `benchmarks/request_cost.py`
prints measured / estimated side by side for a spread of configs, so the constants can be
checked (and retuned) on any machine. It is an estimate for admission control, not a profiler:
it aims to be above the measurement, within a small factor.
"""
from __future__ import annotations

from dataclasses import dataclass, field

# per-unit costs on 2 CPU cores (seconds or bytes), fitted to `python benchmarks/request_cost.py`
BASE_BYTES = 1.0e9  # the Python process: 0.4 GB after imports, the rest allocator slack seen in runs
SECONDS_PER_SAMPLE_TRAIN = 0.5e-6  # NeRF: one ray sample forward + backward (hash grid + MLP), per 32 hidden units
BYTES_PER_SAMPLE_TRAIN = 2.5e3  # NeRF: activations kept for backward per sample
SECONDS_PER_SAMPLE_EVAL = 0.2e-6  # NeRF: one ray sample without gradients (previews, turntable, export maps)
SECONDS_PER_SPLAT_PIXEL = 8e-9  # Gaussians: one (pixel, Gaussian) pair in a tile, forward + backward
BYTES_PER_SPLAT_PIXEL = 16.0  # Gaussians: kept for backward per (pixel, Gaussian) pair
SPLAT_PIXELS_PER_GAUSSIAN = 300.0  # pixels of the tiles a Gaussian touches at 32 px (measured to grow ~linearly
# with the resolution, not with its square: tiles whose pixels have terminated drop out)
SECONDS_PER_PRIOR_FLOP = 5e-11  # ToyWorld denoiser: distances and weighted sums over the view set
SECONDS_PER_DATASET_RAY = 3e-8  # ToyWorld dataset: one supersampled ray (rendered once, then cached)
SECONDS_PER_GRID_POINT = 1.0e-6  # export: the carving / density field at one grid point
BYTES_PER_GRID_POINT = 100.0
SURFACE_MAP_CAMERAS, SURFACE_MAP_MAX_RESOLUTION = 32, 96  # export: the renders the carving field reads
SECONDS_PER_TEXEL = 3.0e-6  # export: baking one texel (nearest surface, padding)
BYTES_PER_TEXEL = 500.0  # issue 19 measured 6.9 GB of RSS for a 4096^2 texture
SECONDS_PER_FACE = 0.35e-3  # export: decimation, xatlas UVs (6.6 s of 10 s at 30k faces), writing and checks ...
FACE_EXPONENT = 1.5  # ... growing faster than linearly (565 s for ~500k faces)
BYTES_PER_FACE = 2e3
CHECKPOINT_SECONDS, CHECKPOINT_BYTES_PER_SECOND = 0.05, 200e6  # per checkpoint: pickling and fsync
FACES_PER_GRID_CELL2 = 8.0  # marching cubes: faces ~ this x resolution^2 for an object filling the box
# Stable Diffusion: rough figures for one UNet prediction of a 512 px image (64x64 latent), not measured here
SD_SECONDS_PER_PREDICTION = {"cuda": 0.05, "cpu": 3.0}  # fp16 on a current GPU; fp32 on 2 CPU cores
SD_HOST_BYTES = {"cuda": 2.5e9, "cpu": 6e9}  # host memory: loading and moving to the GPU; fp32 weights + activations
# DeepFloyd IF stage I XL (4.3B UNet) with T5-XXL (4.8B): rough guesses from the parameter counts, not measured
IF_SECONDS_PER_PREDICTION = {"cuda": 0.15, "cpu": 30.0}
IF_HOST_BYTES = {"cuda": 10e9, "cpu": 40e9}
# mesh scenes (renderers/mesh; the refinement stages), from torch.profiler on 2 busy cores (2026-12-02): at grid
# resolution 32 and 4 views of 64 px, marching tetrahedra 28 ms, rasterising 32 ms, regularisers 12 ms a step
SECONDS_PER_TET = 3e-7  # marching tetrahedra and the SDF regulariser, per tetrahedron (6 per grid cell), fwd + bwd
BYTES_PER_TET = 300.0
SECONDS_PER_MESH_PIXEL = 4e-6  # rasterising, interpolating, the albedo field and antialiasing, per pixel, fwd + bwd
BYTES_PER_MESH_PIXEL = 4e3
VIEW_COLOURS = 6  # ToyWorld: a colour-free prompt's view set holds every colour


@dataclass
class Cost:
    """Estimated peak memory (bytes) and wall time (seconds) of a run, with the phases behind them."""

    seconds: float = 0.0
    peak_bytes: float = BASE_BYTES
    phases: dict[str, tuple[float, float]] = field(default_factory=dict)  # phase -> (seconds, peak bytes)

    def add(self, phase: str, seconds: float, peak_bytes: float) -> None:
        self.phases[phase] = (seconds, peak_bytes)
        self.seconds += seconds
        self.peak_bytes = max(self.peak_bytes, BASE_BYTES + peak_bytes)

    def largest(self, n: int = 3) -> str:
        """The costliest phases, for messages: 'training 812 s / 1.50 GiB, export 40 s / 1.38 GiB'."""
        top = sorted(self.phases.items(), key=lambda kv: -kv[1][0])[:n]
        return ", ".join(f"{k} {s:.0f} s / {b / 2**30:.2f} GiB" for k, (s, b) in top)


def scene_parameter_bytes(scene) -> float:
    """Parameters with their gradients and Adam's two moments (x4), at the scene's largest size."""
    grid = 0.0
    if scene.name == "mesh":  # an SDF value and a vertex offset per grid vertex, then the albedo field's grid
        grid = (scene.grid_resolution + 1) ** 3 * 4 * 4 * 4
    if scene.name == "gaussians":
        floats = 3 + 4 + 3 + 1 + 3 * (scene.sh_degree + 1) ** 2  # means, quats, scales, opacity, SH colours
        return scene.max_gaussians * floats * 4 * 4
    growth = (scene.max_resolution / scene.base_resolution) ** (1 / max(1, scene.num_levels - 1))
    entries = sum(min((scene.base_resolution * growth**level) ** 3, 2**scene.log2_hashmap_size)
                  for level in range(scene.num_levels))
    return grid + entries * scene.features_per_level * 4 * 4


def _mesh_render(scene, views: int, resolution: int, train: bool) -> tuple[float, float]:
    """The whole tetrahedral grid is marched every render, then each pixel is rasterised and shaded."""
    tets, pixels = 6 * scene.grid_resolution**3, views * resolution**2
    seconds = tets * SECONDS_PER_TET + pixels * SECONDS_PER_MESH_PIXEL
    return (seconds if train else seconds / 2), tets * BYTES_PER_TET + pixels * BYTES_PER_MESH_PIXEL


def _nerf_render(scene, views: int, resolution: int, samples: int, train: bool) -> tuple[float, float]:
    n = views * resolution**2 * samples * max(1.0, scene.hidden_dim / 32) * max(1.0, scene.num_levels / 4)
    if train:
        return n * SECONDS_PER_SAMPLE_TRAIN, n * BYTES_PER_SAMPLE_TRAIN
    return n * SECONDS_PER_SAMPLE_EVAL, min(n, scene.chunk_rays * samples) * BYTES_PER_SAMPLE_TRAIN / 3


def _splat_render(scene, views: int, resolution: int, train: bool) -> tuple[float, float]:
    """At the largest count the scene may reach (scene.max_gaussians): an upper bound while it grows."""
    pairs = views * scene.max_gaussians * SPLAT_PIXELS_PER_GAUSSIAN * (resolution / 32)
    pairs = max(pairs, views * resolution**2 * 8.0)
    seconds = pairs * SECONDS_PER_SPLAT_PIXEL * (1.0 if train else 0.4)
    kept = pairs if train else pairs / views  # without gradients, one view's pairs at a time
    return seconds, kept * BYTES_PER_SPLAT_PIXEL


def render_cost(scene, views: int, resolution: int, train: bool) -> tuple[float, float]:
    """(seconds, bytes) of rendering `views` images at `resolution` (with gradients when train)."""
    if scene.name == "gaussians":
        return _splat_render(scene, views, resolution, train)
    if scene.name == "mesh":
        return _mesh_render(scene, views, resolution, train)
    samples = scene.samples_per_ray if train else scene.eval_samples_per_ray
    return _nerf_render(scene, views, resolution, samples, train)


def prior_cost(cfg) -> tuple[float, float, float]:
    """ToyWorld: (seconds per prediction per image, dataset build seconds, resident bytes)."""
    p = cfg.prior
    if p.name != "toyworld":  # a diffusers model, on the device it will run on
        import torch

        name = cfg.train.device if p.device == "auto" else p.device  # prior.device=auto follows train.device
        device = "cuda" if name.startswith("cuda") or (name == "auto" and torch.cuda.is_available()) else "cpu"
        if p.name == "deepfloyd_if":  # a pixel-space 64 px UNet of billions of parameters and a T5-XXL: no resizing
            return IF_SECONDS_PER_PREDICTION[device], 0.0, IF_HOST_BYTES[device]
        # unset: the model's own (Zero123 256, SDXL 1024, SD 512; zero123-xl is Zero123's, not SDXL's size)
        res = p.resolution or (256 if p.name == "zero123" else 1024 if "xl" in p.model.lower() else 512)
        return SD_SECONDS_PER_PREDICTION[device] * (res / 512) ** 2, 0.0, SD_HOST_BYTES[device]
    from dream3d.toyworld.catalogue import COLOURS, SHAPES

    dim = 3 * p.resolution**2
    if p.views > 1:  # the multi-view prior: candidates from a camera grid, one group of views at a time
        from dream3d.toyworld.dataset import grid_elevations

        grid = grid_elevations(p.grid_elevation_step) * p.grid_azimuth_steps
        turns = 1 if p.view_conditioning == "camera" else p.grid_azimuth_steps
        candidates = len(SHAPES) * len(COLOURS) * turns  # the unconditional prompt's: the most
        build = len(SHAPES) * grid * (2 * p.dataset_resolution) ** 2 * SECONDS_PER_DATASET_RAY
        layers = len(SHAPES) * grid * 3 * (p.dataset_resolution**2 * 2 + p.resolution**2 * 4)  # cached, then resized
        work = 2 * candidates * p.views * dim * 4  # one group's candidate views and their squares, float32
        return 2.0 * candidates * dim * SECONDS_PER_PRIOR_FLOP, build, layers + work
    cond = VIEW_COLOURS * p.num_views
    uncond = len(SHAPES) * len(COLOURS) * min(p.uncond_views_per_item, p.num_views)
    per_image = 2.0 * max(cond, uncond) * dim * SECONDS_PER_PRIOR_FLOP  # logits + weighted sum over a view set
    build = len(SHAPES) * p.num_views * (2 * p.dataset_resolution) ** 2 * SECONDS_PER_DATASET_RAY
    layers = len(SHAPES) * p.num_views * 3 * p.dataset_resolution**2 * 2  # float16, every shape
    sets = (cond + uncond) * dim * 4 * 2  # float32 view sets and their transposed copies
    work = 3 * p.num_views * p.dataset_resolution**2 * 4 * 2  # one shape's layers as float32 while tinting
    return per_image, build, layers + sets + work


def export_cost(scene, e) -> tuple[float, float]:
    """(seconds, bytes) of a mesh export: surface maps and the carving field on a coarse and a fine
    grid, marching cubes, xatlas and the texture bake."""
    seconds = 0.0
    for res in (max(16, e.resolution // 4), e.resolution):
        image = min(SURFACE_MAP_MAX_RESOLUTION, res)
        if scene.name == "gaussians":
            seconds += render_cost(scene, SURFACE_MAP_CAMERAS, image, train=False)[0]
        else:
            seconds += SURFACE_MAP_CAMERAS * image**2 * 2 * res * SECONDS_PER_SAMPLE_EVAL
    points = max(16, e.resolution // 4) ** 3 + e.resolution**3
    faces = FACES_PER_GRID_CELL2 * e.resolution**2
    faces = min(faces, e.max_faces) if e.max_faces else faces
    texels = e.texture_size**2 if e.colors == "texture" and set(e.formats) - {"ply", "splat"} else 0
    seconds += (points * SECONDS_PER_GRID_POINT + texels * SECONDS_PER_TEXEL
                + SECONDS_PER_FACE * 30000 * (faces / 30000) ** FACE_EXPONENT)
    return seconds, max(points * BYTES_PER_GRID_POINT, texels * BYTES_PER_TEXEL) + faces * BYTES_PER_FACE


def estimate_cost(cfg) -> Cost:
    """Estimated peak memory and wall time of running `cfg` (a RunConfig) to its last step."""
    cost = Cost()
    t, o, e, scene = cfg.train, cfg.output, cfg.output.export, cfg.scene
    per_image, build, resident = prior_cost(cfg)
    cost.add("dataset", build, resident)
    resident += scene_parameter_bytes(scene)
    g = cfg.guidance
    bank = g.prior_calls_at_start()  # f-divergence's teacher samples
    step_s, step_b = render_cost(scene, t.batch_size, t.resolution, train=True)
    if cfg.image:  # image-to-3D also renders the reference view every step
        ref_s, ref_b = render_cost(scene, 1, cfg.reference.resolution, train=True)
        step_s, step_b = step_s + ref_s, step_b + ref_b
    guidance_s = t.batch_size * per_image * (g.prior_calls_per_image() + g.perp_neg_calls())
    cost.add("training", t.steps * (step_s + guidance_s) + bank * per_image, resident + step_b)
    checkpoints = t.steps // max(1, o.checkpoint_every) + 1
    state = scene_parameter_bytes(scene)  # parameters + Adam moments, written every checkpoint
    cost.add("checkpoints", checkpoints * (CHECKPOINT_SECONDS + state / CHECKPOINT_BYTES_PER_SECOND), resident)
    previews = t.steps // max(1, o.val_every) + 1
    prev_s, prev_b = render_cost(scene, 4, o.val_resolution, train=False)
    cost.add("previews", previews * prev_s, resident + prev_b)
    frame_s, frame_b = render_cost(scene, 1, o.turntable_resolution, train=False)
    cost.add("turntable", o.turntable_frames * frame_s,
             resident + frame_b + o.turntable_frames * o.turntable_resolution**2 * 3)  # frames kept for the video
    if cfg.refine.enabled:  # the coarse surface as an SDF (the export's carving field), then the mesh stages
        r = cfg.refine
        image = min(SURFACE_MAP_MAX_RESOLUTION, r.sdf_resolution)
        sdf_s = (SURFACE_MAP_CAMERAS * image**2 * 2 * r.sdf_resolution * SECONDS_PER_SAMPLE_EVAL
                 + r.sdf_resolution**3 * SECONDS_PER_GRID_POINT)
        mesh_s, mesh_b = render_cost(r.mesh, t.batch_size, r.resolution, train=True)
        steps = r.geometry_steps + r.texture_steps
        cost.add("refine", sdf_s + steps * (mesh_s + guidance_s),
                 resident + scene_parameter_bytes(r.mesh) + max(mesh_b, r.sdf_resolution**3 * BYTES_PER_GRID_POINT))
    mesh_formats = [f for f in e.formats if f != "splat"]
    if mesh_formats:
        export_s, export_b = export_cost(scene, e)
        cost.add("export", export_s, resident + export_b)
    return cost
