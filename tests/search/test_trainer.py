"""The trainer: per-epoch metrics of both labels, best-epoch test metrics, resume, divergence."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from torchcell_search.cli import main
from torchcell_search.config import RunConfig
from torchcell_search.data.types import Dataset, LABELS
from torchcell_search.errors import ConfigError
from torchcell_search.metrics import combined_metrics, regression_metrics
from torchcell_search.search.trainer import (
    DEMO_EPOCHS,
    EpochRecord,
    load_model,
    objective_direction,
    predict_genes,
    prepare_data,
    train,
)

# A small, fast configuration: the trainer's logic does not depend on model size.
_SMALL = {
    "cell_dataset.learnable_embedding_input_channels": 16,
    "model.hidden_channels": 16,
    "model.prediction_head_config.hidden_channels": 16,
    "model.num_layers": 2,
    "model.pooling": "attentional",
    "trainer.max_epochs": 3,
    "data_module.batch_size": 64,
    "trainer.device": "cpu",
}


@pytest.fixture(scope="module")
def demo():
    return prepare_data("demo", subset=400, split="random", seed=0, cache_dir=None)


def _cfg(**extra):
    return RunConfig().with_overrides({**_SMALL, **extra})


def test_every_epoch_reports_both_labels_on_train_and_val(demo):
    dataset, split = demo
    records: list[EpochRecord] = []
    result = train(dataset, split, _cfg(), epoch_callback=records.append)
    # one record per epoch, each with MSE/Pearson/Spearman for both labels on train and val
    assert [r.epoch for r in records] == [0, 1, 2]
    for record in records:
        for part in ("train", "val"):
            for label in LABELS:
                for metric in ("MSE", "Pearson", "Spearman"):
                    assert math.isfinite(record.metrics[f"{part}/{label}/{metric}"])
        assert record.metrics["embedding/mean_pairwise_distance"] > 0
        assert set(record.histograms) == {"val/fitness", "val/gene_interaction"}
    assert len(result.history) == 3 and result.stopped_reason is None


def test_test_metrics_come_from_the_best_val_epoch_model(demo):
    dataset, split = demo
    result = train(dataset, split, _cfg())
    best_row = result.history[result.best_epoch]
    # the best epoch is the argmax of the objective, and `best` holds that epoch's values
    values = [row["val/gene_interaction/Pearson"] for row in result.history]
    assert result.best_epoch == int(np.argmax(values))
    assert result.best["val/gene_interaction/Pearson"] == best_row["val/gene_interaction/Pearson"]
    # reloading the best checkpoint reproduces the stored test metrics
    model, standardiser = load_model(result.best_checkpoint, dataset.graph)
    pred = predict_genes(model, standardiser, dataset, dataset.table.genes[split.test])
    again = regression_metrics(pred, dataset.table.labels()[split.test], "test")
    again.update(combined_metrics(pred, dataset.table.labels()[split.test], standardiser.mean, standardiser.std, "test"))
    for key, value in result.test.items():
        assert again[key] == pytest.approx(value, rel=1e-4, abs=1e-6)
    np.testing.assert_allclose(pred, result.predictions["test"], rtol=1e-5, atol=1e-6)


def test_same_seed_gives_identical_history(demo):
    dataset, split = demo
    a = train(dataset, split, _cfg(**{"trainer.max_epochs": 2}))
    b = train(dataset, split, _cfg(**{"trainer.max_epochs": 2}))
    drop = ("epoch_seconds",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in a.history] == [
        {k: v for k, v in r.items() if k not in drop} for r in b.history
    ]


def test_resuming_from_a_checkpoint_matches_an_uninterrupted_run(demo):
    dataset, split = demo
    cfg = _cfg(**{"model.dropout": 0.1})
    checkpoints = []
    full = train(dataset, split, cfg, checkpoint_callback=checkpoints.append)
    resumed = train(dataset, split, cfg, checkpoint=checkpoints[0])
    drop = ("epoch_seconds",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in resumed.history] == [
        {k: v for k, v in r.items() if k not in drop} for r in full.history
    ]
    assert resumed.test == full.test


def test_a_checkpoint_of_another_configuration_is_refused(demo):
    dataset, split = demo
    checkpoints = []
    train(dataset, split, _cfg(**{"trainer.max_epochs": 1}), checkpoint_callback=checkpoints.append)
    with pytest.raises(ConfigError, match="different configuration"):
        train(dataset, split, _cfg(**{"trainer.max_epochs": 1, "optimizer.lr": 0.5}), checkpoint=checkpoints[0])


def test_a_non_finite_loss_ends_the_run_with_its_reason(demo):
    dataset, split = demo
    table = dataset.table
    broken = table.select(torch.arange(len(table)))
    # An unscaled outlier label squares past float32's range: the loss overflows to inf.
    broken.gene_interaction[split.train] = 1e30
    cfg = _cfg(**{"regression_task.standardize_labels": False})
    result = train(Dataset(dataset.name, dataset.graph, broken), split, cfg)
    assert result.stopped_reason is not None and result.stopped_reason.startswith("non_finite_loss")
    assert result.history == []


def test_callback_exceptions_propagate_so_the_search_can_prune(demo):
    dataset, split = demo

    class Stop(Exception):
        pass

    def stop_at_one(record: EpochRecord) -> None:
        if record.epoch == 1:
            raise Stop

    with pytest.raises(Stop):
        train(dataset, split, _cfg(), epoch_callback=stop_at_one)


def test_objective_direction_follows_the_metric_name():
    assert objective_direction("val/gene_interaction/Pearson") == "maximize"
    assert objective_direction("val/fitness/Spearman") == "maximize"
    assert objective_direction("val/fitness/MSE") == "minimize"


def test_train_command_json(capsys):
    status = main(["train", "--data", "demo", "--subset", "300", "--epochs", "2", "--json",
                   *[f"--set={k}={v}" for k, v in _SMALL.items() if k != "trainer.max_epochs"]])
    assert status == 0
    out = json.loads(capsys.readouterr().out)
    assert {"best_epoch", "best", "test", "history"} <= set(out)
    assert len(out["history"]) == 2
    assert "test/gene_interaction/Pearson" in out["test"]


def test_train_command_rejects_unknown_keys_with_exit_2(capsys):
    assert main(["train", "--set", "model.depth=3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model.depth" in err


@pytest.mark.quality
@pytest.mark.parametrize("kind", ["hetero_cell", "perturbation_set"])
def test_default_demo_run_learns_the_planted_interactions(capsys, kind):
    # The must-show of `torchcell-search train --data demo --json`: its defaults (8 epochs for
    # hetero_cell, 12 for perturbation_set; SGA roles on) fit the demo's planted gene_interaction
    # structure (hetero_cell ~3 min). Floors from benchmarks/portability.py, seeds 0-4 under
    # ATEN_CPU_CAPABILITY default / avx2 / avx512 (issue 19, README "Using it"): lowest val
    # 0.741 and test 0.734 (hetero_cell), 0.765 and 0.723 (perturbation_set): margin >= 0.12.
    status = main(["train", "--data", "demo", "--json", "--device", "cpu", f"--set=model.kind={kind}"])
    assert status == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["history"]) == DEMO_EPOCHS[kind]
    assert out["best"]["val/gene_interaction/Pearson"] >= 0.6
    assert out["test"]["test/gene_interaction/Pearson"] >= 0.6


# --- the CUDA path: random state in checkpoints ---------------------------------------------


def test_checkpoints_carry_the_cuda_generator_state_of_a_cuda_run(monkeypatch):
    import io

    from torchcell_search.search.trainer import _cuda_rng_state, _set_cuda_rng_state

    # No GPU here: torch.cuda's two generator calls are replaced by a CPU tensor (the only fake).
    generator = {"state": torch.arange(16, dtype=torch.uint8)}
    restored = []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": generator["state"].clone())
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": restored.append((state, device)))
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    # a CUDA run saves the generator's state; it survives torch.save / torch.load as the checkpoint does
    buffer = io.BytesIO()
    torch.save({"cuda_rng": _cuda_rng_state(cuda)}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, map_location="cpu", weights_only=False)["cuda_rng"]
    # resuming on CUDA puts exactly that state back, on the training device
    _set_cuda_rng_state(loaded, cuda)
    assert len(restored) == 1 and torch.equal(restored[0][0], generator["state"]) and restored[0][1] == cuda
    # a CPU run has no CUDA state, and a resume on the CPU restores none
    assert _cuda_rng_state(cpu) is None
    _set_cuda_rng_state(loaded, cpu)
    _set_cuda_rng_state(None, cuda)
    assert len(restored) == 1


def test_a_cpu_checkpoint_records_no_cuda_state(demo):
    dataset, split = demo
    checkpoints = []
    train(dataset, split, _cfg(**{"trainer.max_epochs": 1}), checkpoint_callback=checkpoints.append)
    assert checkpoints[0]["cuda_rng"] is None and checkpoints[0]["rng"].dtype == torch.uint8


# --- one checkpoint, any device: the loss scaler and random states cross devices ---------------


def _enabled_cpu_scaler(device: torch.device) -> torch.amp.GradScaler:
    """The stand-in for a CUDA worker's mixed-precision scaler: an enabled scaler on the CPU."""
    return torch.amp.GradScaler("cpu")


