"""Write a diffusers-layout pipeline folder (tests/tiny_diffusers.py) as ONE original-layout (LDM/CompVis)
`.safetensors` file, as fine-tunes are shipped: the inverse of diffusers' LDM->diffusers conversion
(single_file_utils.convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint, convert_ldm_clip_checkpoint
and, for SDXL's second encoder, convert_open_clip_checkpoint), so loading it back must give the
folder's weights exactly. SD 1.x text encoder layout (CLIPTextModel) and SDXL; not SD 2.x OpenCLIP."""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
            "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
            "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2"}
UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
               "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
OPENCLIP_TOP = {"text_model.embeddings.position_embedding.weight": "positional_embedding",
                "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
                "text_model.final_layer_norm.weight": "ln_final.weight", "text_model.final_layer_norm.bias": "ln_final.bias"}
OPENCLIP_LAYER = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
                  "self_attn.out_proj": "attn.out_proj"}


def _resnet(rest: str) -> str:
    layer, _, tail = rest.partition(".")
    return f"{UNET_RESNET[layer]}.{tail}"


def unet_to_ldm(sd: dict[str, torch.Tensor], layers_per_block: int) -> dict[str, torch.Tensor]:
    """diffusers UNet2DConditionModel keys -> `model.diffusion_model.*`: down block b's layer l is
    input block 1 + b(L+1) + l (its downsampler the last), up block b's is output block b(L+1) + l
    (its upsampler after the attention, if any), the mid block is middle_block.{0,1,2}."""
    per = layers_per_block + 1
    up_attn = {int(k.split(".")[1]) for k in sd if k.startswith("up_blocks.") and ".attentions." in k}
    out = {}
    for key, value in sd.items():
        m = re.match(r"(down_blocks|up_blocks)\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)\.(.+)", key)
        mid = re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", key)
        if m:
            blocks, b, kind, i, rest = m[1], int(m[2]), m[3], int(m[4]), m[5]
            stage, base = ("input_blocks", 1 + b * per) if blocks == "down_blocks" else ("output_blocks", b * per)
            if kind == "resnets":
                name = f"{stage}.{base + i}.0.{_resnet(rest)}"
            elif kind == "attentions":
                name = f"{stage}.{base + i}.1.{rest}"
            elif kind == "downsamplers":  # conv.weight -> op.weight
                name = f"{stage}.{base + layers_per_block}.0.op.{rest.removeprefix('conv.')}"
            else:  # the upsampler follows the resnet (.0) and the attention (.1), if the block has one
                name = f"{stage}.{base + layers_per_block}.{2 if b in up_attn else 1}.{rest}"
        elif mid:
            kind, i, rest = mid[1], int(mid[2]), mid[3]
            name = f"middle_block.{2 * i}.{_resnet(rest)}" if kind == "resnets" else f"middle_block.1.{rest}"
        else:
            module, _, param = key.rpartition(".")
            if module not in UNET_TOP:
                raise KeyError(f"no LDM name for the UNet key {key!r}")
            name = f"{UNET_TOP[module]}.{param}"
        out[f"model.diffusion_model.{name}"] = value
    return out


