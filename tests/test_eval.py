"""Read-outs of frozen features (starx/eval): top-k counts, weighted kNN, the linear probe, and
the pretraining encoder's features (one image at a time, pretraining layout)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from starx.eval.accuracy import percentages, topk_correct
from starx.eval.features import encoder_features, resolve_blocks
from starx.eval.knn import knn_correct, knn_votes
from starx.eval.probe import ProbeSettings, fit_probe


def test_topk_correct_counts_rows_whose_label_is_among_the_k_highest():
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.1, 0.2, 0.7], [0.5, 0.3, 0.2]])
    labels = torch.tensor([0, 1, 2])
    # row 0: top-1 hit; row 1: label 1 is second; row 2: label 2 is last. Top-5 with 3 classes: all.
    assert topk_correct(scores, labels, ks=(1, 2, 5)).tolist() == [1, 2, 3]
    assert percentages(torch.tensor([1, 3]), 4, prefix="knn_") == {"knn_top1": 25.0, "knn_top5": 75.0}


def test_knn_votes_are_exp_similarity_over_temperature_of_the_k_nearest():
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    labels = torch.tensor([0, 1, 2, 1])
    query = torch.tensor([[2.0, 0.5]])  # scale does not matter: features are L2-normalised
    votes = knn_votes(bank, labels, query, num_classes=3, k=2, temperature=0.5)
    sims = F.normalize(query, dim=-1) @ F.normalize(bank, dim=-1).T  # nearest two: bank 0 and 2
    expected = torch.zeros(1, 3)
    expected[0, 0] = (sims[0, 0] / 0.5).exp()
    expected[0, 2] = (sims[0, 2] / 0.5).exp()
    torch.testing.assert_close(votes, expected)


def test_knn_separates_clusters_and_chunking_changes_nothing():
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(10, 16, generator=gen) * 3
    y_bank, y_query = torch.arange(500) % 10, torch.arange(97) % 10
    bank = centres[y_bank] + torch.randn(500, 16, generator=gen)
    queries = centres[y_query] + torch.randn(97, 16, generator=gen)
    whole = knn_correct(bank, y_bank, queries, y_query, 10, k=20, temperature=0.07, chunk=1000)
    chunked = knn_correct(bank, y_bank, queries, y_query, 10, k=20, temperature=0.07, chunk=7)
    assert whole.tolist() == chunked.tolist()
    assert whole[0] >= 90 and whole[1] == 97
    # k larger than the bank: every bank feature votes
    assert knn_correct(bank[:5], y_bank[:5], queries, y_query, 10, k=20).shape == (2,)


def test_linear_probe_is_batchnorm_without_affine_then_linear_and_learns_a_linear_rule():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2000, 8, generator=gen) * 5 + 3  # far from standardised: the BatchNorm's job
    w = torch.randn(8, 4, generator=gen)
    y = (x @ w).argmax(-1)
    settings = ProbeSettings(epochs=30, batch_size=128)
    probe = fit_probe(x[:1500], y[:1500], 4, settings)
    bn, linear = probe[0], probe[1]
    assert isinstance(bn, torch.nn.BatchNorm1d) and not bn.affine and isinstance(linear, torch.nn.Linear)
    assert not probe.training
    with torch.no_grad():
        top1 = (probe(x[1500:]).argmax(-1) == y[1500:]).float().mean().item()
    assert top1 > 0.9
    again = fit_probe(x[:1500], y[:1500], 4, settings)  # seeded: the same probe again
    torch.testing.assert_close(again[1].weight, linear.weight)


def test_resolve_blocks_counts_from_one_or_from_the_last():
    assert resolve_blocks([-1], 4) == [4]
    assert resolve_blocks([2, -1, 4], 4) == [2, 4]
    for bad in ([0], [5], [-5], []):
        with pytest.raises(ValueError, match="eval.feature_blocks"):
            resolve_blocks(bad, 4)


def _tiny_model(separator: str = "cluster"):
    from starx.models import create_model

    torch.manual_seed(0)
    return create_model("star_tiny", img_size=16, patch_size=4, cluster_size=2, in_chans=1, separator=separator,
                        seq_multiplier=2, depth=3, embed_dim=32, decoder_dim=32, decoder_depth=2, decoder_heads=2,
                        backend="torch").eval()


@pytest.mark.parametrize("separator", ["cluster", "none", "distinct"])
def test_features_read_each_image_alone_in_pretraining_layout(separator):
    """The feature of an image is the mean over its tokens of the last block's stream normed by the
    decoder's LayerNorm for that depth, with the first slot's separator in front; it does not depend
    on the other images of the batch."""
    model = _tiny_model(separator)
    images = torch.randn(3, 1, 16, 16)
    feats = encoder_features(model, images)
    assert feats.shape == (3, 32)
    torch.testing.assert_close(encoder_features(model, images[1:2]), feats[1:2], atol=1e-5, rtol=1e-5)

    x = model.patch_embed(images)[:, model.order] + model.pos_embed
    sep = model.separator()
    if sep is not None:
        x = torch.cat([sep[0].expand(3, -1, -1), x], dim=1)
    stream, residual = x, None
    for block in model.layers:
        stream, residual = block(stream, residual)
    last = (residual + stream)[:, -16:]
    assert model.taps[-1] == 3
    torch.testing.assert_close(feats, model.enc_norms[-1](last).mean(1), atol=1e-5, rtol=1e-5)


def test_features_of_several_blocks_are_concatenated():
    model = _tiny_model()
    images = torch.randn(2, 1, 16, 16)
    both = encoder_features(model, images, [1, -1])
    assert both.shape == (2, 64)
    torch.testing.assert_close(both[:, 32:], encoder_features(model, images, [-1]))
    # block 1 is not a decoder tap (taps of depth 3 with 2 decoder blocks: 2 and 3): parameter-free norm
    assert 1 not in model.taps
    first = encoder_features(model, images, [1])
    torch.testing.assert_close(first.mean(-1), torch.zeros(2), atol=1e-5, rtol=0)  # each token's norm is centred


@pytest.mark.parametrize("overrides,message", [
    (["eval.knn.enabled=true", "pretrain.enabled=false", "finetune.init=none"], "need pretrain.enabled=true"),
    (["eval.linear_probe.enabled=true", "eval.feature_blocks=[0]"], "eval.feature_blocks"),
    (["model.depth=4", "eval.feature_blocks=[5]"], "eval.feature_blocks"),
    (["eval.knn.k=0"], "eval.knn.k"),
    (["eval.every_epochs=-1"], "eval.every_epochs"),
])
def test_readout_fields_are_checked_with_the_spec(overrides, message):
    from starx.spec import SpecError, load_spec
    from tests.test_engine import QUICKSTART

    with pytest.raises(SpecError, match=message):
        load_spec(QUICKSTART, overrides)


def test_quickstart_spec_asks_for_both_readouts_and_the_pixel_baseline():
    from starx.spec import load_spec
    from tests.test_engine import QUICKSTART

    cfg = load_spec(QUICKSTART)
    assert cfg.eval.knn.enabled and cfg.eval.linear_probe.enabled and cfg.eval.pixel_baseline
    assert (cfg.eval.knn.k, cfg.eval.knn.temperature, list(cfg.eval.feature_blocks)) == (20, 0.07, [-1])


def test_run_reports_readouts_during_and_after_pretraining_and_top5_after_fine_tuning(tmp_path):
    """eval.every_epochs runs the read-outs during pretraining too: each goes to metrics.jsonl as an
    eval line of the pretraining stage; the last one, and fine-tuning's top-1/top-5, to result.json."""
    from starx.api import prepare
    from starx.train.job import run_job
    from tests.test_engine import QUICKSTART, metrics, tiny

    run = prepare(QUICKSTART, tiny(tmp_path, "eval.knn.enabled=true", "eval.linear_probe.enabled=true",
                                   "eval.linear_probe.epochs=10", "eval.every_epochs=0.04", "pretrain.epochs=0.07"))
    result = run_job(run.run_dir)
    m = result["metrics"]
    keys = ("knn_top1", "knn_top5", "probe_top1", "probe_top5", "top1", "top5")
    assert all(0 <= m[k] <= 100 for k in keys), m
    assert m["knn_top5"] >= m["knn_top1"] and m["probe_top5"] >= m["probe_top1"] and m["top5"] >= m["top1"]
    evals = [r for r in metrics(run.run_dir) if r.get("kind") == "eval" and r["stage"] == "pretrain"]
    assert [r["step"] for r in evals] == [6, 11]  # every 0.04 epochs of 156 steps, and at the end
    assert evals[-1]["knn_top1"] == m["knn_top1"] and evals[-1]["probe_top5"] == m["probe_top5"]
    assert json.loads((run.run_dir / "result.json").read_text())["metrics"] == m


def test_results_table_shows_readouts_top5_and_the_pixel_baseline_beside_top1(tmp_path):
    import yaml

    from starx.results.catalog import resolve
    from starx.results.table import runs_table

    metrics = {"top1": 84.35, "top5": 99.5, "knn_top1": 65.5, "knn_top5": 95.75, "probe_top1": 71.7,
               "probe_top5": 98.0, "pixel_top1": 83.55, "readout_s": 13.6}
    for run_id in ("a", "b"):
        d = tmp_path / "exp" / run_id
        d.mkdir(parents=True)
        (d / "spec.yaml").write_text(yaml.safe_dump({"experiment": "exp", "seed": 0 if run_id == "a" else 1}))
        (d / "result.json").write_text(json.dumps({"experiment": "exp", "run_id": run_id, "status": "done",
                                                   "metrics": metrics, "wall_time_s": 1.0}))
    _, runs = resolve(tmp_path, "exp")
    columns = runs_table(runs).columns
    shown = ["top1", "top5", "knn_top1", "knn_top5", "probe_top1", "probe_top5", "pixel_top1"]
    assert [c for c in columns if c in shown] == shown