def _history_without_times(result):
    return [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in result.history]


def _same_history(a, b) -> bool:
    """Histories equal to the rounding a loss scale moves (measured: relative 3e-5 at most on
    these runs); a resume that lost the model, optimizer or random state is off by far more."""
    return len(a.history) == len(b.history) and all(
        ra.keys() == rb.keys() and all(ra[k] == pytest.approx(rb[k], rel=1e-3, abs=1e-5) for k in ra if k != "epoch_seconds")
        for ra, rb in zip(a.history, b.history))


def test_a_cpu_checkpoint_resumes_under_an_enabled_loss_scaler(demo, monkeypatch):
    from torchcell_search.search import trainer

    dataset, split = demo
    cfg = _cfg(**{"model.dropout": 0.1})
    checkpoints = []
    full = train(dataset, split, cfg, checkpoint_callback=checkpoints.append)
    assert checkpoints[0]["scaler"] == {}  # a CPU run has no loss scale to save
    # a GPU worker picks the trial up: its scaler is enabled (torch refuses to load {} into one)
    monkeypatch.setattr(trainer, "_grad_scaler", _enabled_cpu_scaler)
    resumed = train(dataset, split, cfg, checkpoint=checkpoints[0])
    # it goes on from epoch 0's state: the uninterrupted run's figures, to the scale's rounding
    assert _same_history(resumed, full)


