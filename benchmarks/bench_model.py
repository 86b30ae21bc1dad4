"""Train-step throughput of HeteroCell: this tree vs the baseline commit vs the report's layout.

All timings are one train step (forward + backward of an MSE loss) under
``torch.use_deterministic_algorithms(True, warn_only=True)``, as the trainer runs it.
One command prints, side by side with ratios:

1. **demo graph** (300 genes, 2,830 directed physical edges), a grid of search configs:
   this tree's batched layout (``ours``), the same layout at the baseline commit
   (``base``, the model files read with ``git show REV:...`` and loaded in this process,
   same weights), and the report's layout (``ref``: :func:`reference_forward` on a PyG
   ``Batch`` of perturbed subgraphs, this tree's layers; its subgraph/collate time is
   excluded). The three run interleaved in one process, best of ``--repeats``.
2. **perturbation_set** at ``--set-batch`` vs the reference layout's samples/s.
3. **real graph** (``--real-data DIR``): each measurement in its own process (clean peak
   RSS): ours at ``--batch``, the reference at ``--real-ref-batch``, the baseline at
   ``--batch`` (skipped with ``--real-ref-batch 0`` / ``--no-real-base``).

Usage::

    python benchmarks/bench_model.py --repeats 5 --real-data /work/shared/data
    python benchmarks/bench_model.py --quick          # demo, two configs only
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

import torch

_ROOT = Path(__file__).resolve().parents[1]
#: The commit before the segment/fused rewrite (issue 3).
_BASELINE_REV = "33b24fe"
_MODEL_FILES = ("layers", "pooling", "hetero_cell", "reference")

# (hidden, layers, heads, pooling, batch): typical search configs on the demo graph.
_GRID = [
    (16, 2, 1, "attentional", 32),
    (16, 2, 1, "attentional", 64),
    (16, 2, 1, "sorted_set_transformer", 32),
    (32, 3, 5, "attentional", 32),
    (32, 3, 5, "sorted_set_transformer", 64),
    (64, 2, 10, "attentional", 32),
    (64, 4, 1, "sorted_set_transformer", 32),
    (64, 6, 5, "attentional", 64),
]


def _load_baseline(rev: str) -> types.ModuleType | None:
    """The model package at ``rev`` as modules ``_tcs_base.*`` (None when git cannot read it)."""
    pkg = types.ModuleType("_tcs_base")
    pkg.__path__ = []
    sys.modules["_tcs_base"] = pkg
    for name in _MODEL_FILES:
        try:
            src = subprocess.run(
                ["git", "-C", str(_ROOT), "show", f"{rev}:torchcell_search/model/{name}.py"],
                capture_output=True, text=True, check=True,
            ).stdout
        except (OSError, subprocess.CalledProcessError):
            return None
        for other in _MODEL_FILES:
            src = src.replace(f"torchcell_search.model.{other}", f"_tcs_base.{other}")
        mod = types.ModuleType(f"_tcs_base.{name}")
        mod.__file__ = f"<{rev}:{name}.py>"
        sys.modules[mod.__name__] = mod
        exec(compile(src, mod.__file__, "exec"), mod.__dict__)
        setattr(pkg, name, mod)
    return pkg


def _load(data: str):
    if data == "demo":
        from torchcell_search.data.demo import make_demo_dataset

        return make_demo_dataset()
    from torchcell_search.data.dataset import load_dataset

    return load_dataset(data)


def _inputs(ds, batch: int, seed: int = 0):
    from torchcell_search.data.masks import MaskBuilder

    g = torch.Generator().manual_seed(seed)
    genes = ds.table.genes[torch.randperm(len(ds.table), generator=g)[:batch]]
    return genes, MaskBuilder(ds.graph).masks(genes), torch.randn(batch, 2, generator=g)


def _steps(ds, cfg, batch: int, which: tuple[str, ...], base_pkg) -> dict:
    """A train-step closure per implementation, all with the same weights and batch."""
    from torchcell_search.model import build_model
    from torchcell_search.model.reference import build_reference_batch, reference_forward

    torch.manual_seed(0)
    model = build_model(ds.graph, cfg)
    genes, masks, target = _inputs(ds, batch)
    mse = torch.nn.functional.mse_loss
    out = {}

    def step(m, fwd):
        def run() -> None:
            m.zero_grad(set_to_none=True)
            mse(fwd(), target).backward()

        return run

    if "ours" in which:
        out["ours"] = step(model, lambda: model(genes, masks).pred)
    if "base" in which and base_pkg is not None:
        base = base_pkg.hetero_cell.build_model(ds.graph, cfg)
        base.load_state_dict(model.state_dict())
        out["base"] = step(base, lambda: base(genes, masks).pred)
    if "ref" in which:
        rb = build_reference_batch(ds.graph, masks)
        out["ref"] = step(model, lambda: reference_forward(model, ds.graph, genes, masks, batch=rb))
    return out


def _time(fns: dict, repeats: int) -> dict[str, float]:
    """Best seconds per closure; the closures run interleaved so load changes hit all alike."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: min(v) for k, v in times.items()} | {f"{k}_median": statistics.median(v) for k, v in times.items()}


