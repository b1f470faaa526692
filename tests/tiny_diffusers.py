"""Tiny randomly initialised Stable Diffusion pipelines, built from configs and saved in the
diffusers folder layout, so the production `from_pretrained` path runs with no download."""
from __future__ import annotations

import json
from pathlib import Path

import torch


def byte_level_vocab() -> dict[str, int]:
    """A character-level CLIP BPE vocabulary (no merges): every byte, alone and word-final."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for c in cs:
            vocab.setdefault(chr(c) + suffix, len(vocab))
    return vocab


def build_tiny_pipeline(path: Path, *, xl: bool = False, prediction_type: str = "epsilon", max_tokens: int = 24,
                        seed: int = 0) -> Path:
    """Save unet/ vae/ text_encoder/ tokenizer/ scheduler/ (and the SDXL pair) under `path`."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(seed)
    path = Path(path)
    vocab = byte_level_vocab()
    text_cfg = dict(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=16, intermediate_size=32,
                    num_attention_heads=2, num_hidden_layers=2, vocab_size=len(vocab), max_position_embeddings=max_tokens)
    encoders = [("text_encoder", "tokenizer", CLIPTextModel(CLIPTextConfig(**text_cfg)))]
    if xl:
        encoders.append(("text_encoder_2", "tokenizer_2",
                         CLIPTextModelWithProjection(CLIPTextConfig(**text_cfg, projection_dim=16))))
    for enc_dir, tok_dir, enc in encoders:
        enc.save_pretrained(path / enc_dir)
        if tok_dir == "tokenizer":  # the files SD repositories ship: vocab.json + merges.txt
            (path / tok_dir).mkdir(parents=True, exist_ok=True)
            (path / tok_dir / "vocab.json").write_text(json.dumps(vocab))
            (path / tok_dir / "merges.txt").write_text("#version: 0.2\n")
            (path / tok_dir / "tokenizer_config.json").write_text(json.dumps(
                {"tokenizer_class": "CLIPTokenizer", "model_max_length": max_tokens, "bos_token": "<|startoftext|>",
                 "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}))
        else:  # a tokenizers-format save
            CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_tokens).save_pretrained(path / tok_dir)
    unet_kw = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
                   norm_num_groups=8, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                   up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=4,
                   cross_attention_dim=16 * len(encoders))
    if xl:
        unet_kw.update(addition_embed_type="text_time", addition_time_embed_dim=4,
                       projection_class_embeddings_input_dim=6 * 4 + 16)
    UNet2DConditionModel(**unet_kw).save_pretrained(path / "unet")
    AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16), norm_num_groups=8,
                  down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                  sample_size=16).save_pretrained(path / "vae")
    DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                  prediction_type=prediction_type).save_pretrained(path / "scheduler")
    (path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionXLPipeline" if xl
                                                      else "StableDiffusionPipeline"}))
    return path