def test_a_mixed_precision_checkpoint_resumes_on_the_cpu(demo, monkeypatch):
    from torchcell_search.search import trainer

    dataset, split = demo
    cfg = _cfg(**{"model.dropout": 0.1})
    checkpoints = []
    with monkeypatch.context() as m:
        m.setattr(trainer, "_grad_scaler", _enabled_cpu_scaler)
        full = train(dataset, split, cfg, checkpoint_callback=checkpoints.append)
    scale = checkpoints[0]["scaler"]
    assert scale["scale"] == 65536.0 and scale["_growth_tracker"] > 0  # the scaler's own state
    # a CPU worker (its scaler disabled) resumes it and lands where the uninterrupted run did
    resumed = train(dataset, split, cfg, checkpoint=checkpoints[0])
    assert _same_history(resumed, full)


def test_an_enabled_scaler_restores_a_saved_scale_and_keeps_its_own_for_an_empty_one():
    from torchcell_search.search.trainer import _load_scaler_state

    saved = {"scale": 1024.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
             "_growth_tracker": 7}
    enabled = torch.amp.GradScaler("cpu")
    _load_scaler_state(enabled, saved)
    assert enabled.state_dict() == saved
    fresh = torch.amp.GradScaler("cpu")
    _load_scaler_state(fresh, {})
    _load_scaler_state(fresh, None)
    assert fresh.get_scale() == 65536.0
    disabled = torch.amp.GradScaler("cpu", enabled=False)
    _load_scaler_state(disabled, saved)  # a CPU worker: nothing to restore, no error
    assert disabled.state_dict() == {}


def test_a_checkpoint_read_back_from_disk_resumes_exactly(demo, tmp_path):
    from torchcell_search.storage.artifacts import save_atomic

    dataset, split = demo
    cfg = _cfg(**{"model.dropout": 0.1})
    checkpoints = []
    full = train(dataset, split, cfg, checkpoint_callback=checkpoints.append)
    save_atomic(checkpoints[0], tmp_path / "c.pt")
    # as a worker reads it: onto the CPU whatever device wrote it, then onto its own device
    loaded = torch.load(tmp_path / "c.pt", map_location="cpu", weights_only=False)
    assert all(t.device.type == "cpu" for t in loaded["model"].values())
    resumed = train(dataset, split, cfg, checkpoint=loaded)
    assert _history_without_times(resumed) == _history_without_times(full)


