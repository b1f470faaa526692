"""The "fake score" of VSD/ESD: a denoiser of the distribution of renders, trained online.

eps_phi(x_t, t, c) is trained on detached renders with the denoising loss
L = |eps_phi(a_tau x + s_tau eps', tau, c) - eps'|^2, tau ~ U{0..T-1} drawn independently of the
guidance's t, with the camera dropped (set to zero) with probability p so the camera-free branch
eps_phi(x_t, t, empty_c) exists: `camera_cfg` mixes the two for ESD. The camera enters as the
flattened 4x4 camera-to-world matrix -> MLP -> added to the time embedding (ProlificDreamer).

Three networks behind one interface: rank-r LoRA (peft) on a copy of a latent prior's UNet
(Stable Diffusion; text-conditioned like the prior), a small diffusers UNet2DModel trained from
scratch for pixel-space priors (ToyWorld), and an MLP for vector "particles" (the Gaussian-mixture
tests). The last two ignore the text: a run has one prompt.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from dream3d.kernel import draws
from dream3d.kernel.cameras import Cameras
from guidance.priors.base import q_sample


def timestep_embedding(t: Tensor, dim: int, T: int = 1000) -> Tensor:
    """Sinusoidal embedding [B,dim] of integer timesteps [B]."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] / T * 1000.0 * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], -1)


def camera_features(cameras: Cameras | None, batch: int, drop: Tensor | None = None,
                    device: torch.device | str | None = None) -> Tensor:
    """Flattened camera-to-world matrices [B,16]; zero rows where dropped (or with no cameras, on `device`)."""
    if cameras is None:
        return torch.zeros(batch, 16, device=device)
    feats = cameras.c2w().reshape(batch, 16)
    return feats if drop is None else feats * (~drop)[:, None].float()


class FakeScore(nn.Module):
    """eps_phi(x_t, t, camera): `net(x_t, t, cam_emb)` plus the camera MLP, camera CFG and the
    shared training loss."""

    def __init__(self, embed_dim: int, camera_dropout: float = 0.1):
        super().__init__()
        self.camera_dropout = camera_dropout
        self.camera_mlp = nn.Sequential(nn.Linear(16, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim))

    def net(self, x_t: Tensor, t: Tensor, cam_emb: Tensor, text: Sequence[Any] | None = None) -> Tensor:
        """eps_phi [B,...] for x_t [B,...], t [B], camera embeddings [B,E] and (optionally) one
        prior text embedding per element."""
        raise NotImplementedError

    def forward(self, x_t: Tensor, t: Tensor, cameras: Cameras | None, drop_camera: bool = False,
                text: Sequence[Any] | None = None) -> Tensor:
        """eps_phi [B,...] for x_t [B,...], t [B]; the zero (dropped) camera when drop_camera."""
        feats = camera_features(None if drop_camera else cameras, x_t.shape[0], device=x_t.device)
        return self.net(x_t, t, self.camera_mlp(feats), text)

    def camera_cfg(self, x_t: Tensor, t: Tensor, cameras: Cameras, scale: float,
                   text: Sequence[Any] | None = None) -> Tensor:
        """CFG over the camera (ESD): eps_phi(empty_c) + scale (eps_phi(c) - eps_phi(empty_c)) [B,...],
        one network call on [c; empty_c] (2B). Scale 1 is eps_phi(c), 0 is eps_phi(empty_c), each
        one call on B."""
        if scale == 1.0:
            return self(x_t, t, cameras, text=text)
        if scale == 0.0:
            return self(x_t, t, cameras, drop_camera=True, text=text)
        feats = camera_features(cameras, x_t.shape[0], device=x_t.device)
        cam_emb = self.camera_mlp(torch.cat([feats, torch.zeros_like(feats)]))
        text2 = None if text is None else [*text, *text]
        eps_c, eps_0 = self.net(torch.cat([x_t, x_t]), torch.cat([t, t]), cam_emb, text2).chunk(2)
        return eps_0 + scale * (eps_c - eps_0)

    def loss(self, x: Tensor, cameras: Cameras | None, alphas_cumprod: Tensor,
             generator: torch.Generator | None = None, text: Sequence[Any] | None = None) -> Tensor:
        """Denoising loss (a scalar) on detached samples x [B,...] at fresh tau and noise, the
        camera dropped with probability camera_dropout."""
        x = x.detach()
        b = x.shape[0]
        tau = draws.randint(0, alphas_cumprod.shape[0], (b,), generator, x.device)
        noise = draws.randn(x.shape, generator, x.device)
        x_tau = q_sample(alphas_cumprod, x, tau, noise)
        drop = draws.rand((b,), generator, x.device) < self.camera_dropout
        pred = self.net(x_tau, tau, self.camera_mlp(camera_features(cameras, b, drop, x.device)), text)
        return ((pred - noise) ** 2).mean()


