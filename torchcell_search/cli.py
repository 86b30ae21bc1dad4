"""The ``torchcell-search`` command line.

This module only parses arguments and delegates: each subcommand makes one call into a
package. Any :class:`~torchcell_search.errors.TorchcellSearchError` becomes one line on
stderr and exit status 2 (a bug still prints its traceback, status 1). Everything a command
prints passes through the storage URL's secret scrubber. Environment variables are read here
(and in ``storage/``) only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

from torchcell_search.errors import ConfigError, TorchcellSearchError

__all__ = ["main"]

_STORAGE_ENV = "TORCHCELL_SEARCH_STORAGE"
_CACHE_ENV = "TORCHCELL_SEARCH_CACHE"


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit status 2 (as the rest of the CLI)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, allow_nan=True))


def _cache_dir(args: argparse.Namespace) -> Path | None:
    value = getattr(args, "cache_dir", None) or os.environ.get(_CACHE_ENV)
    return Path(value) if value else None


def _storage(args: argparse.Namespace) -> str | None:
    return getattr(args, "storage", None) or os.environ.get(_STORAGE_ENV)


def _secrets_hidden(args: argparse.Namespace) -> contextlib.AbstractContextManager:
    """Everything printed (messages, logs, warnings, tracebacks) without the storage URL's secrets."""
    url = _storage(args)
    if not url:
        return contextlib.nullcontext()
    from torchcell_search.storage.secrets import secrets_hidden

    return secrets_hidden(url)