@pytest.mark.cuda
def test_resuming_on_cuda_matches_an_uninterrupted_run_only_with_the_cuda_state(demo):
    from services import require_cuda

    require_cuda()
    dataset, split = demo
    # dropout on the GPU draws from the CUDA generator; mixed precision is on for CUDA
    cfg = _cfg(**{"model.dropout": 0.3, "trainer.device": "cuda"})
    checkpoints = []
    full = train(dataset, split, cfg, checkpoint_callback=checkpoints.append)
    assert checkpoints[0]["cuda_rng"] is not None
    resumed = train(dataset, split, cfg, checkpoint=checkpoints[0])
    without = train(dataset, split, cfg, checkpoint={**checkpoints[0], "cuda_rng": None})
    key = "val/gene_interaction/MSE"
    # GPU scatter-adds are not bit-reproducible, so compare within a tolerance far below what a
    # different dropout stream changes
    assert [r[key] for r in resumed.history] == pytest.approx([r[key] for r in full.history], rel=1e-3)
    assert [r[key] for r in without.history[1:]] != pytest.approx([r[key] for r in full.history[1:]], rel=1e-3)


@pytest.mark.cuda
def test_a_trial_checkpointed_on_the_cpu_resumes_on_cuda_and_back(demo, monkeypatch, tmp_path):
    from services import require_cuda

    from torchcell_search.storage.artifacts import save_atomic

    require_cuda()
    dataset, split = demo
    cfg = _cfg(**{"model.dropout": 0.1, "trainer.device": "auto"})  # a study's device: auto

    def through_disk(checkpoint):  # as a worker reads another's epoch checkpoint
        save_atomic(checkpoint, tmp_path / "c.pt")
        return torch.load(tmp_path / "c.pt", map_location="cpu", weights_only=False)

    on_cpu = []
    with monkeypatch.context() as m:
        m.setattr(torch.cuda, "is_available", lambda: False)  # a CPU node: auto is the CPU
        all_cpu = train(dataset, split, cfg, checkpoint_callback=on_cpu.append)
    assert all_cpu.device == "cpu" and on_cpu[0]["scaler"] == {} and on_cpu[0]["cuda_rng"] is None
    # a GPU node picks the trial up after epoch 0: its enabled scaler starts fresh
    on_gpu = []
    gpu = train(dataset, split, cfg, checkpoint=through_disk(on_cpu[0]), checkpoint_callback=on_gpu.append)
    assert gpu.device.startswith("cuda") and gpu.stopped_reason is None
    assert on_gpu[0]["scaler"]["scale"] > 0 and on_gpu[0]["cuda_rng"] is not None
    # ... and a CPU node takes it back after epoch 1, from a checkpoint holding CUDA tensors
    assert next(iter(on_gpu[0]["model"].values())).device.type == "cuda"
    with monkeypatch.context() as m:
        m.setattr(torch.cuda, "is_available", lambda: False)
        back = train(dataset, split, cfg, checkpoint=through_disk(on_gpu[0]))
    assert back.device == "cpu" and [r["epoch"] for r in back.history] == [0, 1, 2]
    # each leg went on from the one before: the finished epochs are carried over as they were
    assert gpu.history[0] == all_cpu.history[0] and back.history[1] == gpu.history[1]
    assert all(math.isfinite(v) for row in back.history for v in row.values())


@pytest.mark.cuda
def test_mixed_precision_training_on_cuda_stays_finite(demo):
    from services import require_cuda

    require_cuda()
    dataset, split = demo
    for kind in ("hetero_cell", "perturbation_set"):
        result = train(dataset, split, _cfg(**{"trainer.device": "cuda", "model.kind": kind, "trainer.max_epochs": 2}))
        # fp16 autocast: every epoch's loss and metrics are finite, on the GPU
        assert result.device.startswith("cuda") and result.stopped_reason is None
        assert all(math.isfinite(v) for row in result.history for v in row.values())


# ---------------------------------------------------------------- TorchCell options (issue 12)
_PLATEAU = {"trainer.lr_schedule": "plateau", "trainer.warmup_epochs": 0, "optimizer.lr": 1e-3,
            "regression_task.lr_scheduler.factor": 0.5, "regression_task.lr_scheduler.cooldown": 0}