def vae_to_ldm(sd: dict[str, torch.Tensor], num_up_blocks: int) -> dict[str, torch.Tensor]:
    """diffusers AutoencoderKL keys -> `first_stage_model.*`: decoder up blocks in reverse order,
    resnet shortcuts as nin_shortcut, the mid attention as 1x1 convolutions (q, k, v, proj_out)."""
    out = {}
    for key, value in sd.items():
        name = key.replace("conv_norm_out", "norm_out")
        if m := re.match(r"encoder\.down_blocks\.(\d+)\.(resnets|downsamplers)\.(\d+)\.(.+)", key):
            i, kind, j, rest = m[1], m[2], m[3], m[4]
            name = (f"encoder.down.{i}.block.{j}.{rest.replace('conv_shortcut', 'nin_shortcut')}" if kind == "resnets"
                    else f"encoder.down.{i}.downsample.{rest}")
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.(resnets|upsamplers)\.(\d+)\.(.+)", key):
            i, kind, j, rest = num_up_blocks - 1 - int(m[1]), m[2], m[3], m[4]
            name = (f"decoder.up.{i}.block.{j}.{rest.replace('conv_shortcut', 'nin_shortcut')}" if kind == "resnets"
                    else f"decoder.up.{i}.upsample.{rest}")
        elif m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
            name = f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(weight|bias)", key):
            name = f"{m[1]}.mid.attn_1.{VAE_ATTENTION[m[2]]}.{m[3]}"
            if m[2] != "group_norm" and value.ndim == 2:  # Linear -> the original 1x1 Conv2d
                value = value[:, :, None, None]
        out[f"first_stage_model.{name}"] = value
    return out


def clip_to_ldm(sd: dict[str, torch.Tensor], prefix: str = "cond_stage_model.transformer.") -> dict[str, torch.Tensor]:
    """transformers CLIPTextModel keys (flattened or under text_model.) -> `<prefix>text_model.*`."""
    return {f"{prefix}text_model.{k.removeprefix('text_model.')}": v for k, v in sd.items()}


def openclip_to_ldm(sd: dict[str, torch.Tensor], prefix: str = "conditioner.embedders.1.model.") -> dict[str, torch.Tensor]:
    """transformers CLIPTextModelWithProjection keys -> OpenCLIP's (SDXL's second encoder): q/k/v
    stacked as attn.in_proj_*, the projection transposed (x @ text_projection)."""
    out, qkv = {}, {}
    for key, value in sd.items():
        k = key if key.startswith(("text_model.", "text_projection")) else f"text_model.{key}"
        if k == "text_projection.weight":
            out[f"{prefix}text_projection"] = value.T.contiguous()
        elif k in OPENCLIP_TOP:
            out[prefix + OPENCLIP_TOP[k]] = value
        elif m := re.match(r"text_model\.encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)", k):
            qkv.setdefault((int(m[1]), m[3]), {})[m[2]] = value
        elif m := re.match(r"text_model\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", k):
            out[f"{prefix}transformer.resblocks.{m[1]}.{OPENCLIP_LAYER[m[2]]}.{m[3]}"] = value
        else:
            raise KeyError(f"no OpenCLIP name for the text encoder key {key!r}")
    for (layer, param), parts in qkv.items():
        out[f"{prefix}transformer.resblocks.{layer}.attn.in_proj_{param}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    files = sorted(folder.glob("*.safetensors"))
    assert len(files) == 1, f"expected one .safetensors in {folder}, found {files}"
    return load_file(files[0])


def write_ldm_checkpoint(pipeline: Path, out: Path, dtype: torch.dtype | None = None) -> Path:
    """The diffusers folder `pipeline` (SD 1.x-style or SDXL) as one original-layout file `out`."""
    pipeline = Path(pipeline)
    unet_cfg = json.loads((pipeline / "unet" / "config.json").read_text())
    vae_cfg = json.loads((pipeline / "vae" / "config.json").read_text())
    sd = unet_to_ldm(_weights(pipeline / "unet"), unet_cfg["layers_per_block"])
    sd |= vae_to_ldm(_weights(pipeline / "vae"), len(vae_cfg["up_block_types"]))
    if (pipeline / "text_encoder_2").is_dir():  # SDXL: CLIP ViT-L and OpenCLIP bigG under conditioner.embedders
        sd |= clip_to_ldm(_weights(pipeline / "text_encoder"), "conditioner.embedders.0.transformer.")
        sd |= openclip_to_ldm(_weights(pipeline / "text_encoder_2"))
    else:
        sd |= clip_to_ldm(_weights(pipeline / "text_encoder"))
    if dtype is not None:
        sd = {k: v.to(dtype) for k, v in sd.items()}
    out = Path(out)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(out))
    return out
