"""The CREMA-D section of bench/default_model.py: real actors' voices, on the test actors.

- the model: every test clip through the real replay path (bench/cremad_replay.py); a clip's M and A are the
  duration-weighted means of its windows. Pearson r against `voice_valence`, mean M and A per intended
  emotion (bar chart), Acc-2 happy vs negative on clear-vote clips (bench/cremad_metrics.py `clear_vote`);
- the ablation: the same windows' Features scored with the audio input replaced, r(M) with and without;
- the anchors, measured in the same run on the same split: eGeMAPS -> ridge and boosted trees
  (bench/cremad_anchors.py);
- optionally (`live`) the live path: the six takes of actor 1001 over WebRTC (bench/cremad_live.py).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from bench._cpu import cpu_info
from bench.cremad_anchors import evaluate_anchors
from bench.cremad_metrics import ClipScore, clip_score, scored_metrics
from bench.cremad_replay import replay_clips, replay_settings
from core.wer import word_error_rate
from default_model.cremad import load_clips
from models.adapters.crema_d import EMOTIONS

CHART_FILE = "cremad_emotions.png"


async def run_cremad(
    bundle: Path,
    cremad_dir: Path,
    cache_root: Path,
    *,
    variant: str = "fp32",
    limit: int | None = None,
    live: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """The section's results (JSON-ready). `limit`: a seeded sample of that many clips per split."""
    started = time.perf_counter()
    clips = load_clips(cremad_dir, per_split=limit, seed=seed)
    test = [c for c in clips if c.split == "test"]
    replayed = await replay_clips(test, cremad_dir, replay_settings(bundle, variant))
    scores: dict[str, ClipScore | None] = {c.name: clip_score(replayed.windows[c.name]) for c in test}
    scored = [c for c in test if scores[c.name] is not None]
    present = [s for s in scores.values() if s is not None]
    windows = [w for c in test for w in replayed.windows[c.name]]
    metrics = scored_metrics(scored, present)
    anchors, anchor_s = evaluate_anchors(clips, cremad_dir, cache_root / "egemaps")
    result: dict[str, Any] = {
        "bundle": str(bundle), "model_version": replayed.model_version, "graph": variant,
        "cpu": cpu_info().as_dict(), "limit_per_split": limit, "seed": seed,
        "n_test_clips": len(test), "clips_without_windows": len(test) - len(scored),
        "clips_without_windows_names": [c.name for c in test if scores[c.name] is None],
        "windows": len(windows), "windows_without_words": sum(not w.text for w in windows),
        "whisper_wer": round(word_error_rate(
            [c.sentence for c in test], [" ".join(w.text for w in replayed.windows[c.name]) for c in test]), 4),
        "failed_windows": replayed.failed_windows, "replay_errors": replayed.errors,
        "ablation_audio": replayed.ablation.source,
        "m_std": round(float(np.std([s.m for s in present])), 6) if present else None,
        "a_std": round(float(np.std([s.a for s in present])), 6) if present else None,
        **metrics,
        "anchors": {a.name: {"test_r": round(a.test_r, 4), "valid_r": round(a.valid_r, 4), "params": a.params}
                    for a in anchors},
        "anchor_clips": {s: sum(c.split == s for c in clips) for s in ("train", "valid", "test")},
        "seconds": {"replay_and_ablation": round(replayed.wall_s, 1),
                    "replay_per_clip": round(replayed.wall_s / max(1, len(test)), 3),
                    "egemaps": round(anchor_s["egemaps"], 1), "anchor_fits": round(anchor_s["fit"], 1)},
    }  # fmt: skip
    if live:
        result["live"] = await _live(bundle, cremad_dir)
        result["seconds"]["live"] = result["live"].pop("wall_s")
    result["seconds"]["total"] = round(time.perf_counter() - started, 1)
    return result


