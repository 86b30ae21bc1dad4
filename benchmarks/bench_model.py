"""Train-step throughput of HeteroCell: this tree vs the baseline commit vs the report's layout.

All timings are one train step (forward + backward of an MSE loss) under
``torch.use_deterministic_algorithms(True, warn_only=True)`` with
``torch.utils.deterministic.fill_uninitialized_memory = False``, as the trainer runs it
(with the fill on, every new tensor is NaN-filled first: ~a quarter of a real-graph step).
One command prints, side by side with ratios:

1. **demo graph** (300 genes, 2,830 directed physical edges), a grid of search configs:
   this tree's batched layout (``ours``), the same layout at the baseline commit
   (``base``, the model files read with ``git show REV:...`` and loaded in this process,
   same weights), and the report's layout (``ref``: :func:`reference_forward` on a PyG
   ``Batch`` of perturbed subgraphs, this tree's layers; its subgraph/collate time is
   excluded). The three run interleaved in one process, best of ``--repeats``.
2. **perturbation_set** at ``--set-batch`` vs the reference layout's samples/s.
3. **real graph** (``--real-data DIR``): the report's configurations (16 wide, 2 layers; 64
   wide, 3 layers with heads 1, 5, 10; attentional and sorted-set-transformer pooling), one
   process per row in which ours (at ``--batch``) and the reference (at ``--real-ref-batch``)
   alternate step by step: median samples/s and the spread (slowest-fastest step) of each, the
   ratio of the medians, the peak memory during each one's steps (RSS on CPU, allocated on
   CUDA) and a roofline: the work of one sample (flops and bytes from the graph's edge
   counts and widths, see ``_roofline``) over this core's sgemm and copy rates measured in
   the same command. A row that runs out of memory says so, with the figure. ``--device
   cuda`` runs the same rows on a GPU.

Usage::

    python benchmarks/bench_model.py --threads 1 --no-demo --real-data ../shared/data
    python benchmarks/bench_model.py --quick          # demo, two configs only
"""

from __future__ import annotations

import argparse
import dataclasses
import json
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


# The report's configurations on the real graph: (hidden, layers, heads, pooling).
_REAL_ROWS = [
    (16, 2, 1, "attentional"),
    (64, 3, 1, "attentional"),
    (64, 3, 1, "sorted_set_transformer"),
    (64, 3, 5, "attentional"),
    (64, 3, 5, "sorted_set_transformer"),
    (64, 3, 10, "attentional"),
    (64, 3, 10, "sorted_set_transformer"),
]


def _rss_mb(pid: str = "self") -> tuple[float, float]:
    """(current, peak) resident set of a process in MB, from /proc (Linux)."""
    got = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                got[line[:5]] = int(line.split()[1]) / 1024
    return got.get("VmRSS", float("nan")), got.get("VmHWM", float("nan"))


