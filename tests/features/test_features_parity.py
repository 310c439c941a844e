"""The live path and the dataset-builder path give bit-identical features for the same media."""

from __future__ import annotations

import csv
import pickle
from pathlib import Path

import numpy as np
import pytest

from agent.settings import WindowSettings
from agent.windows import Windower
from core.features import FeatureExtractor, FeatureSpec
from core.media import decode_file
from core.mediatime import FrameSampler
from core.types import StreamId, Transcript, VideoFrame, Window
from models.dataset_builder import build_dataset

CLIPS = {
    "crema_d/1001_DFA_ANG_XX.flv": "Don't forget a jacket.",
    "grid/grid_lbbc2a.mpg": "lay blue by c two again",
}


def live_window(path: Path, vision_fps: float) -> Window:
    """What the agent cuts from this media: frames sampled as ingest does, one fixed window to stream end."""
    windower = Windower(StreamId("call", "patient"), WindowSettings(mode="fixed", length_s=10.0, hop_s=10.0))
    sampler: FrameSampler[VideoFrame] = FrameSampler(vision_fps, max_pending=4)
    windows: list[Window] = []
    for item in decode_file(path):
        if isinstance(item, VideoFrame):
            if not sampler.offer(item.time_s, item):
                continue
            item = sampler.pop()[1]
        windows.extend(windower.push(item))
    windows.extend(windower.flush())
    assert len(windows) == 1
    return windows[0]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, shared_data: Path, minilm_dir: Path) -> dict:
    out = tmp_path_factory.mktemp("parity")
    labels = out / "labels.csv"
    with open(labels, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "start_s", "end_s", "label", "text", "split"])
        for i, (clip, text) in enumerate(CLIPS.items()):
            writer.writerow([clip, 0.0, "", 0.5 * i, text, "train"])
    build_dataset(shared_data / "av", labels, minilm_dir, out / "set.pkl", vision_fps=10.0, compact_text=True)
    with open(out / "set.pkl", "rb") as handle:
        return pickle.load(handle)["train"]


@pytest.mark.parametrize("index, clip", list(enumerate(CLIPS)))
def test_live_and_builder_features_are_bit_identical(
    index: int,
    clip: str,
    built: dict,
    extractor: FeatureExtractor,
    feature_spec: FeatureSpec,
    shared_data: Path,
) -> None:
    window = live_window(shared_data / "av" / clip, feature_spec.vision_fps)
    live = extractor.extract(Transcript(window, CLIPS[clip], (), "en", 0.0, 0.0))
    n_audio, n_vision = built["audio_lengths"][index], built["vision_lengths"][index]
    assert np.array_equal(built["audio"][index, :n_audio], live.audio)
    assert np.array_equal(built["vision"][index, :n_vision], live.vision)
    assert not built["audio"][index, n_audio:].any() and not built["vision"][index, n_vision:].any()
    n_tokens = len(live.input_ids)
    assert np.array_equal(built["text_bert"][index, 0, :n_tokens], live.input_ids.astype(np.float32))
    assert built["text_bert"][index, 1].sum() == n_tokens and not built["text_bert"][index, 2].any()
    assert live.face_visible_ratio > 0.9 and n_vision >= 15  # ~10 fps of a 2-3 s talking-face clip
    assert live.audio.shape[1] == feature_spec.audio_dim and live.vision.shape[1] == feature_spec.vision_dim