async def _live(bundle: Path, cremad_dir: Path) -> dict[str, Any]:
    from bench.cremad_live import SIX_EMOTIONS_MP4, TAKES, live_rows, stream_six_takes

    names = {name for name, _, _ in TAKES}
    takes = {c.name: c for c in load_clips(cremad_dir) if c.name in names}
    windows, wall_s = await stream_six_takes(bundle)
    return {"file": SIX_EMOTIONS_MP4.name, "windows": live_rows(windows, takes), "wall_s": round(wall_s, 1)}


def print_cremad(result: dict[str, Any]) -> None:
    cpu = result["cpu"]
    print(
        f"\nCREMA-D voices, test actors (model {result['model_version']}, {result['graph']} graph, CPU "
        f"{cpu['model']}, {cpu['cores']} cores)"
    )
    print(
        f"clips {result['n_test_clips']}, without windows {result['clips_without_windows']}, windows "
        f"{result['windows']} ({result['windows_without_words']} without words), Whisper WER "
        f"{result['whisper_wer']:.3f} against the sentence read; ablation: "
        f"{result['ablation_audio']}"
    )
    print(f"{'':<26}{'r':>8}{'Acc-2 H/neg':>13}{'balanced':>10}")
    for head, name in (("m", "ours M"), ("a", "ours A (audio head)")):
        print(f"{name:<26}{result['r_' + head]:>8.3f}{result['acc2_happy_negative_' + head]:>13.3f}"
              f"{result['balanced_acc2_happy_negative_' + head]:>10.3f}")
    print(f"{'ours M, audio ablated':<26}{result['r_m_ablated']:>8.3f}{'':>13}  drop {result['r_m_drop']:.3f}")
    for name, anchor in result["anchors"].items():
        print(f"{'eGeMAPS ' + name:<26}{anchor['test_r']:>8.3f}{'':>13}  {anchor['params']}")
    clear = result["clear_vote_clips"]
    print(
        f"Acc-2 on {clear['happy']} happy and {clear['negative']} negative clear-vote clips; "
        f"std over clips: M {result['m_std']}, A {result['a_std']}"
    )
    print(f"{'emotion':<10}{'clips':>6}{'mean M':>9}{'mean A':>9}{'label':>9}")
    for emotion, row in result["emotion_means"].items():
        print(f"{emotion:<10}{row['clips']:>6}{row['m']:>9.3f}{row['a']:>9.3f}{row['voice_valence']:>9.3f}")
    for row in result.get("live", {}).get("windows", []):
        votes = " ".join(f"{k}{v}" for k, v in row["voice_votes"].items())
        print(
            f"live {row['start_s']:>6.2f}-{row['end_s']:<6.2f} {row['take']:<16} M {row['m']:>7.3f} "
            f"A {row['a'] if row['a'] is None else round(row['a'], 3)!s:>7}  label {row['voice_valence']:>6.2f} "
            f"votes {votes} /{row['voice_n']}  {row['text']!r}"
        )
    print(f"seconds: {result['seconds']}")


def write_chart(result: dict[str, Any], path: Path) -> None:
    """Grouped bars per intended emotion: mean M, mean A and the mean label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    means = result["emotion_means"]
    x = np.arange(len(EMOTIONS))
    figure, axes = plt.subplots(figsize=(8, 4))
    for offset, (key, label) in zip(
        (-0.27, 0.0, 0.27),
        (("m", "M"), ("a", "A (audio head)"), ("voice_valence", "voice_valence (label)")),
        strict=True,
    ):
        axes.bar(x + offset, [means[e][key] for e in EMOTIONS], width=0.27, label=label)
    axes.axhline(0.0, color="black", linewidth=0.8)
    axes.set_xticks(x, [f"{e}\n({means[e]['clips']})" for e in EMOTIONS])
    axes.set_ylabel("mean over clips (-3..3)")
    axes.set_title(
        f"CREMA-D test actors ({result['n_scored']} clips), model {result['model_version']}: "
        f"r(M) {result['r_m']:.2f}, r(A) {result['r_a']:.2f}"
    )
    axes.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