def _demo(args: argparse.Namespace, base_pkg) -> None:
    from torchcell_search.config import ModelConfig

    ds = _load("demo")
    grid = _GRID[:2] if args.quick else _GRID
    print(f"\n1. demo graph, train step ms (best of {args.repeats}); ratios = speed-up of ours")
    print(f"   {'hidden layers heads pooling':44}{'batch':>6}{'ours':>9}{'base':>9}{'ref':>9}"
          f"{'base/ours':>11}{'ref/ours':>10}{'ours smp/s':>12}")
    ref32 = None
    for hidden, layers, heads, pooling, batch in grid:
        cfg = ModelConfig(embedding_channels=hidden, hidden_channels=hidden, num_layers=layers, heads=heads,
                          head_hidden_channels=hidden, pooling=pooling, use_roles=False)
        t = _time(_steps(ds, cfg, batch, ("ours", "base", "ref"), base_pkg), args.repeats)
        if batch == 32 and ref32 is None and pooling == "attentional":
            ref32 = batch / t["ref"]
        b = t.get("base", float("nan"))
        name = f"{hidden:>3} {layers:>2} {heads:>3}  {pooling}"
        print(f"   {name:44}{batch:>6}{t['ours'] * 1e3:9.1f}{b * 1e3:9.1f}{t['ref'] * 1e3:9.1f}"
              f"{b / t['ours']:10.2f}x{t['ref'] / t['ours']:9.2f}x{batch / t['ours']:12.0f}")

    cfg = ModelConfig(embedding_channels=16, hidden_channels=16, num_layers=2, kind="perturbation_set",
                      head_hidden_channels=16)
    t = _time(_steps(ds, cfg, args.set_batch, ("ours",), None), args.repeats)
    rate = args.set_batch / t["ours"]
    print(f"\n2. perturbation_set (16 wide, 2 layers), batch {args.set_batch}: {t['ours'] * 1e3:.1f} ms, "
          f"{rate:.0f} samples/s = {rate / ref32:.0f}x the reference layout's {ref32:.0f} samples/s "
          f"(16 wide, 2 layers, attentional, batch 32)")


def _measure(args: argparse.Namespace) -> dict:
    """One real-graph measurement (``args.only``) in this process."""
    from torchcell_search.config import ModelConfig

    torch.use_deterministic_algorithms(True, warn_only=True)
    ds = _load(args.real_data)
    h = args.real_hidden
    cfg = ModelConfig(embedding_channels=h, hidden_channels=h, num_layers=args.real_layers, heads=1,
                      head_hidden_channels=h, pooling="attentional", use_roles=False)
    base_pkg = _load_baseline(args.baseline) if args.only == "base" else None
    batch = args.real_ref_batch if args.only == "ref" else args.batch
    fn = _steps(ds, cfg, batch, (args.only,), base_pkg)[args.only]
    t = _time({"x": fn}, args.real_repeats)
    return {"step_s": t["x"], "batch": batch, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _child(args: argparse.Namespace, only: str) -> dict:
    cmd = [sys.executable, __file__, "--only", only, "--real-data", args.real_data, "--batch", str(args.batch),
           "--real-ref-batch", str(args.real_ref_batch), "--real-hidden", str(args.real_hidden),
           "--real-layers", str(args.real_layers), "--real-repeats", str(args.real_repeats),
           "--baseline", args.baseline, "--threads", str(args.threads)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        lines = res.stderr.strip().splitlines()
        return {"error": lines[-1] if lines else f"exit {res.returncode}"}
    return json.loads(res.stdout.strip().splitlines()[-1])


def _real(args: argparse.Namespace) -> None:
    print(f"\n3. real graph ({args.real_data}), {args.real_hidden} wide, {args.real_layers} layers, heads 1, "
          f"attentional pooling; one process each, best of {args.real_repeats}")
    rows = {"ours": _child(args, "ours")}
    if args.real_ref_batch:
        rows["ref"] = _child(args, "ref")
    if args.real_base:
        rows["base"] = _child(args, "base")
    print(f"   {'':8}{'batch':>6}{'step s':>9}{'samples/s':>11}{'peak RSS MB':>13}")
    for name, r in rows.items():
        if "error" in r:
            print(f"   {name:8} FAILED: {r['error']}")
            continue
        print(f"   {name:8}{r['batch']:>6}{r['step_s']:9.2f}{r['batch'] / r['step_s']:11.1f}{r['peak_rss_mb']:13.0f}")
    ours = rows["ours"]
    for name in ("ref", "base"):
        r = rows.get(name)
        if r and "error" not in r and "error" not in ours:
            gain = (ours["batch"] / ours["step_s"]) / (r["batch"] / r["step_s"])
            print(f"   ours / {name}: {gain:.1f}x samples/s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--set-batch", type=int, default=256)
    p.add_argument("--baseline", default=_BASELINE_REV, help="git revision of the baseline model files")
    p.add_argument("--quick", action="store_true", help="demo: the first two configs only")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--real-data", help="data directory of the real graph (section 3)")
    p.add_argument("--batch", type=int, default=32, help="real graph: batch of ours and the baseline")
    p.add_argument("--real-ref-batch", type=int, default=8, help="real graph: reference batch (0: skip)")
    p.add_argument("--real-hidden", type=int, default=16)
    p.add_argument("--real-layers", type=int, default=2)
    p.add_argument("--real-repeats", type=int, default=2)
    p.add_argument("--no-real-base", dest="real_base", action="store_false", help="real graph: skip the baseline")
    p.add_argument("--only", choices=["ours", "ref", "base"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.only:
        print(json.dumps(_measure(args)))
        return
    torch.use_deterministic_algorithms(True, warn_only=True)
    base_pkg = _load_baseline(args.baseline)
    print(f"deterministic=True threads={torch.get_num_threads()} device=cpu baseline={args.baseline}"
          f"{'' if base_pkg else ' (unavailable: no git)'}")
    _demo(args, base_pkg)
    if args.real_data:
        _real(args)


if __name__ == "__main__":
    main()