def test_plateau_lowers_the_lr_after_patience_epochs_without_improvement(demo):
    dataset, split = demo
    # threshold 0.99 (rel): only a 100x lower val loss counts as better, so every epoch after the first is bad
    cfg = _cfg(**_PLATEAU, **{"trainer.max_epochs": 6, "regression_task.lr_scheduler.patience": 1,
                              "regression_task.lr_scheduler.threshold": 0.99})
    lrs = [row["lr"] for row in train(dataset, split, cfg).history]
    # epoch 0 sets the best; epochs 1, 2 are bad -> more than patience=1 -> halve; twice more -> halve again
    assert lrs == pytest.approx([1e-3, 1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4], rel=1e-12)


def test_plateau_is_torchs_reduce_lr_on_plateau_stepped_on_val_loss(demo):
    dataset, split = demo
    cfg = _cfg(**_PLATEAU, **{"trainer.max_epochs": 5, "regression_task.lr_scheduler.patience": 0,
                              "regression_task.lr_scheduler.threshold": 0.02})
    history = train(dataset, split, cfg).history
    # replay torch's scheduler on the recorded val losses: it must give the lr of every epoch
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1e-3)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=0, threshold=0.02,
                                                       threshold_mode="rel", cooldown=0, min_lr=1e-9, eps=1e-10)
    expected = []
    for row in history:
        expected.append(opt.param_groups[0]["lr"])
        assert math.isfinite(row["val/loss"])
        sched.step(row["val/loss"])
    assert [row["lr"] for row in history] == pytest.approx(expected, rel=1e-12)


def test_resume_is_exact_with_the_plateau_scheduler(demo):
    dataset, split = demo
    cfg = _cfg(**_PLATEAU, **{"trainer.max_epochs": 5, "regression_task.lr_scheduler.patience": 0,
                              "regression_task.lr_scheduler.threshold": 0.99, "model.dropout": 0.1})
    checkpoints = []
    full = train(dataset, split, cfg, checkpoint_callback=checkpoints.append)
    assert len({row["lr"] for row in full.history}) > 2  # the rate changed while training
    # resume after epoch 1: the scheduler's counters and the rate it set come from the checkpoint
    assert checkpoints[1]["scheduler"]["num_bad_epochs"] == 0 and checkpoints[1]["state"]["plateau_lr"] == 5e-4
    resumed = train(dataset, split, cfg, checkpoint=checkpoints[1])
    drop = ("epoch_seconds",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in resumed.history] == [
        {k: v for k, v in r.items() if k not in drop} for r in full.history
    ]
    assert resumed.test == full.test


@pytest.mark.parametrize("kind", ["AdamW", "Adam"])
def test_optimizer_type_and_weight_decay_reach_the_optimizer(demo, kind):
    dataset, split = demo
    checkpoints = []
    cfg = _cfg(**{"trainer.max_epochs": 1, "optimizer.type": kind, "optimizer.weight_decay": 0.3})
    train(dataset, split, cfg, checkpoint_callback=checkpoints.append)
    group = checkpoints[0]["optimizer"]["param_groups"][0]
    # AdamW decays the weights directly; Adam adds weight_decay * w to the gradient (L2)
    assert group["decoupled_weight_decay"] is (kind == "AdamW")
    assert group["weight_decay"] == 0.3


def test_adam_and_adamw_differ_only_through_weight_decay(demo):
    dataset, split = demo

    def history(kind: str, decay: float) -> list[float]:
        cfg = _cfg(**{"trainer.max_epochs": 2, "optimizer.type": kind, "optimizer.weight_decay": decay})
        return [row["val/loss"] for row in train(dataset, split, cfg).history]

    assert history("Adam", 0.0) == history("AdamW", 0.0)
    assert history("Adam", 0.1) != history("AdamW", 0.1)


def test_grad_clip_bounds_the_gradient_norm(demo, monkeypatch):
    dataset, split = demo
    norms = []
    clip = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *args, **kwargs):
        params = list(params)
        total = clip(params, max_norm, *args, **kwargs)
        norms.append((float(total), float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))), max_norm))
        return total

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    train(dataset, split, _cfg(**{"trainer.max_epochs": 1, "trainer.grad_clip": 0.05}))
    # every step clipped: pre-clip norms above 0.05 come out at 0.05
    assert norms and all(max_norm == 0.05 for _, _, max_norm in norms)
    assert all(after == pytest.approx(min(before, 0.05), rel=1e-3) for before, after, _ in norms)
    assert any(before > 0.05 for before, _, _ in norms)
    norms.clear()
    train(dataset, split, _cfg(**{"trainer.max_epochs": 1, "trainer.grad_clip": 0.0}))
    assert norms == []  # 0 switches clipping off (TorchCell's clip_grad_norm: false)


