"""Typed run configuration: dataclass schema (typed and merged by OmegaConf) + YAML presets +
`key=value` overrides, read as plain YAML and never interpolated.

`prior`, `guidance` and `scene` are sections whose schema is chosen by their `name` from the
registries, so `guidance.name=sds` accepts exactly SDS's keys. Every key and value is checked
before any work; errors name the key and the valid options.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dream3d.convergence import ConvergenceConfig
from dream3d.export.config import ExportConfig, validate_export
from dream3d.kernel.device import check_device_name
from dream3d.kernel.schema import ConfigError, bounded, choice, server_only, validate_fields
from dream3d.scenes import check_scene_config
from dream3d.train_log import LOGGERS
from renderers.mesh.rasterize import check_rasterizer
from renderers.mesh.scene import MeshConfig

MAX_PROMPT_CHARS = 300


@dataclass
class CameraConfig:
    elevation_range: list[float] = field(default_factory=lambda: [-10.0, 45.0])
    azimuth_range: list[float] = field(default_factory=lambda: [-180.0, 180.0])
    distance: float = bounded(2.5, 0.5, 100.0)
    fovy: float = bounded(40.0, 1.0, 150.0)


@dataclass
class TrainConfig:
    steps: int = bounded(1000, 1, 1_000_000)
    batch_size: int = bounded(4, 1, 64)  # views per step
    resolution: int = bounded(32, 8, 1024)  # render resolution during training
    max_bad_steps: int = bounded(20, 1, None)  # consecutive non-finite steps before the run stops
    # where every tensor of a step lives (dream3d/kernel/device.py); auto = CUDA when available.
    # server_only: a web visitor does not choose the server's hardware
    device: str = server_only("auto")  # auto | cpu | cuda | cuda:N | mps
    convergence: ConvergenceConfig = field(default_factory=ConvergenceConfig)  # stop early once converged


@dataclass
class OutputConfig:
    out_dir: str = server_only("runs")
    name: str | None = server_only(None)  # run folder name; default from prompt, config and seed
    checkpoint_every: int = bounded(200, 1, None)
    val_every: int = bounded(200, 1, None)
    val_resolution: int = bounded(64, 8, 1024)
    turntable_frames: int = bounded(36, 0, 720)  # 0 = no turntable
    turntable_resolution: int = bounded(128, 16, 1024)
    video_format: str = choice("mp4", ("mp4", "gif"))
    export: ExportConfig = field(default_factory=ExportConfig)
    progress: bool = True
    # per-step logs in logs/: steps.csv always, plus TensorBoard (auto: when installed) or W&B (dream3d/train_log.py)
    # (server_only: a web visitor does not choose where the server logs to)
    logger: str = field(default="auto", metadata={"choices": LOGGERS, "server_only": True})


@dataclass
class EvalConfig:
    num_cameras: int = bounded(8, 1, 256)
    resolution: int = bounded(64, 16, 512)
    volume_resolution: int = bounded(64, 16, 256)


@dataclass
class RefineConfig:
    """Mesh refinement after the NeRF or Gaussian stage (Magic3D's coarse-to-fine, dream3d/refine.py):
    `geometry_steps` of DMTet geometry and albedo (renderers/mesh), then `texture_steps` of albedo on
    the frozen mesh, with the run's prior and guidance; both 0 = no refinement (the default)."""

    geometry_steps: int = bounded(0, 0, 1_000_000)
    texture_steps: int = bounded(0, 0, 1_000_000)
    resolution: int = bounded(64, 8, 1024)  # render resolution of the mesh stages
    sdf_resolution: int = bounded(96, 16, 256)  # grid on which the coarse surface becomes the starting SDF
    # the mesh stages' timestep range (fractions of T; null = the guidance's own t_min / t_max). Lower noise
    # refines detail of a shape the coarse stage already found (threestudio's magic3d-refine-sd: 0.02 - 0.5)
    t_min: float | None = bounded(None, 0.0, 1.0, nullable=True)
    t_max: float | None = bounded(None, 0.0, 1.0, nullable=True)
    mesh: MeshConfig = field(default_factory=MeshConfig)

    @property
    def enabled(self) -> bool:
        return self.geometry_steps + self.texture_steps > 0

    def timestep_range(self, guidance: Any) -> tuple[Any, Any]:
        """(t_min, t_max) of the mesh stages: refine's where set, else the guidance's own."""
        return (guidance.t_min if self.t_min is None else self.t_min,
                guidance.t_max if self.t_max is None else self.t_max)


@dataclass
class ReferenceConfig:
    """Image-to-3D (`image=ref.png`, dream3d/reference.py): where the reference camera is and how strongly the
    scene must reproduce the reference view (DreamGaussian's losses: RGB and mask MSE)."""

    elevation: float = bounded(15.0, -90.0, 90.0)  # the reference camera's elevation (degrees); it sees the front (azimuth 0)
    rgb_weight: float = bounded(1000.0, 0.0, None)
    mask_weight: float = bounded(1000.0, 0.0, None)
    resolution: int = bounded(64, 8, 1024)  # the reference image and its renders are this size


@dataclass
class RunConfig:
    prompt: str = "a red cube"
    negative_prompt: str = ""
    # image-to-3D: a reference view (PNG/JPEG; RGBA or a plain background), copied into the run folder; on
    # ToyWorld it conditions the prior in place of the prompt, which then only names the run (and eval's truth)
    image: str | None = server_only(None)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    seed: int = bounded(0, 0, 2**63 - 1)
    camera: CameraConfig = field(default_factory=CameraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    prior: Any = field(default_factory=lambda: {"name": "toyworld"})
    guidance: Any = field(default_factory=lambda: {"name": "sds"})
    scene: Any = field(default_factory=lambda: {"name": "nerf"})
    output: OutputConfig = field(default_factory=OutputConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)


def registries() -> dict[str, dict[str, tuple[type, type]]]:
    from guidance import GUIDANCES
    from guidance.priors import PRIORS
    from renderers import SCENES

    return {"prior": PRIORS, "guidance": GUIDANCES, "scene": SCENES}


def _unknown_key_error(key: str, valid: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], valid, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return ConfigError(f"unknown config key '{key}'{hint}; valid keys in {where}: {', '.join(sorted(valid))}")


def _check_keys(data: Any, cls: type, prefix: str, where: str) -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"'{prefix.rstrip('.') or 'config'}' must be a mapping of keys to values, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in data.items():
        if key not in fields:
            raise _unknown_key_error(prefix + str(key), list(fields), where)
        factory = fields[key].default_factory
        default = factory() if factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            _check_keys(value, type(default), f"{prefix}{key}.", f"'{prefix}{key}'")


def _typed(cls: type, data: dict, prefix: str) -> Any:
    """Merge data into the dataclass schema with OmegaConf's type checks; return the dataclass."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(cls), literal(data))
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or ""
        msg = str(e).splitlines()[0]
        raise ConfigError(f"bad value for '{prefix}{key}': {msg}") from None


def _section(kind: str, data: Any) -> Any:
    reg = registries()[kind]
    if not isinstance(data, dict):
        raise ConfigError(f"'{kind}' must be a mapping with a 'name'; valid names: {', '.join(reg)}")
    name = data.get("name")
    if name not in reg:
        raise ConfigError(f"{kind}.name = {name!r} is not valid; valid: {', '.join(reg)}")
    _, schema = reg[name]
    _check_keys(data, schema, f"{kind}.", f"{kind} '{name}'")
    return _typed(schema, data, f"{kind}.")


def check_prompt(prompt: str, key: str = "prompt") -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise ConfigError(f"{key} is empty; give a description such as prompt=\"a red cube\"")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ConfigError(f"{key} has {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}")
    return prompt.strip()


def build_config(data: dict) -> RunConfig:
    """Validate a plain dict (YAML + overrides) into a typed RunConfig."""
    _check_keys(data, RunConfig, "", "the run config")
    for key in ("prompt", "negative_prompt"):
        if key in data and data[key] is None:
            data[key] = ""
    sections = {k: data.pop(k) for k in ("prior", "guidance", "scene") if k in data}
    cfg: RunConfig = _typed(RunConfig, data, "")
    defaults = RunConfig()
    for kind in ("prior", "guidance", "scene"):
        setattr(cfg, kind, _section(kind, sections.get(kind, getattr(defaults, kind))))
    validate(cfg)
    return cfg


def validate(cfg: RunConfig) -> None:
    cfg.prompt = check_prompt(cfg.prompt)
    if len(cfg.negative_prompt) > MAX_PROMPT_CHARS:
        raise ConfigError(f"negative_prompt has {len(cfg.negative_prompt)} characters; the limit is {MAX_PROMPT_CHARS}")
    validate_fields(cfg)
    for key in ("elevation_range", "azimuth_range"):
        value = getattr(cfg.camera, key)
        if len(value) != 2 or not all(math.isfinite(v) for v in value) or value[0] > value[1]:
            raise ConfigError(f"camera.{key} must be [min, max], two finite numbers with min <= max, got {value}")
    if not (-90 <= cfg.camera.elevation_range[0] and cfg.camera.elevation_range[1] <= 90):
        raise ConfigError(f"camera.elevation_range must lie within [-90, 90], got {cfg.camera.elevation_range}")
    check_device_name(cfg.train.device, "train.device")
    validate_export(cfg.output.export, cfg.scene.name)
    for section in (cfg.guidance, cfg.scene, cfg.prior):
        section.validate()
    cfg.guidance.check_schedules(cfg.train.steps)  # shares of the run ("20%") resolved against this run
    if cfg.prior.name == "stable_diffusion" and cfg.prior.cpu_offload and cfg.guidance.trains_prior_copy():
        raise ConfigError(f"prior.cpu_offload=true cannot run guidance.name={cfg.guidance.name}: its LoRA fake score trains "
                          "a copy of the UNet, and an offloaded UNet has no weights on the device to copy. Set "
                          "prior.cpu_offload=false (for less memory: prior.attention=slicing, a smaller train.resolution, "
                          "train.batch_size=1)")
    if cfg.prior.name == "mvdream" and cfg.guidance.trains_prior_copy():
        raise ConfigError(f"guidance.name={cfg.guidance.name} trains a LoRA copy of the prior's UNet as its fake score; "
                          "with MVDream that copy would need the views' cameras and groups, which is not supported yet: "
                          "use guidance.name=sds or asd with prior.name=mvdream")
    if cfg.prior.name == "zero123":
        if not cfg.image:
            raise ImageRequiredError("prior.name=zero123 makes novel views of a reference image: give one, image=ref.png "
                                     "(for text-to-3D use prior.name=stable_diffusion)")
        if cfg.negative_prompt:
            raise ConfigError("Zero123 has no text encoder, so negative_prompt would do nothing: remove it")
        if cfg.guidance.trains_prior_copy():
            raise ConfigError(f"guidance.name={cfg.guidance.name} trains a LoRA copy of the prior's UNet as its fake "
                              "score; Zero123's UNet also needs the reference latent and camera, which that copy does "
                              "not take yet: use guidance.name=sds or asd with prior.name=zero123")
    if cfg.train.batch_size < cfg.guidance.min_batch_size():
        raise ConfigError(f"guidance.name={cfg.guidance.name} needs train.batch_size >= {cfg.guidance.min_batch_size()} "
                          f"(got {cfg.train.batch_size}): with fewer views per step it is another method (f-div's weights "
                          "are normalised over the batch, so one view is VSD); raise train.batch_size or use "
                          "guidance.divergence=reverse_kl")
    views = cfg.prior.joint_views()
    if cfg.train.batch_size % views:
        fit = views * max(1, round(cfg.train.batch_size / views))
        raise ConfigError(f"prior.views={views} denoises groups of {views} views, so train.batch_size must be a multiple "
                          f"of {views} (got {cfg.train.batch_size}); set train.batch_size={fit}")
    check_scene_config(cfg.scene)
    if cfg.refine.enabled:
        if cfg.scene.name == "mesh":
            raise ConfigError("refine.* refines a NeRF or Gaussian run into a mesh; scene.name=mesh is already one "
                              "(set refine.geometry_steps=0 and refine.texture_steps=0, or scene.name=nerf)")
        check_rasterizer(cfg.refine.mesh.rasterizer, "refine.mesh.rasterizer")
        if cfg.refine.mesh.bound != cfg.scene.bound:
            raise ConfigError(f"refine.mesh.bound = {cfg.refine.mesh.bound} differs from scene.bound = {cfg.scene.bound}; "
                              "the mesh refines the scene's box, so set them equal")
    check_refine_timesteps(cfg)


def check_refine_timesteps(cfg: RunConfig) -> None:
    """refine.t_min / t_max: only with refinement, only for a guidance that reads the timestep range, and with
    t_min < t_max at every step of the mesh stages where one end is the guidance's (possibly scheduled) own."""
    own = [key for key in ("t_min", "t_max") if getattr(cfg.refine, key) is not None]
    if not own:
        return
    if not cfg.refine.enabled:
        raise ConfigError(f"refine.{own[0]} sets the mesh stages' timestep range, but there are none: set "
                          "refine.geometry_steps / refine.texture_steps, or remove it")
    if any(key in cfg.guidance.IGNORED for key in own):
        raise ConfigError(f"refine.{own[0]} has no effect on guidance.name={cfg.guidance.name} (it does not read the "
                          "timestep range); remove it")
    lo, hi = cfg.refine.timestep_range(cfg.guidance)
    try:
        dataclasses.replace(cfg.guidance, t_min=lo, t_max=hi).check_schedules(cfg.train.steps)
    except ConfigError as e:
        raise ConfigError(f"the mesh stages' timestep range (refine.t_min / refine.t_max, or where null the "
                          f"guidance's) needs t_min < t_max: {e}") from None


def to_dict(cfg: RunConfig) -> dict:
    """Plain nested dicts and lists (no OmegaConf nodes, so nothing is interpolated)."""
    return dataclasses.asdict(cfg)


def changed_keys(a: RunConfig, b: RunConfig) -> list[str]:
    """Dotted keys whose values differ between two configs, sorted."""
    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    fa, fb = flat(to_dict(a)), flat(to_dict(b))
    return [k for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]


def to_yaml(cfg: RunConfig) -> str:
    """The config as YAML that load_config reads back to the same values (strings literally)."""
    return yaml.dump(to_dict(cfg), Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False)


# -- YAML and overrides: user text is data, never an OmegaConf interpolation ---------------------
# OmegaConf would resolve `${oc.env:NAME}` in any string (reading the server's environment), and a
# YAML escape such as "\x24{...}" spells it without a literal `${`. So presets, run folders and
# overrides are read with plain YAML, and every string is escaped before OmegaConf sees it
# (_typed): `${` has no meaning anywhere in a dream3d config.
_FLOAT = re.compile(r"""^(?:
     [-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)  # YAML 1.2 floats: 1e-3 is a number, not the string YAML 1.1 makes it
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_INTERPOLATION = re.compile(r"(\\*)\$\{")


class _Loader(yaml.SafeLoader):
    """YAML 1.1 safe loading as OmegaConf reads it (1e-3 is a float, 2024-01-01 a string, a key
    given twice an error), and no aliases: `*a` could expand a short line into gigabytes."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "YAML aliases (*name) are not accepted in a config",
                                              self.peek_event().start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"key {key.value!r} is given twice",
                                                            key.start_mark)
                seen.add(key.value)
        return super().construct_mapping(node, deep)


class _Dumper(yaml.SafeDumper):
    """Quotes every string _Loader would read as something else."""


for _cls in (_Loader, _Dumper):
    _cls.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))
    _cls.yaml_implicit_resolvers = {first: [(tag, regexp) for tag, regexp in resolvers
                                            if tag != "tag:yaml.org,2002:timestamp"]
                                    for first, resolvers in _cls.yaml_implicit_resolvers.items()}


