"""Bad input across every command: exit status 2, one readable line, nothing written.

Each row of ``CASES`` runs the real command line (``torchcell_search.cli.main``, in this
process for speed, and a few rows again in a subprocess as a user would) against a
PostgreSQL database holding one finished study (``base``); afterwards the database must
hold the same studies with the same trials and configuration, stderr one line without a
traceback, and the bad-file directory no new file.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import optuna
import pytest
import yaml

from tests.reliability.conftest import TINY
from torchcell_search.search.study import CONFIG_ATTR, start_command

pytestmark = [pytest.mark.postgres]

UNREACHABLE = "postgresql+psycopg2://postgres@127.0.0.1:1/nowhere"


@pytest.fixture(scope="module")
def world(pg_module_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A study with one finished trial, and a directory of bad files referred to as {dir}."""
    from datafiles import make_tiny_data_dir

    root = tmp_path_factory.mktemp("bad-input")
    start_command("base", pg_module_url, {**TINY, "epochs": 1, "n_trials": 1, "pruner": "none",
                                          "artifacts": str(root / "art")})
    spaces = {
        "malformed.yaml": "parameters: [heads: {choices: [1, 5\n",
        "unknown_param.yaml": yaml.safe_dump({"parameters": {"model.no_such_thing": {"choices": [1]}}}),
        "empty_choices.yaml": yaml.safe_dump({"parameters": {"heads": {"choices": []}}}),
        "low_gt_high.yaml": yaml.safe_dump({"parameters": {"optimizer.lr": {"low": 1e-2, "high": 1e-4}}}),
        "wrong_type.yaml": yaml.safe_dump({"parameters": {"model.num_layers": {"choices": ["two", "three"]}}}),
        "float_grid.yaml": yaml.safe_dump({"parameters": {"optimizer.lr": {"low": 1e-4, "high": 1e-2}}}),
        "not_a_mapping.yaml": "- just\n- a list\n",
        # sweep files as TorchCell writes them (Hydra + Optuna sweeper, W&B), each broken one way
        "hydra_grammar.yaml": yaml.safe_dump({"model": {"num_layers": 2}, "hydra": {"sweeper": {"params": {
            "model.num_layers": "choice(1,"}}}}),
        "hydra_range_categorical.yaml": yaml.safe_dump({"model": {"norm": "layer"}, "hydra": {"sweeper": {"params": {
            "model.norm": "range(1, 3)"}}}}),
        "hydra_empty_choice.yaml": yaml.safe_dump({"heads": 1, "hydra": {"sweeper": {"params": {"heads": "choice()"}}}}),
        "hydra_dangling.yaml": yaml.safe_dump({"model": {"norm": "${norms}"}}),
        "hydra_cycle_a.yaml": yaml.safe_dump({"defaults": ["hydra_cycle_b", "_self_"]}),
        "hydra_cycle_b.yaml": yaml.safe_dump({"defaults": ["hydra_cycle_a"]}),
        "hydra_missing_default.yaml": yaml.safe_dump({"defaults": ["hetero_cell_lost", "_self_"]}),
        "hydra_unsupported_model.yaml": yaml.safe_dump({"model": {"attention_pattern": ["S", "M"]}}),
        "wandb_early_terminate.yaml": yaml.safe_dump({"early_terminate": {"type": "not_a_real_type"}, "parameters": {
            "model": {"parameters": {"num_layers": {"values": [1, 2]}}}}}),
    }
    for name, text in spaces.items():
        (root / name).write_text(text)
    (root / "recipe_malformed.yaml").write_text("epochs: [1\n")
    (root / "recipe_unknown.yaml").write_text("epochs: 1\nlearning_rate: 3\n")
    (root / "a_file").write_text("not a directory\n")
    (root / "pairs_unknown.tsv").write_text("query_orf\tarray_orf\nYAL001C\tNOT_A_GENE\n")
    (root / "pairs_columns.tsv").write_text("gene1\tgene2\nYAL001C\tYAL002W\n")
    (root / "pairs_ok.tsv").write_text("query_orf\tarray_orf\n")
    # data directories: wrong columns and a corrupt (truncated gzip) epsilon table
    eps = "costanzo2016/nxn_metabolic_epsilon.tsv.gz"
    cols = make_tiny_data_dir(root / "data_cols")
    with gzip.open(cols / eps, "wt") as f:
        f.write("a\tb\tc\nYAL001C\tYAL002W\t0.1\n")
    corrupt = make_tiny_data_dir(root / "data_corrupt")
    (corrupt / eps).write_bytes(b"\x1f\x8b\x08\x00garbage")
    missing = make_tiny_data_dir(root / "data_missing")
    (missing / eps).unlink()
    demo_genes = _demo_pair()
    (root / "pairs_ok.tsv").write_text(f"query_orf\tarray_orf\n{demo_genes[0]}\t{demo_genes[1]}\n")
    return {"dir": str(root), "url": pg_module_url}