def test_every_epoch_records_the_combined_metrics_by_hand(demo):
    dataset, split = demo
    result = train(dataset, split, _cfg(**{"trainer.max_epochs": 1}))
    row = result.history[0]
    for part in ("train", "val"):
        for metric in ("MSE", "Pearson"):
            assert math.isfinite(row[f"{part}/combined/{metric}"])
    assert {"test/combined/MSE", "test/combined/Pearson"} <= set(result.test)
    # val: z-score both labels with the train split's mean and std, pool, score as one vector
    labels = dataset.table.labels().double()
    train_y = labels[split.train]
    mean = torch.stack([train_y[:, j][~train_y[:, j].isnan()].mean() for j in range(2)])
    std = torch.stack([train_y[:, j][~train_y[:, j].isnan()].std(unbiased=False) for j in range(2)])
    pred = torch.from_numpy(result.predictions["val"]).double()  # best epoch = the only epoch
    y = labels[split.val]
    both = ~y.isnan().any(dim=1)  # records with both labels, as TorchCell's combined_mask
    zp, zy = ((pred - mean) / std)[both].reshape(-1), ((y - mean) / std)[both].reshape(-1)
    mse = float(((zp - zy) ** 2).mean())
    r = float(torch.corrcoef(torch.stack([zp, zy]))[0, 1])
    assert row["val/combined/MSE"] == pytest.approx(mse, rel=1e-4)
    assert row["val/combined/Pearson"] == pytest.approx(r, rel=1e-4)


def test_train_command_with_the_torchcell_options(capsys):
    status = main(["train", "--data", "demo", "--subset", "300", "--epochs", "2", "--json",
                   *[f"--set={k}={v}" for k, v in _SMALL.items() if k != "trainer.max_epochs"],
                   "--set=model.prediction_head_config.head_num_layers=2",
                   "--set=model.prediction_head_config.residual=true",
                   "--set=model.prediction_head_config.head_norm=batch",
                   "--set=trainer.lr_schedule=plateau", "--set=regression_task.is_weighted_phenotype_loss=true",
                   "--set=model.activation=gelu", "--set=optimizer.type=Adam"])
    assert status == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["history"]) == 2 and all(math.isfinite(r["val/combined/Pearson"]) for r in out["history"])
    assert out["history"][0]["lr"] == 1e-3  # plateau: no warmup, no cosine; TorchCell's patience 3 not reached


def test_train_loss_is_the_mean_over_the_scored_records_with_profile_inputs(monkeypatch):
    # With model.gene_inputs=profile only records with a hidden gene are scored; each batch's
    # loss is a mean over those, so the epoch's train/loss weighs it by them (not the batch size).
    from torchcell_search.model.losses import CompositeLoss

    dataset, split = prepare_data("demo", subset=None, split="gene", seed=0, cache_dir=None)
    steps: list[tuple[float, int]] = []
    forward = CompositeLoss.forward

    def recording(self, pred, target, z_p):
        loss, terms = forward(self, pred, target, z_p)
        if torch.is_grad_enabled():  # training steps; the val loss runs under no_grad
            steps.append((float(loss), int(torch.isfinite(target).any(1).sum())))
        return loss, terms

    monkeypatch.setattr(CompositeLoss, "forward", recording)
    cfg = _cfg(**{"model.kind": "perturbation_set", "model.gene_inputs": "profile", "model.num_layers": 1,
                  "trainer.max_epochs": 1})
    result = train(dataset, split, cfg)
    scored = sum(n for _, n in steps)
    assert 0 < scored < len(split.train)  # some records were not scored: the case in question
    assert result.history[0]["train/loss"] == pytest.approx(sum(v * n for v, n in steps) / scored, rel=1e-6)


def test_a_given_direction_overrides_the_one_the_metric_name_suggests(demo):
    dataset, split = demo
    result = train(dataset, split, _cfg(), objective="val/gene_interaction/Pearson", direction="minimize")
    values = [row["val/gene_interaction/Pearson"] for row in result.history]
    assert result.best_epoch == int(np.argmin(values)) != int(np.argmax(values))
    with pytest.raises(ConfigError, match="direction"):
        train(dataset, split, _cfg(), direction="up")