class UNetFakeScore(FakeScore):
    """A small diffusers UNet2DModel for images [B,C,r,r]; the camera joins the time embedding."""

    def __init__(self, channels: int, resolution: int, widths: tuple[int, ...] = (32, 64), camera_dropout: float = 0.1):
        from diffusers import UNet2DModel

        super().__init__(embed_dim=widths[0] * 4, camera_dropout=camera_dropout)
        self.unet = UNet2DModel(
            sample_size=resolution, in_channels=channels, out_channels=channels, layers_per_block=1,
            block_out_channels=widths, down_block_types=("DownBlock2D",) * len(widths),
            up_block_types=("UpBlock2D",) * len(widths), norm_num_groups=8, class_embed_type="identity",
        )

    def net(self, x_t, t, cam_emb, text=None):
        return self.unet(x_t, t, class_labels=cam_emb).sample


class MLPFakeScore(FakeScore):
    """An MLP for vectors [B,D] (particles in the closed-form tests)."""

    def __init__(self, dim: int, hidden: int = 128, camera_dropout: float = 0.1):
        super().__init__(embed_dim=hidden, camera_dropout=camera_dropout)
        self.hidden = hidden
        self.inp = nn.Linear(dim, hidden)
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, dim))

    def net(self, x_t, t, cam_emb, text=None):
        return self.mlp(self.inp(x_t) + timestep_embedding(t, self.hidden) + cam_emb)


class LoRAFakeScore(FakeScore):
    """Rank-r LoRA (peft, on the attention projections to_q/k/v/out) on a copy of a latent prior's
    UNet, conditioned on the prior's text embeddings; the camera MLP feeds the UNet's class
    embedding, which diffusers adds to the time embedding. The camera MLP's last layer and LoRA's B
    start at zero, so at step 0 eps_phi equals the prior's eps exactly. Only the LoRA and camera
    weights are registered: checkpoints hold megabytes, not the UNet."""

    TARGETS = ("to_q", "to_k", "to_v", "to_out.0")

    def __init__(self, prior, rank: int = 4, camera_dropout: float = 0.1):
        from peft import LoraConfig

        unet = prior.trainable_copy()
        super().__init__(embed_dim=unet.time_embedding.linear_2.out_features, camera_dropout=camera_dropout)
        nn.init.zeros_(self.camera_mlp[-1].weight)
        nn.init.zeros_(self.camera_mlp[-1].bias)
        unet.class_embedding = nn.Identity()  # the camera embedding arrives ready-made
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=list(self.TARGETS)))
        trainable = {n: p for n, p in unet.named_parameters() if p.requires_grad}
        for p in trainable.values():
            p.data = p.data.float()  # train adapters in fp32 even on an fp16 UNet (peft casts around them)
        self.__dict__["prior"] = prior
        self.__dict__["unet"] = unet  # frozen base weights stay out of state_dict and the optimiser
        self.lora = nn.ParameterDict({n.replace(".", "__"): p for n, p in trainable.items()})

    def _apply(self, fn, recurse: bool = True):
        """Module.to: the camera MLP follows the run's device; the LoRA weights stay inside their UNet,
        on the prior's device (which may be a second GPU: prior.device=cuda:1)."""
        lora = self._modules.pop("lora")
        try:
            super()._apply(fn, recurse)
        finally:
            self._modules["lora"] = lora
        return self

    def net(self, x_t, t, cam_emb, text=None):
        if text is None:
            raise ValueError("the LoRA fake score is text-conditioned: pass the prompt's embeddings")
        p = self.prior
        out = self.unet(x_t.to(p.device, p.dtype), t.to(p.device), class_labels=cam_emb.to(p.device, p.dtype),
                        **p.unet_inputs(text)).sample
        return p.output_to_eps(out.float().to(x_t.device), x_t, t)


def build_fake_score(prior, camera_dropout: float = 0.1, lora_rank: int = 4) -> FakeScore:
    """LoRA on a copy of the prior's network where the prior has one (`trainable_copy`: Stable
    Diffusion), a small UNet for other image-shaped samples (C,H,W), an MLP for vectors (D,)."""
    if prior.supports("trainable_copy"):
        return LoRAFakeScore(prior, lora_rank, camera_dropout)
    shape = prior.sample_shape
    if len(shape) == 3:
        return UNetFakeScore(shape[0], shape[1], camera_dropout=camera_dropout)
    return MLPFakeScore(shape[0], camera_dropout=camera_dropout)