def _demo_pair() -> tuple[str, str]:
    from torchcell_search.data.demo import make_demo_dataset

    ids = make_demo_dataset(seed=0).graph.gene_ids
    return ids[0], ids[1]


#: (case id, argv with {dir} for the bad-file directory, words stderr must contain)
CASES = [
    ("malformed-space-yaml", "create --study n --space {dir}/malformed.yaml", "yaml"),
    ("unknown-parameter", "create --study n --space {dir}/unknown_param.yaml", "model.no_such_thing"),
    ("empty-choices", "create --study n --space {dir}/empty_choices.yaml", "heads"),
    ("low-above-high", "create --study n --space {dir}/low_gt_high.yaml", "optimizer.lr"),
    ("wrong-value-type", "create --study n --space {dir}/wrong_type.yaml", "model.num_layers"),
    ("space-not-a-mapping", "create --study n --space {dir}/not_a_mapping.yaml", "mapping"),
    ("missing-space-file", "create --study n --space {dir}/no_such_space.yaml", "no_such_space"),
    ("grid-over-float-range", "create --study n --sampler grid --space {dir}/float_grid.yaml", "grid"),
    ("hydra-broken-grammar", "create --study n --space {dir}/hydra_grammar.yaml", "model.num_layers"),
    ("hydra-range-on-categorical", "create --study n --space {dir}/hydra_range_categorical.yaml", "model.norm"),
    ("hydra-empty-choice", "create --study n --space {dir}/hydra_empty_choice.yaml", "heads"),
    ("hydra-interpolation-to-nothing", "create --study n --space {dir}/hydra_dangling.yaml", "model.norm"),
    ("hydra-defaults-cycle", "create --study n --space {dir}/hydra_cycle_a.yaml", "cycle"),
    ("hydra-missing-default", "create --study n --space {dir}/hydra_missing_default.yaml", "hetero_cell_lost"),
    ("sweep-unsupported-model-key", "start --study n --space {dir}/hydra_unsupported_model.yaml",
     "model.attention_pattern"),
    ("wandb-unknown-early-terminate", "create --study n --space {dir}/wandb_early_terminate.yaml", "early_terminate"),
    ("malformed-recipe", "create --study n --recipe {dir}/recipe_malformed.yaml", "recipe"),
    ("unknown-recipe-option", "create --study n --recipe {dir}/recipe_unknown.yaml", "learning_rate"),
    ("bad-storage-scheme", "status --study base --storage mongodb://localhost/db", "scheme"),
    ("unparsable-storage-url", "status --study base --storage ::not-a-url::", "storage"),
    ("unreachable-database", f"start --study n --epochs 1 --storage {UNREACHABLE}", "cannot open storage"),
    ("missing-sqlite-file", "status --study base --storage sqlite:///{dir}/typo.db", "does not exist"),
    ("missing-data-dir", "create --study n --data {dir}/no_such_data", "no_such_data"),
    ("corrupt-data-file", "start --study n --epochs 1 --data {dir}/data_corrupt", "epsilon"),
    ("wrong-data-columns", "start --study n --epochs 1 --data {dir}/data_cols", "query_orf"),
    ("missing-data-file", "create --study n --data {dir}/data_missing", "epsilon"),
    ("unknown-study", "status --study no_such_study", "no_such_study"),
    ("worker-unknown-study", "worker --study no_such_study", "no_such_study"),
    ("empty-study-name", "status --study ", "study"),
    ("resume-different-config", "start --study base --epochs 5", "different configuration"),
    ("negative-n-trials", "create --study n --n-trials -3", "--n-trials"),
    ("zero-epochs", "create --study n --epochs 0", "--epochs"),
    ("zero-subset", "create --study n --subset 0", "--subset"),
    ("negative-timeout", "create --study n --timeout -5", "--timeout"),
    ("test-metric-objective", "create --study n --objective test/fitness/MSE", "objective"),
    ("non-integer-epochs", "create --study n --epochs two", "--epochs"),
    ("unknown-choice", "create --study n --sampler cmaes", "--sampler"),
    ("set-without-equals", "create --study n --set model.num_layers", "--set"),
    ("set-unknown-key", "create --study n --set model.no_such=1", "model.no_such"),
    ("set-wrong-type", "create --study n --set model.num_layers=abc", "model.num_layers"),
    ("train-set-wrong-type", "train --epochs 1 --set optimizer.lr=fast", "optimizer.lr"),
    ("predict-unknown-genes", "predict --study base --pairs {dir}/pairs_unknown.tsv --out {dir}/p.tsv",
     "NOT_A_GENE"),
    ("predict-wrong-columns", "predict --study base --pairs {dir}/pairs_columns.tsv --out {dir}/p.tsv", "query_orf"),
    ("predict-missing-pairs", "predict --study base --pairs {dir}/none.tsv --out {dir}/p.tsv", "none.tsv"),
    ("predict-no-such-trial", "predict --study base --trial 99 --pairs {dir}/pairs_ok.tsv --out {dir}/p.tsv", "99"),
    ("predict-unwritable-out", "predict --study base --pairs {dir}/pairs_ok.tsv --out {dir}/a_file/p.tsv",
     "a_file"),
    ("report-unwritable-out", "report --study base --out {dir}/a_file/r.html", "a_file"),
    ("slurm-unwritable-out", "slurm --study base --array 0-3 --out {dir}/a_file/s.sbatch", "a_file"),
    ("slurm-reversed-array", "slurm --study base --array 5-2 --out {dir}/s.sbatch", "--array"),
    ("slurm-garbage-array", "slurm --study base --array abc --out {dir}/s.sbatch", "--array"),
    ("bad-heartbeat-env", "status --study base", "TORCHCELL_SEARCH_HEARTBEAT_S"),
    ("unknown-command", "frobnicate", "invalid choice"),
]
_ENV = {"bad-heartbeat-env": {"TORCHCELL_SEARCH_HEARTBEAT_S": "soon"}}