def _overrides(pairs: Sequence[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {pair!r}: expected key=value, e.g. --set model.num_layers=2")
        out[key.strip()] = value.strip()
    return out


def _set_threads(threads: int | None) -> None:
    value = threads if threads is not None else os.environ.get("OMP_NUM_THREADS", "1")
    try:
        count = int(value)
    except ValueError:
        raise ConfigError(f"--threads / OMP_NUM_THREADS: expected a positive integer, got {value!r}") from None
    if count < 1:
        raise ConfigError(f"--threads / OMP_NUM_THREADS: expected a positive integer, got {value!r}")
    os.environ["OMP_NUM_THREADS"] = str(count)  # inherited by worker processes this one starts
    import torch

    torch.set_num_threads(count)


def _slurm_cpus() -> int | None:
    """``SLURM_CPUS_PER_TASK`` where Slurm set it: the CPUs granted to this task."""
    value = os.environ.get("SLURM_CPUS_PER_TASK", "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"SLURM_CPUS_PER_TASK: expected a positive integer, got {value!r}")
    return int(value)


# --- subcommand handlers: one call into a package each -------------------------------


def _print_notices(notices: Sequence[str] | None) -> None:
    """Notices (keys of a sweep file not used here, pruning off for several objectives): one line each."""
    for line in notices or ():
        print(f"torchcell-search: note: {line}", file=sys.stderr)


def _cmd_data_summary(args: argparse.Namespace) -> None:
    from torchcell_search.data.summary import data_summary, format_summary

    summary = data_summary(args.data, cache_dir=_cache_dir(args), progress=not args.json)
    _print_json(summary) if args.json else print(format_summary(summary))


def _cmd_data_download(args: argparse.Namespace) -> None:
    from torchcell_search.data.download import download

    download(Path(args.dest), base_url=args.base_url, progress=True)


def _cmd_train(args: argparse.Namespace) -> None:
    from torchcell_search.search.trainer import train_command

    result = train_command(
        data=args.data,
        subset=args.subset,
        split=args.split,
        epochs=args.epochs,
        overrides=_overrides(args.set),
        seed=args.seed,
        device=args.device,
        cache_dir=_cache_dir(args),
        as_json=args.json,
    )
    if args.json:
        _print_json(result)


def _search_options(args: argparse.Namespace) -> dict[str, Any]:
    """The study options given on the command line (unset ones stay out: recipe and defaults fill them)."""
    names = (
        "recipe", "space", "data", "subset", "split", "epochs", "objective", "direction",
        "sampler", "pruner", "n_trials", "timeout", "seed", "device", "artifacts", "ensemble", "ensemble_diversity",
        "fidelity", "fidelity_eta", "fidelity_start",
    )
    options = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    for name in ("objective", "direction"):  # repeatable: one per objective
        if isinstance(options.get(name), list) and len(options[name]) == 1:
            options[name] = options[name][0]
    if getattr(args, "set", None):
        options["overrides"] = _overrides(args.set)
    return options


def _cmd_create(args: argparse.Namespace) -> None:
    from torchcell_search.search.study import create_study_command

    result = create_study_command(args.study, _storage(args), _search_options(args), cache_dir=_cache_dir(args))
    _print_notices(result.get("notices"))
    print(f"study {result['study']} {'created' if result['created'] else 'exists'} in {result['storage']}")


def _cmd_start(args: argparse.Namespace) -> None:
    from torchcell_search.search.study import format_status, start_command

    status = start_command(args.study, _storage(args), _search_options(args), jobs=args.jobs,
                           cache_dir=_cache_dir(args), notify=lambda line: _print_notices([line]),
                           workers_per_gpu=args.workers_per_gpu, threads=args.threads,
                           slurm_cpus=_slurm_cpus(), visible_gpus=os.environ.get("CUDA_VISIBLE_DEVICES"))
    print(format_status(status))


def _cmd_worker(args: argparse.Namespace) -> None:
    from torchcell_search.search.study import worker_command

    # SIGTERM (Slurm's preemption and time-limit signal) stops at the next epoch checkpoint;
    # the trial is handed back for retry and the worker exits with status 0.
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    result = worker_command(args.study, _storage(args), cache_dir=_cache_dir(args), stop=stop)
    if result.get("preempted") is not None:
        print(f"torchcell-search: stopped by SIGTERM; trial {result['preempted']} handed back for retry",
              file=sys.stderr)


def _cmd_status(args: argparse.Namespace) -> None:
    from torchcell_search.search.study import status_command

    from torchcell_search.search.study import format_status

    status = status_command(args.study, _storage(args), as_json=args.json, ensemble=args.ensemble,
                            ensemble_diversity=args.ensemble_diversity)
    _print_json(status) if args.json else print(format_status(status))


def _cmd_best(args: argparse.Namespace) -> None:
    from torchcell_search.search.study import best_command, format_ensemble

    best = best_command(args.study, _storage(args), as_json=args.json, ensemble=args.ensemble,
                        ensemble_diversity=args.ensemble_diversity)
    if args.json:
        _print_json(best)
    elif "pareto" in best:
        aims = ", ".join(f"{o} ({d})" for o, d in zip(best["objectives"], best["directions"]))
        print(f"Pareto set of {len(best['pareto'])} trial{'s' if len(best['pareto']) != 1 else ''}: {aims}")
        for row in best["pareto"]:
            values = ", ".join(f"{o} = {v:.4f}" for o, v in zip(best["objectives"], row["values"]))
            params = " ".join(f"{k}={v}" for k, v in sorted(row["params"].items()))
            print(f"  trial {row['number']}: {values}  |  {params}")
    else:
        print(f"best trial {best['number']}: {best['objective']} = {best['value']:.4f}")
        for key, value in sorted(best["params"].items()):
            print(f"  {key} = {value}")
    if not args.json:
        for line in format_ensemble(best.get("ensemble")):
            print(line)


def _cmd_predict(args: argparse.Namespace) -> None:
    from torchcell_search.search.predict import predict_command

    result = predict_command(args.study, _storage(args), trial=args.trial, pairs=Path(args.pairs),
                             out=Path(args.out), cache_dir=_cache_dir(args), device=args.device,
                             ensemble=args.ensemble, ensemble_diversity=args.ensemble_diversity)
    source = (f"trial {result['trial']}" if len(result["trials"]) == 1 else
              f"the mean of trials {', '.join(map(str, result['trials']))}")
    print(f"wrote {result['rows']} predictions of {source} to {result['out']}")


def _cmd_slurm(args: argparse.Namespace) -> None:
    from torchcell_search.search.slurm import slurm_command

    slurm_command(
        args.study, _storage(args), array=args.array, partition=args.partition,
        gpus_per_task=args.gpus_per_task, cpus_per_task=args.cpus_per_task, time=args.time,
        out=Path(args.out) if args.out else None, submit=args.submit, mem=args.mem, gres=args.gres,
    )


def _cmd_dashboard(args: argparse.Namespace) -> None:
    from torchcell_search.dashboards.server import dashboard_command

    dashboard_command(args.study, _storage(args), host=args.host, port=args.port)


def _cmd_report(args: argparse.Namespace) -> None:
    from torchcell_search.dashboards.report import report_command

    print(report_command(args.study, _storage(args), out=Path(args.out)))


# --- parser ---------------------------------------------------------------------------

_DATA_HELP = "real data directory (the layout of ../shared/data) or 'demo' for the embedded synthetic data"


def _add_storage(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", help=f"Optuna storage URL (default: ${_STORAGE_ENV}, else sqlite:///torchcell-search.db)")


def _add_cache(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", help=f"where built graphs and splits are cached (default: ${_CACHE_ENV}, else ~/.cache/torchcell-search)")


def _add_study_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--study", required=True, help="study name")
    _add_storage(p)
    _add_cache(p)
    p.add_argument("--recipe", help="YAML file holding any of these options together")
    p.add_argument("--space", help="search space or sweep file: ours, a W&B sweep (nested parameters too) or a Hydra "
                   "config with the Optuna sweeper; the file's settings are defaults, flags win "
                   "(default: configs/report.yaml)")
    p.add_argument("--data", help=_DATA_HELP + " (default: demo)")
    p.add_argument("--subset", type=int, help="use N records drawn reproducibly (the report used 25000 and 100000)")
    p.add_argument("--split", choices=("random", "pair", "gene"), help="how records are split (default: random)")
    p.add_argument("--epochs", type=int, help="epochs per trial")
    p.add_argument("--objective", action="append", help="metric to optimise; repeat for a multi-objective study, "
                   "e.g. --objective val/combined/MSE --objective val/combined/Pearson "
                   "(default: val/gene_interaction/Pearson)")
    p.add_argument("--direction", action="append", choices=("maximize", "minimize"),
                   help="one per --objective, in order (default: from each objective's name)")
    p.add_argument("--sampler", choices=("tpe", "random", "grid"), help="default: tpe")
    p.add_argument("--pruner", choices=("median", "hyperband", "none"), help="default: median")
    p.add_argument("--fidelity", metavar="subset:N1,N2,...[,all]|family",
                   help="data size as a fidelity: every trial starts on N1 train records and the best 1/eta "
                   "of each rung go on to the next (successive halving; val and test stay whole); 'family': "
                   "the sizes of the --space file's TorchCell family (..._2.5e4.yaml, ..._1e5.yaml), "
                   "where its files differ in nothing else")
    p.add_argument("--fidelity-eta", type=int, help="keep the best 1/eta of each rung (default: 3)")
    p.add_argument("--fidelity-start", choices=("warm", "scratch"),
                   help="a promoted trial starts its next rung from its weights or from scratch (default: scratch)")
    p.add_argument("--n-trials", type=int, help="total trial budget of the study, across all workers")
    p.add_argument("--timeout", type=float, help="stop starting new trials after S seconds")
    p.add_argument("--seed", type=int, help="sampler and training seed")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default: auto (CUDA with mixed precision when present)")
    p.add_argument("--artifacts", help="artifact directory (default: <db stem>-artifacts next to a SQLite file, "
                   "else ./torchcell-search-artifacts; must be shared by all workers)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="fix a parameter for every trial by its dotted key, e.g. optimizer.lr=1e-3 (repeatable)")
    _add_ensemble(p, "predict's default: average the K best trials (default 1: the best alone); with seeds, "
                  "workers train the best trial's K-1 seed replicas once the budget is spent")


def _add_ensemble(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--ensemble", type=int, metavar="K", help=what)
    p.add_argument("--ensemble-diversity", choices=("configs", "seeds"),
                   help="ensemble members: the K best distinct configurations, or the best one and K-1 "
                   "seed replicas of it (default: the study's, else configs)")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="torchcell-search",
        description="Hyperparameter search for HeteroCell models of yeast double-mutant fitness and "
        "genetic interaction (epsilon). Studies live in Optuna storage (SQLite by default, PostgreSQL "
        "for many workers).",
    )
    from torchcell_search import __version__

    parser.add_argument("--version", action="version", version=f"torchcell-search {__version__}")
    parser.add_argument(
        "--threads", type=int,
        help="torch CPU threads per process (default: $OMP_NUM_THREADS, else 1; start's workers: the CPUs "
        "this process may use shared out among them). The graph kernels "
        "gain little from more threads and slow down many times over when another process shares "
        "the cores; run more workers (--jobs, SLURM arrays) instead",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    data = sub.add_parser("data", help="inspect or download the data")
    data_sub = data.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    p = data_sub.add_parser("summary", help="node, edge and record counts of a data set")
    p.add_argument("--data", default="demo", help=_DATA_HELP)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _add_cache(p)
    p.set_defaults(func=_cmd_data_summary)
    p = data_sub.add_parser("download", help="fetch the official sources (resumes partial downloads)")
    p.add_argument("--dest", required=True, help="directory to write the data layout into")
    p.add_argument("--base-url", help="mirror to fetch from instead of the official homes")
    p.set_defaults(func=_cmd_data_download)

    p = sub.add_parser("train", help="train one configuration and print per-epoch metrics")
    p.add_argument("--data", default="demo", help=_DATA_HELP)
    p.add_argument("--subset", type=int, help="use N records drawn reproducibly")
    p.add_argument("--split", default="random", choices=("random", "pair", "gene"))
    p.add_argument("--epochs", type=int, help="epochs (default on the demo data, where that is enough to fit it: 8, 12 for model.kind=perturbation_set; else trainer.max_epochs, 20)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a parameter by its dotted key, e.g. model.num_layers=2 (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--json", action="store_true", help="print one JSON object: best_epoch, best, test, history")
    _add_cache(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("create", help="create a study and store its configuration; runs nothing")
    _add_study_options(p)
    p.set_defaults(func=_cmd_create)
    p = sub.add_parser("start", help="create or resume a study and run trials in this process")
    _add_study_options(p)
    p.add_argument("--jobs", type=int, help="local worker processes (default: one per CPU this process may use, "
                   "or --workers-per-gpu per visible GPU; never more than the study's trials left)")
    p.add_argument("--workers-per-gpu", type=int, default=1,
                   help="workers sharing each GPU when --jobs is not given (default: 1)")
    p.set_defaults(func=_cmd_start)

    p = sub.add_parser("worker", help="join an existing study and run trials until its budget is reached")
    p.add_argument("--study", required=True)
    _add_storage(p)
    _add_cache(p)
    p.set_defaults(func=_cmd_worker)

    for name, func, text in (("status", _cmd_status, "table of a study's trials"), ("best", _cmd_best, "the best trial")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--study", required=True)
        _add_storage(p)
        p.add_argument("--json", action="store_true")
        _add_ensemble(p, "also score the ensemble of the K best trials, beside the best (default: the study's)")
        p.set_defaults(func=func)

    p = sub.add_parser("predict", help="predict fitness and gene_interaction for gene pairs with a trial's model")
    p.add_argument("--study", required=True)
    _add_storage(p)
    _add_cache(p)
    p.add_argument("--trial", type=int, help="trial number (default: the best trial)")
    p.add_argument("--pairs", required=True, help="TSV with columns query_orf, array_orf")
    p.add_argument("--out", required=True, help="TSV to write")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: auto (CUDA when present)")
    _add_ensemble(p, "average the predictions of the K best trials (default: the study's ensemble, else 1)")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("slurm", help="write (and optionally submit) an sbatch array whose tasks run workers; "
                       "a study made from a Hydra file takes its launcher settings as defaults (flags win)")
    p.add_argument("--study", required=True)
    _add_storage(p)
    p.add_argument("--array", help="task range, e.g. 0-7 or 0-31%%8 (default: 0-<n_jobs-1> of the study's Hydra "
                   "sweeper; else required)")
    p.add_argument("--partition")
    p.add_argument("--gpus-per-task", type=int, help="GPUs per array task (written with --ntasks=1)")
    p.add_argument("--gres", help="generic resources per array task, e.g. gpu:1 or gpu:a100:1")
    p.add_argument("--cpus-per-task", type=int, help="CPUs per array task; the worker's torch threads")
    p.add_argument("--mem", help="memory per array task, e.g. 16G")
    p.add_argument("--time", help="wall time per task, e.g. 04:00:00")
    p.add_argument("--out", help="script path (default: <study>.sbatch)")
    p.add_argument("--submit", action="store_true", help="submit with sbatch")
    p.set_defaults(func=_cmd_slurm)

    p = sub.add_parser("dashboard", help="serve optuna-dashboard for a study's storage")
    p.add_argument("--study", required=True)
    _add_storage(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.set_defaults(func=_cmd_dashboard)

    p = sub.add_parser("report", help="write a self-contained HTML report of a study")
    p.add_argument("--study", required=True)
    _add_storage(p)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``torchcell-search`` script; returns the exit status."""
    args = _build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], None] = args.func
    with _secrets_hidden(args):
        try:
            _set_threads(args.threads)
            func(args)
        except TorchcellSearchError as e:
            print(f"torchcell-search: error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("torchcell-search: interrupted", file=sys.stderr)
            return 130
        except Exception:  # noqa: BLE001 - a bug: Python's own report and status, but scrubbed
            traceback.print_exc()
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
