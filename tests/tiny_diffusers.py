"""Tiny randomly initialised Stable Diffusion and DeepFloyd IF pipelines, built from configs and saved in the
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


TINY_UNET = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
                 norm_num_groups=8, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=4)


def save_latent_parts(path: Path, unet_kw: dict, prediction_type: str = "epsilon") -> None:
    """unet/ (a UNet2DConditionModel of `unet_kw`), vae/ (a 2-level AutoencoderKL, 4 latent channels) and scheduler/
    (SD's scaled-linear DDPM schedule) of a latent diffusion pipeline, built in that order (so, from one seed,
    the same weights whichever builder calls it)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    UNet2DConditionModel(**unet_kw).save_pretrained(path / "unet")
    AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16), norm_num_groups=8,
                  down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                  sample_size=16).save_pretrained(path / "vae")
    DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                  prediction_type=prediction_type).save_pretrained(path / "scheduler")


def build_tiny_pipeline(path: Path, *, xl: bool = False, prediction_type: str = "epsilon", max_tokens: int = 24,
                        seed: int = 0, camera_dim: int | None = None) -> Path:
    """Save unet/ vae/ text_encoder/ tokenizer/ scheduler/ (and the SDXL pair) under `path`; `camera_dim`: an
    MVDream-style UNet with a camera embedding of that many inputs (diffusers' projection class embedding)."""
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
    unet_kw = dict(TINY_UNET, cross_attention_dim=16 * len(encoders))
    if xl:
        unet_kw.update(addition_embed_type="text_time", addition_time_embed_dim=4,
                       projection_class_embeddings_input_dim=6 * 4 + 16)
    if camera_dim:
        unet_kw.update(class_embed_type="projection", projection_class_embeddings_input_dim=camera_dim)
    save_latent_parts(path, unet_kw, prediction_type)
    (path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionXLPipeline" if xl
                                                      else "StableDiffusionPipeline"}))
    return path


def t5_unigram_vocab() -> list[tuple[str, float]]:
    """A tiny T5 (SentencePiece Unigram) vocabulary: T5's <pad> </s> <unk> at ids 0-2, a few whole words,
    then every printable ASCII character alone and word-initial ("▁" marks a word start), so any
    lower-case English prompt tokenizes without <unk>."""
    import string

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    for word in ("a", "an", "the", "of", "photo", "red", "blue", "green", "cube", "sphere", "view", "front", "side",
                 "back", "overhead"):
        vocab.append(("▁" + word, -1.0))
    for c in string.ascii_letters + string.digits + string.punctuation:
        vocab += [(c, -5.0), ("▁" + c, -4.5)]
    return vocab


def write_spiece_model(path: Path, vocab: list[tuple[str, float]]) -> None:
    """`vocab` as a SentencePiece model file (spiece.model, the only tokenizer file DeepFloyd's repositories
    ship), written with the protobuf schema transformers itself reads it with: no sentencepiece needed."""
    from transformers.convert_slow_tokenizer import import_protobuf

    pb = import_protobuf()
    m = pb.ModelProto()
    for i, (piece, score) in enumerate(vocab):
        p = m.pieces.add()
        p.piece, p.score = piece, score
        p.type = {0: 3, 1: 3, 2: 2}.get(i, 1)  # CONTROL, CONTROL, UNKNOWN, then NORMAL
    m.trainer_spec.model_type = 1  # UNIGRAM
    m.trainer_spec.pad_id, m.trainer_spec.eos_id, m.trainer_spec.unk_id, m.trainer_spec.bos_id = 0, 1, 2, -1
    m.normalizer_spec.add_dummy_prefix = True
    path.write_bytes(m.SerializeToString())