def _snapshot(url: str) -> dict[str, tuple]:
    """Study name -> (configuration, trials as (number, state, n intermediate values))."""
    out = {}
    for summary in optuna.get_all_study_summaries(storage=url):
        study = optuna.load_study(study_name=summary.study_name, storage=url)
        out[summary.study_name] = (study.user_attrs.get(CONFIG_ATTR), tuple(
            (t.number, t.state.name, len(t.intermediate_values), len(t.user_attrs)) for t in study.trials))
    return out


def _run_in_process(argv: list[str], storage: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                    capfd: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from torchcell_search.cli import main

    monkeypatch.setenv("TORCHCELL_SEARCH_STORAGE", storage)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    capfd.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:  # argparse usage errors
        code = int(e.code or 0)
    return code, capfd.readouterr().err


#: Rows run again through a real subprocess (the installed entry point, a fresh interpreter).
SUBPROCESS = {"unreachable-database", "unknown-study", "predict-unknown-genes", "corrupt-data-file",
              "slurm-reversed-array", "set-without-equals", "sweep-unsupported-model-key"}


@pytest.mark.parametrize("case, argv, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(cli, world: dict[str, str], case: str, argv: str,
                                                            words: str, monkeypatch: pytest.MonkeyPatch,
                                                            capfd: pytest.CaptureFixture[str]) -> None:
    before = _snapshot(world["url"])
    files_before = sorted(p.name for p in Path(world["dir"]).iterdir())
    args = argv.format(dir=world["dir"]).split(" ")
    runs = [("in-process", *_run_in_process(args, world["url"], _ENV.get(case, {}), monkeypatch, capfd))]
    if case in SUBPROCESS:
        # How fast a fresh process fails is a benchmark (benchmarks/bench_fail_fast.py), not asserted:
        # what bounds it (connect timeout, no retry on open) is asserted in tests/storage/test_urls.py.
        r = cli(*args, storage=world["url"], env=_ENV.get(case), timeout=300)
        runs.append(("subprocess", r.returncode, r.stderr))
    for how, code, err in runs:
        lines = err.strip().splitlines()
        # exit status 2 and one readable line naming the problem, never a traceback
        assert code == 2, (how, code, err[-2000:])
        assert len(lines) == 1 and "Traceback" not in err, (how, err[-2000:])
        assert words.lower() in lines[0].lower(), (how, lines)
    # nothing written: the same studies, trials and configuration; no stray output files
    assert _snapshot(world["url"]) == before
    assert sorted(p.name for p in Path(world["dir"]).iterdir()) == files_before


def test_the_table_covers_at_least_twenty_kinds() -> None:
    assert len({c[0] for c in CASES}) >= 20
