"""Fixtures for the real-browser test: Chromium, its fake camera and microphone files, a servable bundle."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fake_media import to_wav, to_y4m

REPO_ROOT = Path(__file__).resolve().parents[2]
CAPTURE_SOURCE = "av/derived/crema_d_1001_DFA_6emotions.mp4"  # one face, six short spoken sentences
CAPTURE_S = 8.0


@pytest.fixture(scope="session")
def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("chromium not found: run scripts/setup-system.sh (it installs Debian's `chromium`)")
    return found


@pytest.fixture(scope="module")
def fake_capture(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(wav, y4m): the first seconds of a real talking-face recording, for Chromium's fake devices."""
    out = tmp_path_factory.mktemp("capture")
    source = shared_data / CAPTURE_SOURCE
    wav, y4m = out / "capture.wav", out / "capture.y4m"
    assert to_wav(source, wav, duration_s=CAPTURE_S) == pytest.approx(CAPTURE_S)
    assert to_y4m(source, y4m, duration_s=CAPTURE_S) > 0
    return wav, y4m


@pytest.fixture(scope="module")
def live_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default bundle (`make bundle`) when its source is in the checkout, else a tiny servable one."""
    from default_model.artefacts import (
        DEFAULT_BUNDLE_DIR,
        DEFAULT_DIR,
        SOURCE_FILES,
        bundle_is_current,
        export_default_bundle,
    )

    exported = REPO_ROOT / DEFAULT_BUNDLE_DIR
    if not all((DEFAULT_DIR / name).is_file() for name in SOURCE_FILES):
        return _tiny_live_bundle(tmp_path_factory.mktemp("bundle"))
    if bundle_is_current(exported):
        return exported
    bundle, _ = export_default_bundle(tmp_path_factory.mktemp("bundle") / "default", variants=False)
    return bundle


@pytest.fixture(scope="module")
def tiny_live_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny servable bundle whatever the checkout holds (firefox_check.py: a tone, not speech, is scored)."""
    return _tiny_live_bundle(tmp_path_factory.mktemp("tiny"))


def _tiny_live_bundle(directory: Path) -> Path:
    """Random weights on a tiny BERT with the agent's real feature spec and dims; every modality informed."""
    import torch
    from tiny_selfmm import make_tiny_encoder

    from core.card import TaskInfo
    from core.features import FeatureSpec
    from exporters.bundle import ExportRequest, export_bundle
    from models.config import SelfMMConfig
    from models.selfmm import SelfMM
    from models.tasks import make_task

    encoder = make_tiny_encoder(directory / "encoder")
    spec = FeatureSpec.for_tokenizer(encoder)
    torch.manual_seed(0)
    config = SelfMMConfig.preset(
        "mosi", text_encoder_dir=encoder, audio_dim=spec.audio_dim, vision_dim=spec.vision_dim
    )
    task = make_task("sentiment", "mosi")
    export_bundle(SelfMM(config).eval(), ExportRequest(
        out_dir=directory / "tiny-live", model_id="tiny-live-sentiment", model_version="test",
        task=TaskInfo(task.name, task.label_min, task.label_max), feature_spec=spec.to_dict(),
        feature_source="live", text_encoder_dir=encoder, text_max_length=spec.text_max_length,
        audio_dim=spec.audio_dim, vision_dim=spec.vision_dim,
        training={"data": "none (random weights, test only)"}, fp16=False, int8=False,
    ))
    return directory / "tiny-live"
