"""ULGM and the training loop against MMSA 2.2.1's own SELF_MM trainer, driven on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from selfmm_testing import mmsa_args, mmsa_model

from models.config import SelfMMConfig
from models.datasets import MMSADataset, load_mmsa_pickle
from models.selfmm import SelfMM
from models.train import Trainer, TrainOptions
from models.ulgm import FEATURE_OF, MODES, OUTPUT_OF, ULGM


def _mmsa_trainer(config: SelfMMConfig, n_train: int, **extra: object) -> object:
    from MMSA.trains.multiTask.SELF_MM import SELF_MM

    return SELF_MM(mmsa_args(config, train_samples=n_train, **extra))


@pytest.mark.parametrize("exclude_zero", [True, False])
def test_scripted_batches_give_mmsa_labels_centres_and_losses(
    tiny_bert_dir: Path, exclude_zero: bool
) -> None:
    config = SelfMMConfig.preset(
        "mosi", text_encoder_dir=tiny_bert_dir, post_fusion_dim=8, post_text_dim=4, post_audio_dim=3,
        post_video_dim=5, exclude_zero=exclude_zero,
    )
    n, g = 24, torch.Generator().manual_seed(7)
    labels = torch.round(torch.empty(n).uniform_(-3, 3, generator=g) * 2) / 2  # includes exact zeros
    assert (labels == 0).any()
    reference = _mmsa_trainer(config, n)
    dims = {"fusion": 8, "text": 4, "audio": 3, "vision": 5}
    ours = ULGM(n, dims, exclude_zero=exclude_zero, label_bounds=config.generated_label_bounds)
    order = torch.randperm(n, generator=g)
    for start in range(0, n, 5):
        reference.init_labels(order[start:start + 5], labels[order[start:start + 5]])
        ours.init_labels(order[start:start + 5], labels[order[start:start + 5]])

    for epoch in (1, 2, 3, 4):
        for batch in torch.randperm(n, generator=g).split(5):  # last batch of each epoch is short
            outputs = {OUTPUT_OF[m]: torch.randn(len(batch), 1, generator=g) for m in MODES}
            outputs.update({FEATURE_OF[m]: torch.relu(torch.randn(len(batch), dims[m], generator=g))
                            for m in MODES})
            expected_loss = sum(
                reference.weighted_loss(outputs[OUTPUT_OF[m]], reference.label_map[m][batch], indexes=batch,
                                        mode=m)
                for m in MODES
            )
            torch.testing.assert_close(ours.loss(outputs, batch), expected_loss, atol=1e-4, rtol=1e-4)
            feats = [outputs[FEATURE_OF[m]] for m in MODES]
            if epoch > 1:
                reference.update_labels(*feats, epoch, batch, outputs)
                ours.update_labels(outputs, epoch, batch)
            reference.update_features(*feats, batch)
            ours.update_features(outputs, batch)
            reference.update_centers()
            ours.update_centers()
            for m in MODES:
                # centres are a matrix product here, a mean over gathered rows in MMSA: the same up to float
                # rounding, which the label update divides by a small score difference now and then (over 80
                # seeds the labels parted by at most 1e-4 after four epochs; a wrong formula parts them by ~0.1)
                torch.testing.assert_close(ours.label_map[m], reference.label_map[m], atol=1e-3, rtol=0)
                for side in ("pos", "neg"):
                    torch.testing.assert_close(ours.center_map[m][side], reference.center_map[m][side],
                                               atol=1e-4, rtol=1e-4)
    # the unimodal labels really moved away from y_m, within the clamp range
    assert (ours.label_map["text"] - labels).abs().max() > 0.1
    assert ours.label_map["audio"].abs().max() <= 3.0
    torch.testing.assert_close(ours.label_map["fusion"], labels)


def test_training_loop_equals_mmsa_do_train(
    tiny_bert_dir: Path, synthetic_pickle: Path, tmp_path: Path
) -> None:
    """Same weights, seed and data: MMSA's do_train and our Trainer.fit walk the same trajectory
    (batch order, dropout masks, 5 Adam groups, 4-batch accumulation with the remainder discarded,
    ULGM from epoch 2, early stopping on the rounded valid Loss)."""
    from MMSA.data_loader import MMDataset
    from torch.utils.data import DataLoader

    config = SelfMMConfig.preset("mosi", text_encoder_dir=tiny_bert_dir, batch_size=4, early_stop=2)
    splits = load_mmsa_pickle(synthetic_pickle)
    n_train = len(splits["train"])  # 40 -> 10 batches -> 2 optimizer steps, 2 batches discarded
    args = mmsa_args(config, train_samples=n_train, featurePath=str(synthetic_pickle),
                     model_save_path=str(tmp_path / "mmsa.pth"))
    loaders = {mode: DataLoader(MMDataset(args, mode=mode), batch_size=4, shuffle=True)
               for mode in ("train", "valid")}
    torch.manual_seed(21)
    reference = mmsa_model(config)
    ours = SelfMM(config, load_text_weights=False)
    ours.load_state_dict({k.removeprefix("Model."): v for k, v in reference.state_dict().items()})

    torch.manual_seed(99)
    mmsa_trainer = _mmsa_trainer(config, n_train, featurePath=str(synthetic_pickle),
                                 model_save_path=str(tmp_path / "mmsa.pth"))
    mmsa_trainer.do_train(reference, loaders)
    torch.manual_seed(99)
    trainer = Trainer(config, TrainOptions(device="cpu", progress=False))
    result = trainer.fit(ours, MMSADataset(splits["train"]), MMSADataset(splits["valid"]))

    assert result.epochs >= 3  # ULGM label updates ran (from epoch 2) and fed the loss (epoch 3)
    assert result.epochs - result.best_epoch == 2
    assert trainer.ulgm is not None
    for m in MODES:
        torch.testing.assert_close(trainer.ulgm.label_map[m], mmsa_trainer.label_map[m], atol=1e-5, rtol=0)
    assert (trainer.ulgm.label_map["text"] != trainer.ulgm.label_map["fusion"]).any()
    best_mmsa = torch.load(tmp_path / "mmsa.pth", weights_only=True)
    for key, value in result.best_state.items():
        torch.testing.assert_close(value, best_mmsa["Model." + key], atol=1e-5, rtol=0, msg=key)
    final_mmsa = reference.state_dict()
    moved = [k for k, v in ours.state_dict().items() if not torch.equal(v, best_mmsa["Model." + k])]
    assert moved or result.best_epoch == result.epochs
    for key, value in ours.state_dict().items():
        torch.testing.assert_close(value, final_mmsa["Model." + key], atol=1e-5, rtol=0, msg=key)
