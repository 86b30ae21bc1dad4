"""Train-step throughput and peak memory: batched HeteroCell vs the report's layout.

Prints, from one run, side by side:

- hetero_cell train step (forward + backward, MSE) samples/s, batched vs reference
  (PyG ``Batch`` of perturbed subgraphs; its subgraph/collate time is shown apart and
  included in its end-to-end figure);
- the gain per layer type (forward + backward of one conv of each relation);
- perturbation_set at ``--set-batch`` vs the reference;
- peak resident memory of each measurement (each runs in its own process, so
  ``ru_maxrss`` is that measurement's peak).

Usage::

    python benchmarks/bench_model.py --data demo --batch 32 --repeats 3
    python benchmarks/bench_model.py --data ../shared/data --batch 8 --pooling attentional
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import time

import torch


def _load(data: str):
    try:
        from torchcell_search.data.dataset import load_dataset
    except ImportError:
        load_dataset = None
    if load_dataset is not None:
        return load_dataset(data)
    if data != "demo":
        raise SystemExit("real data needs torchcell_search.data.dataset.load_dataset")
    from torchcell_search.data.demo import make_demo_dataset

    return make_demo_dataset()


def _masks(graph, genes):
    try:
        from torchcell_search.data.masks import MaskBuilder
    except ImportError:
        from torchcell_search.model.reference import reference_masks

        return reference_masks(graph, genes)
    return MaskBuilder(graph).masks(genes)


def _time(fn, repeats: int) -> float:
    """Best of ``repeats`` calls after a warm-up: the shared CPU makes means noisy."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _measure(args: argparse.Namespace) -> dict:
    """One measurement (``args.only``) in this process."""
    from torchcell_search.config import ModelConfig
    from torchcell_search.model import build_model
    from torchcell_search.model.hetero_cell import _Keeps
    from torchcell_search.model.reference import build_reference_batch, reference_forward

    torch.manual_seed(0)
    ds = _load(args.data)
    graph = ds.graph
    cfg = ModelConfig(pooling=args.pooling, num_layers=args.layers)
    B = args.set_batch if args.only == "set" else args.batch
    genes = ds.table.genes[torch.randperm(len(ds.table))[:B]]
    masks = _masks(graph, genes)
    target = torch.randn(B, 2)
    out: dict = {}
    if args.only == "fast":
        model = build_model(graph, cfg)

        def step() -> None:
            model.zero_grad(set_to_none=True)
            torch.nn.functional.mse_loss(model(genes, masks).pred, target).backward()

        out["step_s"] = _time(step, args.repeats)
    elif args.only == "reference":
        model = build_model(graph, cfg)
        t = time.perf_counter()
        batch = build_reference_batch(graph, masks)
        out["collate_s"] = time.perf_counter() - t

        def step() -> None:
            model.zero_grad(set_to_none=True)
            torch.nn.functional.mse_loss(reference_forward(model, graph, genes, masks, batch=batch), target).backward()

        out["step_s"] = _time(step, args.repeats)
    elif args.only == "set":
        model = build_model(graph, dataclasses.replace(cfg, kind="perturbation_set"))

        def step() -> None:
            model.zero_grad(set_to_none=True)
            torch.nn.functional.mse_loss(model(genes, masks).pred, target).backward()

        out["step_s"] = _time(step, args.repeats)
    elif args.only == "layers":
        model = build_model(graph, cfg)
        keeps = model._keeps(masks)
        batch = build_reference_batch(graph, masks)
        layer, H = model.convs[1], cfg.hidden_channels  # a hidden layer: H -> H everywhere
        n = {"gene": graph.num_genes, "reaction": graph.num_reactions, "metabolite": graph.num_metabolites}
        bn = {t: int(batch[t].num_nodes) for t in n}
        S = B + 1
        from torchcell_search.model.reference import _GPR, _STOICH
        from torchcell_search.data.types import PHYSICAL, REGULATORY

        def fast_args(rel):
            x = {t: torch.randn(n[t], S, H, requires_grad=True) for t in n}
            if rel in ("physical", "regulatory"):
                return (x["gene"], None, getattr(model, f"{rel}_index"), getattr(keeps, rel)), keeps.gene
            if rel == "gpr":
                return (x["gene"], x["reaction"], model.gpr_index, keeps.gpr), keeps.reaction
            return (
                x["metabolite"], x["reaction"], model.metabolism_index, model.stoichiometry, keeps.metabolism,
                n["reaction"],
            ), keeps.metabolite

        def ref_args(rel):
            x = {t: torch.randn(bn[t], 1, H, requires_grad=True) for t in n}
            if rel in ("physical", "regulatory"):
                t = PHYSICAL if rel == "physical" else REGULATORY
                return (x["gene"], None, batch[t].edge_index, None), None
            if rel == "gpr":
                return (x["gene"], x["reaction"], batch[_GPR].edge_index, None), None
            return (
                x["metabolite"], x["reaction"], batch[_STOICH].edge_index, batch[_STOICH].stoichiometry, None,
                bn["reaction"],
            ), None

        for rel in ("physical", "regulatory", "gpr", "metabolism"):
            for name, make in (("fast", fast_args), ("reference", ref_args)):
                a, k = make(rel)
                out[f"{rel}/{name}_s"] = _time(lambda: layer[rel](*a, node_keep=k).sum().backward(), args.repeats)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["batch"] = B
    return out


