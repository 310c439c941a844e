"""Test support for replay/evaluate: a tiny random Self-MM exported with the agent's real feature spec."""

from __future__ import annotations

from pathlib import Path

from tiny_selfmm import make_tiny_encoder

CREMA_MIX = Path("av/derived/crema_d_1001_DFA_6emotions.mp4")  # 12.6 s, six emotions, one after another
GRID_CONCAT = Path("av/derived/grid_11clips_concat.mp4")  # 33 s, eleven GRID sentences


def export_replay_bundle(root: Path, *, seed: int = 0) -> Path:
    """A tiny text+audio Self-MM bundle (vision uninformed, like the default model) the agent can serve."""
    import torch

    from core.card import TaskInfo, UninformedInput
    from core.features import FeatureSpec, no_face_vision
    from exporters.bundle import ExportRequest, export_bundle
    from models.config import SelfMMConfig
    from models.selfmm import SelfMM
    from models.tasks import make_task

    encoder = make_tiny_encoder(root / "encoder")
    spec = FeatureSpec.for_tokenizer(encoder)
    torch.manual_seed(seed)
    config = SelfMMConfig.preset(
        "mosi", text_encoder_dir=encoder, audio_dim=spec.audio_dim, vision_dim=spec.vision_dim
    )
    model = SelfMM(config).eval()
    task = make_task("sentiment", "mosi")
    no_face = tuple(tuple(float(x) for x in row) for row in no_face_vision(1))
    export_bundle(model, ExportRequest(
        out_dir=root / "bundle", model_id=f"tiny-replay-{seed}", model_version="test",
        feature_spec=spec.to_dict(), task=TaskInfo(task.name, task.label_min, task.label_max),
        feature_source="live", text_encoder_dir=encoder,
        text_max_length=spec.text_max_length, audio_dim=spec.audio_dim, vision_dim=spec.vision_dim,
        training={"data": "none (random weights, test only)"}, informed_modalities=("text", "audio"),
        uninformed_inputs={"vision": UninformedInput(rows=no_face, reason="test: vision not informed")},
        fp16=False, int8=False,
    ))  # fmt: skip
    return root / "bundle"