def _reset_peak() -> None:
    """Reset this process's peak RSS to its current RSS (Linux ``clear_refs`` 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _deterministic() -> None:
    """Deterministic kernels as the trainer sets them (``search/trainer.py``): no NaN fill of new tensors."""
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False


def _measure_row(args: argparse.Namespace) -> dict:
    """One real-graph row in this process: ours and the reference alternate, step by step."""
    from torchcell_search.config import ModelConfig
    from torchcell_search.model import build_model
    from torchcell_search.model.reference import build_reference_batch, reference_forward

    _deterministic()
    device = torch.device(args.device)
    hidden, layers, heads, pooling = args.row.split(",")
    h = int(hidden)
    cfg = ModelConfig(embedding_channels=h, hidden_channels=h, num_layers=int(layers), heads=int(heads),
                      head_hidden_channels=h, pooling=pooling, use_roles=False)
    ds = _load(args.real_data)
    torch.manual_seed(0)
    model = build_model(ds.graph, cfg).to(device)
    mse = torch.nn.functional.mse_loss
    batches = {"ours": args.batch, "ref": args.real_ref_batch, "before": args.batch if args.before else 0}
    models = {"ours": model, "ref": model}
    if args.before:  # the model files at that revision, same weights
        models["before"] = _load_baseline(args.before).hetero_cell.build_model(ds.graph, cfg).to(device)
        models["before"].load_state_dict(model.state_dict())
    fns = {}
    for name, b in batches.items():
        if not b:
            continue
        genes, masks, target = _inputs(ds, b)
        if name != "ref":
            masks, g_dev, t_dev = masks.to(device), genes.to(device), target.to(device)
            fwd = (lambda mod, g, m: lambda: mod(g, m).pred)(models[name], g_dev, masks)
        else:
            rb = build_reference_batch(ds.graph, masks).to(device)  # collation not timed
            t_dev = target.to(device)
            fwd = (lambda g, m, rb: lambda: reference_forward(model, ds.graph, g, m, batch=rb))(genes, masks, rb)

        def run(fwd=fwd, t_dev=t_dev, mod=models[name]) -> None:
            mod.zero_grad(set_to_none=True)
            mse(fwd(), t_dev).backward()

        fns[name] = run
    times: dict[str, list[float]] = {k: [] for k in fns}
    peaks: dict[str, float] = {k: 0.0 for k in fns}
    errors: dict[str, str] = {}
    for rep in range(args.real_repeats + 1):  # the first round warms up and is not timed
        for name, fn in fns.items():
            if name in errors:
                continue
            _reset_peak()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            try:
                _sync(device)
                t = time.perf_counter()
                fn()
                _sync(device)
                dt = time.perf_counter() - t
            except (RuntimeError, MemoryError) as e:  # out of memory: say what stopped it
                msg = str(e).strip().splitlines()[0][:200]
                errors[name] = f"{msg} (RSS {_rss_mb()[1]:.0f} MB at failure)"
                continue
            peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else _rss_mb()[1]
            peaks[name] = max(peaks[name], peak)
            if rep:
                times[name].append(dt)
            print(f"# {args.row} {name} rep {rep}: {dt:.2f} s", file=sys.stderr, flush=True)
    out = {"row": args.row, "device": str(device)}
    for name in fns:
        if name in errors:
            out[name] = {"error": errors[name], "batch": batches[name]}
        else:
            v = times[name]
            out[name] = {"batch": batches[name], "median_s": statistics.median(v), "min_s": min(v), "max_s": max(v),
                         "peak_mb": peaks[name]}
    return out


def _peaks(device: torch.device) -> dict[str, float]:
    """The device's measured limits: float32 matmul GFLOP/s and copy bandwidth GB/s (best of 3)."""
    n, mb = (1024, 64) if device.type == "cpu" else (8192, 1024)
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    x = torch.empty(mb * 2**20 // 4, device=device)
    y = torch.empty_like(x)
    best_f = best_b = 0.0
    for _ in range(3):
        _sync(device)
        t = time.perf_counter()
        for _ in range(4):
            torch.mm(a, b)
        _sync(device)
        best_f = max(best_f, 4 * 2 * n**3 / (time.perf_counter() - t) / 1e9)
        t = time.perf_counter()
        for _ in range(4):
            y.copy_(x)
        _sync(device)
        best_b = max(best_b, 4 * 2 * x.numel() * 4 / (time.perf_counter() - t) / 1e9)
    return {"gflops": best_f, "gbps": best_b}


def _roofline(ds, hidden: int, layers: int, heads: int) -> dict[str, float]:
    """Work of one perturbed graph's train step (forward + backward), the wildtype pass not counted.

    Edges: every gene-gene edge of both relations plus one self loop per gene (the GATv2
    convs' graph). Per edge and channel of a layer (``heads * (hidden // heads)`` channels):
    forward 6 flops (add, LeakyReLU, score multiply-add, message multiply-add), backward 14
    (recomputed sum, LeakyReLU', dalpha, d score, d att, dx_src, dx_dst), so 20; per edge and
    head 10 more for the softmax. Node level: per layer and relation the two GATv2 linears,
    x 3 for forward + both backward products. Bytes: per edge and layer the source row read
    in forward and backward, the destination-gradient row read and the source-gradient row
    written, 4 rows of 4-byte floats (a kernel that keeps no edge tensor, rows not cached).
    """
    from torchcell_search.data.types import PHYSICAL, REGULATORY

    n = ds.graph.num_genes
    edges = 0
    for t in (PHYSICAL, REGULATORY):
        ei = ds.graph.data[t].edge_index
        edges += int((ei[0] != ei[1]).sum()) + n
    width = heads * (hidden // heads)
    flops = layers * (edges * (20 * width + 10 * heads) + 2 * 2 * n * 3 * 2 * hidden * width)
    bytes_ = layers * edges * 4 * width * 4
    return {"edges": edges, "gflop": flops / 1e9, "gbyte": bytes_ / 1e9}


def _layer(args: argparse.Namespace, ds) -> None:
    """One GATv2 conv on the real physical graph (64 wide, heads 1), forward + backward:
    this tree's BatchedGATv2Conv (one slot, no mask: what the reference layout runs per
    sample) against PyG's GATv2Conv with the same weights (what the research code runs)."""
    from torch_geometric.nn import GATv2Conv

    from torchcell_search.data.types import PHYSICAL
    from torchcell_search.model.layers import BatchedGATv2Conv, EdgePlan

    device = torch.device(args.device)
    torch.manual_seed(0)
    ei = ds.graph.data[PHYSICAL].edge_index.to(device)
    n = ds.graph.num_genes
    ours = BatchedGATv2Conv(64, 64).to(device)
    pyg = GATv2Conv(64, 64).to(device)
    with torch.no_grad():
        for a, b in ((pyg.lin_l, ours.lin_l), (pyg.lin_r, ours.lin_r)):
            a.weight.copy_(b.weight)
            a.bias.copy_(b.bias)
        pyg.att.copy_(ours.att.view_as(pyg.att))
        pyg.bias.copy_(ours.bias)
    plan = EdgePlan(ei, n, n, self_loops=True)
    x = torch.randn(n, 64, device=device, requires_grad=True)
    fns = {
        "ours": lambda: ours(x.unsqueeze(1), None, ei, plan=plan)[:, 0].square().sum().backward(),
        "pyg": lambda: pyg(x, ei).square().sum().backward(),
    }
    t = _time(fns, max(3, args.real_repeats))
    same = torch.allclose(ours(x.unsqueeze(1), None, ei, plan=plan)[:, 0], pyg(x, ei), atol=1e-4)
    print(f"\n4. one GATv2 conv, real physical graph ({ei.size(1):,} edges + self loops), 64 wide, forward + backward, "
          f"median of {max(3, args.real_repeats)}: this tree's {t['ours_median'] * 1e3:.0f} ms, PyG GATv2Conv "
          f"{t['pyg_median'] * 1e3:.0f} ms ({t['pyg_median'] / t['ours_median']:.1f}x); same output: {same}")


def _child(args: argparse.Namespace, row: str) -> dict:
    """Run one row in a fresh process; if it dies (killed for memory), report its last RSS."""
    cmd = [sys.executable, __file__, "--row", row, "--real-data", args.real_data, "--batch", str(args.batch),
           "--real-ref-batch", str(args.real_ref_batch), "--real-repeats", str(args.real_repeats),
           "--threads", str(args.threads), "--device", args.device] + (["--before", args.before] if args.before else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last_rss = 0.0
    while proc.poll() is None:
        try:
            last_rss = max(last_rss, _rss_mb(str(proc.pid))[1])
        except OSError:
            pass
        time.sleep(0.5)
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        lines = stderr.strip().splitlines()
        why = lines[-1] if lines and proc.returncode > 0 else f"killed by signal {-proc.returncode}"
        return {"row": row, "error": f"{why} (peak RSS {last_rss:.0f} MB)"}
    return json.loads(stdout.strip().splitlines()[-1])


def _real(args: argparse.Namespace) -> None:
    ds = _load(args.real_data)
    peaks = _peaks(torch.device(args.device))
    rows = [r for r in _REAL_ROWS if not args.real_rows or ",".join(map(str, r)) in args.real_rows]
    print(f"\n3. real graph ({args.real_data}), train step, device {args.device}: ours at batch {args.batch}, "
          f"reference (PyG Batch of perturbed graphs, collation not timed) at batch {args.real_ref_batch}; "
          f"{args.real_repeats} timed steps each after a warm-up, alternating in one process per row")
    if peaks:
        print(f"   this {'core' if args.device == 'cpu' else 'device'}'s limits (same command): float32 matmul "
              f"{peaks['gflops']:.0f} GFLOP/s, copy {peaks['gbps']:.1f} GB/s")
    mem = "peak MB" + (" (RSS)" if args.device == "cpu" else " (GPU)")
    names = ("ours", "ref", "before") if args.before else ("ours", "ref")
    if args.before:
        print(f"   before = the model files at {args.before}, same weights and batch as ours, in the same process")
    print(f"   {'hidden layers heads pooling':38}" + "".join(f"{k + ' smp/s (min-max)':>24}" for k in names)
          + f"{'ratio':>7}" + (f"{'/before':>8}" if args.before else "")
          + f"{mem:>20}{'roofline smp/s':>16}{'ours/roof':>10}")
    for hidden, layers, heads, pooling in rows:
        row = f"{hidden},{layers},{heads},{pooling}"
        r = _child(args, row)
        name = f"{hidden:>3} {layers:>2} {heads:>3}  {pooling}"
        roof = _roofline(ds, hidden, layers, heads)
        if "error" in r:
            print(f"   {name:38} FAILED: {r['error']}")
            continue
        cells, rates = [], {}
        for k in names:
            m = r.get(k)
            if m is None:
                cells.append(f"{'-':>24}")
            elif "error" in m:
                cells.append(f"{'FAILED':>24}")
            else:
                rates[k] = m["batch"] / m["median_s"]
                spread = f"({m['batch'] / m['max_s']:.2f}-{m['batch'] / m['min_s']:.2f})"
                cells.append(f"{rates[k]:>10.2f} {spread:>13}")
        ratio = f"{rates['ours'] / rates['ref']:6.1f}x" if {"ours", "ref"} <= set(rates) else f"{'-':>7}"
        if args.before:
            ratio += f"{rates['ours'] / rates['before']:7.1f}x" if {"ours", "before"} <= set(rates) else f"{'-':>8}"
        pk = "/".join(f"{r[k]['peak_mb']:.0f}" if k in r and "error" not in r[k] else "-" for k in names)
        if peaks:
            limit = 1.0 / max(roof["gflop"] / peaks["gflops"], roof["gbyte"] / peaks["gbps"])
            roofs = f"{limit:16.1f}" + (f"{rates['ours'] / limit:10.2f}" if "ours" in rates else f"{'-':>10}")
        else:
            roofs = f"{'-':>16}{'-':>10}"
        print(f"   {name:38}{''.join(cells)}{ratio}{pk:>20}{roofs}")
        for k in names:
            if k in r and "error" in r[k]:
                print(f"      {k} at batch {r[k]['batch']} FAILED: {r[k]['error']}")
        print(f"      work per sample: {roof['edges']:,} edges, {roof['gflop']:.2f} GFLOP, {roof['gbyte']:.2f} GB"
              f" (peak MB: {'/'.join(names)})", flush=True)
    _layer(args, ds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--set-batch", type=int, default=256)
    p.add_argument("--baseline", default=_BASELINE_REV, help="git revision of the baseline model files")
    p.add_argument("--quick", action="store_true", help="demo: the first two configs only")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--real-data", help="data directory of the real graph (section 3)")
    p.add_argument("--batch", type=int, default=32, help="real graph: batch of ours")
    p.add_argument("--real-ref-batch", type=int, default=8, help="real graph: reference batch (0: skip)")
    p.add_argument("--real-repeats", type=int, default=3, help="real graph: timed steps of each")
    p.add_argument("--real-rows", nargs="*", help="real graph: only these rows, e.g. 64,3,1,attentional")
    p.add_argument("--device", default="cpu", help="real graph: cpu or cuda[:i]")
    p.add_argument("--before", help="real graph: also run the model files at this git revision (same process)")
    p.add_argument("--no-demo", dest="demo", action="store_false", help="skip sections 1 and 2")
    p.add_argument("--row", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.row:
        print(json.dumps(_measure_row(args)))
        return
    _deterministic()
    base_pkg = _load_baseline(args.baseline)
    print(f"deterministic=True fill_uninitialized_memory=False threads={torch.get_num_threads()} device=cpu baseline={args.baseline}"
          f"{'' if base_pkg else ' (unavailable: no git)'}")
    if args.demo:
        _demo(args, base_pkg)
    if args.real_data:
        _real(args)


if __name__ == "__main__":
    main()