def read_yaml(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=_Loader)


def parse_value(text: str) -> Any:
    """One override value as YAML (numbers, bools, lists, quoted strings); raises yaml.YAMLError."""
    return yaml.load(text, Loader=_Loader)


def literal(value: Any) -> Any:
    """`value` with every string escaped for OmegaConf, so it resolves to exactly itself."""
    if isinstance(value, str):
        return _INTERPOLATION.sub(lambda m: m.group(1) * 2 + "\\${", value)
    if isinstance(value, dict):
        return {k: literal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [literal(v) for v in value]
    return value


def apply_override(data: dict, override: str) -> None:
    """Set `key.sub=value` in nested dicts (creating sections as needed)."""
    key, _, text = override.partition("=")
    key = key.strip()
    if "=" not in override or not _KEY.match(key):
        raise ConfigError(f"override {override!r} must look like key=value with a dotted key "
                          "(e.g. guidance.guidance_scale=7.5)")
    try:
        value = parse_value(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"override {override!r} cannot be parsed: {' '.join(str(e).split())[:200]}") from None
    except RecursionError:
        raise ConfigError(f"override {key!r}: the value is nested too deeply") from None
    *parents, leaf = key.split(".")
    node = data
    for i, part in enumerate(parents):
        if not isinstance(node.get(part), dict):
            if part in node and node[part] is not None:
                raise ConfigError(f"override {override!r}: '{'.'.join(parents[:i + 1])}' is a value, not a section")
            node[part] = {}
        node = node[part]
    if isinstance(value, dict) and isinstance(node.get(leaf), dict):  # section={k: v}: merged, as OmegaConf did
        value = _merged(node[leaf], value)
    node[leaf] = value


def _merged(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class ImageRequiredError(ConfigError):
    """A config whose prior conditions on an image only (Zero123), without `image`."""


IMAGE_PLACEHOLDER = "reference.png"  # `image` of a preset loaded to be priced or reported, never read


def load_preset(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """A preset as it would run, for reports and prices (dream3d doctor, the web UI's preset list): one whose
    prior needs a reference image gets IMAGE_PLACEHOLDER as `image`, so it loads and is priced as an
    image-to-3D run."""
    try:
        return load_config(path, overrides)
    except ImageRequiredError:
        return load_config(path, [*overrides, f"image={IMAGE_PLACEHOLDER}"])


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Load a YAML preset (or the defaults), apply `key=value` overrides and validate.
    Strings are taken literally everywhere (no `${...}` interpolation)."""
    data: Any = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        try:
            data = read_yaml(path)
        except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as e:
            raise ConfigError(f"could not read {str(path)!r} as YAML: {' '.join(str(e).split())[:300]}") from None
        data = {} if data is None else data
        if not isinstance(data, dict):
            raise ConfigError(f"{str(path)!r} must hold a mapping of config keys (key: value), "
                              f"not a {type(data).__name__}")
    data = copy.deepcopy(data)
    for o in overrides:
        apply_override(data, o)
    return build_config(data)