def build_tiny_if_pipeline(path: Path, *, spiece_only: bool = False, resolution: int = 32, seed: int = 0) -> Path:
    """A tiny random DeepFloyd IF stage I pipeline in the diffusers layout: unet/ (pixel space, 3 -> 6 channels:
    eps and a learned variance, IF's block types), text_encoder/ (a 2-layer T5 encoder, d_model 32), tokenizer/
    (a T5 Unigram tokenizer built from `t5_unigram_vocab`, saved as tokenizer.json; `spiece_only`: as the hub's
    spiece.model alone, which needs sentencepiece to read), scheduler/ (IF's DDPMScheduler settings) and
    model_index.json. Everything is built offline from configs."""
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import T5Config, T5EncoderModel, T5TokenizerFast

    torch.manual_seed(seed)
    path = Path(path)
    vocab = t5_unigram_vocab()
    (path / "tokenizer").mkdir(parents=True, exist_ok=True)
    if spiece_only:
        write_spiece_model(path / "tokenizer" / "spiece.model", vocab)
        (path / "tokenizer" / "tokenizer_config.json").write_text(json.dumps(
            {"tokenizer_class": "T5Tokenizer", "model_max_length": 77, "extra_ids": 0, "eos_token": "</s>",
             "unk_token": "<unk>", "pad_token": "<pad>"}))
    else:
        T5TokenizerFast(vocab=vocab, extra_ids=0, model_max_length=77).save_pretrained(path / "tokenizer")
    d_model = 32
    T5EncoderModel(T5Config(vocab_size=len(vocab), d_model=d_model, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                            relative_attention_num_buckets=8, feed_forward_proj="gated-gelu", pad_token_id=0,
                            eos_token_id=1, decoder_start_token_id=0)).save_pretrained(path / "text_encoder")
    # the block types of IF-I-*: ResNet down/up blocks, added-KV cross attention, text time embedding
    UNet2DConditionModel(sample_size=resolution, in_channels=3, out_channels=6, layers_per_block=1,
                         block_out_channels=(16, 32), norm_num_groups=8,
                         down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
                         mid_block_type="UNetMidBlock2DSimpleCrossAttn",
                         up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
                         cross_attention_dim=32, encoder_hid_dim=d_model, encoder_hid_dim_type="text_proj",
                         attention_head_dim=8, addition_embed_type="text", addition_embed_type_num_heads=2,
                         cross_attention_norm="group_norm", resnet_time_scale_shift="scale_shift",
                         act_fn="gelu").save_pretrained(path / "unet")
    DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", variance_type="learned_range",
                  thresholding=True, dynamic_thresholding_ratio=0.95, sample_max_value=1.5,
                  prediction_type="epsilon").save_pretrained(path / "scheduler")
    (path / "model_index.json").write_text(json.dumps({
        "_class_name": "IFPipeline", "text_encoder": ["transformers", "T5EncoderModel"],
        "tokenizer": ["transformers", "T5Tokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
        "scheduler": ["diffusers", "DDPMScheduler"], "safety_checker": [None, None], "feature_extractor": [None, None],
        "watermarker": [None, None], "requires_safety_checker": False}))
    return path


def build_tiny_zero123_pipeline(path: Path, *, projection_folder: str = "clip_camera_projection", seed: int = 0) -> Path:
    """A tiny random Zero123 pipeline in the diffusers layout: unet/ (8 input channels: the noisy and the reference
    latent), vae/, scheduler/, image_encoder/ (a 2-layer CLIP vision model with projection), feature_extractor/ (a
    CLIPImageProcessor for 32 px inputs) and the camera projection (one linear layer [D, D+4], saved as
    safetensors under `projection_folder`, as ashawkey's and kxic's ports name it)."""
    from safetensors.torch import save_file
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    path = Path(path)
    d = 16  # the UNet's cross-attention width
    save_latent_parts(path, dict(TINY_UNET, sample_size=16, in_channels=8, cross_attention_dim=d))
    clip_dim = d  # the released models' CLIP embedding is as wide as the UNet's cross-attention (768)
    CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_attention_heads=2,
                                                   num_hidden_layers=2, image_size=32, patch_size=8,
                                                   projection_dim=clip_dim)).save_pretrained(path / "image_encoder")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        path / "feature_extractor")
    (path / projection_folder).mkdir(parents=True)
    save_file({"proj.weight": torch.randn(d, clip_dim + 4) * 0.3, "proj.bias": torch.randn(d) * 0.1},
              str(path / projection_folder / "diffusion_pytorch_model.safetensors"))
    (path / projection_folder / "config.json").write_text(json.dumps({"embedding_dim": clip_dim, "additional_embeddings": 4}))
    (path / "model_index.json").write_text(json.dumps({"_class_name": "Zero123Pipeline"}))
    return path