def _child(args: argparse.Namespace, only: str) -> dict:
    cmd = [sys.executable, __file__, "--data", args.data, "--batch", str(args.batch), "--repeats", str(args.repeats),
           "--set-batch", str(args.set_batch), "--pooling", args.pooling, "--layers", str(args.layers), "--only", only]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        return {"error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"exit {res.returncode}"}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="demo", help="'demo' or a data directory")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--set-batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--pooling", default="sorted_set_transformer")
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--only", choices=["fast", "reference", "set", "layers"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.only:
        print(json.dumps(_measure(args)))
        return

    print(f"data={args.data} pooling={args.pooling} layers={args.layers} repeats={args.repeats} "
          f"threads={torch.get_num_threads()} device=cpu")
    fast, ref, st, lay = (_child(args, k) for k in ("fast", "reference", "set", "layers"))
    for name, r in (("fast", fast), ("reference", ref), ("set", st), ("layers", lay)):
        if "error" in r:
            print(f"{name}: FAILED: {r['error']}")
    if "error" not in fast and "error" not in ref:
        B = args.batch
        ref_e2e = ref["step_s"] + ref["collate_s"]
        print(f"\nhetero_cell train step, batch {B}:")
        print(f"  {'':28}{'samples/s':>12}{'peak RSS MB':>14}")
        print(f"  {'batched (ours)':28}{B / fast['step_s']:12.1f}{fast['peak_rss_mb']:14.0f}")
        print(f"  {'reference, step only':28}{B / ref['step_s']:12.1f}{ref['peak_rss_mb']:14.0f}")
        print(f"  {'reference, + subgraph/collate':28}{B / ref_e2e:12.1f}")
        print(f"  speed-up: {ref['step_s'] / fast['step_s']:.2f}x (step only), {ref_e2e / fast['step_s']:.2f}x (end to end)")
    if "error" not in lay:
        print("\nper layer type (forward + backward of one conv):")
        for rel in ("physical", "regulatory", "gpr", "metabolism"):
            f, r = lay[f"{rel}/fast_s"], lay[f"{rel}/reference_s"]
            print(f"  {rel:12} batched {f * 1e3:9.2f} ms  reference {r * 1e3:9.2f} ms  gain {r / f:6.2f}x")
    if "error" not in st and "error" not in ref:
        ref_e2e = ref["step_s"] + ref["collate_s"]
        s_rate, r_rate = st["batch"] / st["step_s"], args.batch / ref_e2e
        print(f"\nperturbation_set train step, batch {st['batch']}: {s_rate:.1f} samples/s, peak {st['peak_rss_mb']:.0f} MB; "
              f"reference hetero_cell {r_rate:.1f} samples/s -> {s_rate / r_rate:.1f}x")


if __name__ == "__main__":
    main()
