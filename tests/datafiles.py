"""Test data writers: the real data mirror's location and tiny data directories in its formats.

The tiny directory follows the mirror's layout (``graph/``, ``costanzo2016/``) with a
handful of real ORF names, so every number in it can be checked by hand:

- SGD genes: YAL001C (TFC3), YAL002W (VPS8), YAL003W (EFB1), YAL005C (SSA1), YAL007C;
- physical: YAL001C-YAL002W (twice, once reversed), YAL002W-YAL003W, a YAL003W self loop,
  YAL001C-YBL005W-A (an ORF SGD's table lacks: added as a gene);
- regulatory: TFs ``TFC3`` (a standard name) and YAL005C; targets YAL002W, YAL003W and
  HRA1 (a non-coding RNA: unmapped);
- Yeast-GEM YAML: r1 ``YAL001C and YAL002W``, r2 ``YAL003W or YAL005C``, r3 without a
  rule, r4 ``(YAL001C and YAL003W) or YAL007C``; metabolites m1, m2, m3;
- essential: YAL003W;
- ε table (4 rows) and an SMF xlsx giving SMF 0.8 (YAL001C, mean of two strains at
  30°), 0.5 (YAL002W, 26° fallback), NaN (YAL003W), 1.0 (YAL005C), 0.95 (YAL007C).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pandas as pd

# ../shared/data beside the repository, unless TORCHCELL_SEARCH_TEST_DATA names the mirror elsewhere.
REAL_DATA_DIR = Path(os.environ.get("TORCHCELL_SEARCH_TEST_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")

TINY_GENES = ["YAL001C", "YAL002W", "YAL003W", "YAL005C", "YAL007C"]


def write_gz(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(text)
    return path


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


TINY_GEM_YAML = """\
---
!!omap
- metaData:
    id: "tiny"
- metabolites:
    - !!omap
      - id: "m1"
    - !!omap
      - id: "m2"
    - !!omap
      - id: "m3"
- reactions:
    - !!omap
      - id: "r1"
      - metabolites: !!omap
          - m1: -1
          - m2: 2
      - gene_reaction_rule: "YAL001C and YAL002W"
    - !!omap
      - id: "r2"
      - metabolites: !!omap
          - m2: -1
          - m3: 1
      - gene_reaction_rule: "YAL003W or YAL005C"
    - !!omap
      - id: "r3"
      - metabolites: !!omap
          - m3: -1
    - !!omap
      - id: "r4"
      - metabolites: !!omap
          - m1: 1
      - gene_reaction_rule: "(YAL001C and YAL003W) or YAL007C"
- genes:
    - !!omap
      - id: "YAL001C"
"""


def write_smf_xlsx(path: Path, rows: list[tuple] | None = None) -> Path:
    """The SMF xlsx in Costanzo's column layout."""
    nan = float("nan")
    rows = rows or [
        ("YAL001C_dma1", "YAL001C", "tfc3", 0.85, 0.01, 0.9, 0.02),
        ("YAL001C_tsq1", "YAL001C", "tfc3-1", 0.6, 0.01, 0.7, 0.04),
        ("YAL002W_dma2", "YAL002W", "vps8", 0.5, 0.05, nan, nan),
        ("YAL003W_tsq3", "YAL003W", "efb1-1", nan, nan, nan, nan),
        ("YAL005C_dma5", "YAL005C", "ssa1", 0.9, 0.01, 1.0, 0.01),
        ("YAL007C_dma7", "YAL007C", "erp2", 0.9, 0.01, 0.95, 0.01),
    ]
    cols = [
        "Strain ID", "Systematic gene name", "Allele/Gene name", "Single mutant fitness (26°)",
        "Single mutant fitness (26°) stddev", "Single mutant fitness (30°)", "Single mutant fitness (30°) stddev",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=cols).to_excel(path, index=False, engine="openpyxl")
    return path


def make_tiny_data_dir(root: Path) -> Path:
    """Write the tiny mirror-layout data directory described in this module's docstring."""
    g = root / "graph"
    write_text(g / "SGDgeneNames.tsv", "Systematic_name\tStandard_name\nYAL001C\tTFC3\nYAL002W\tVPS8\nYAL003W\tEFB1\nYAL005C\tSSA1\nYAL007C\t\n")
    write_gz(
        g / "biogrid_4.4.235_physical_orf.tsv.gz",
        "gene_a\tgene_b\nYAL001C\tYAL002W\nYAL002W\tYAL001C\nYAL002W\tYAL003W\nYAL003W\tYAL003W\nYAL001C\tYBL005W-A\n",
    )
    write_gz(
        g / "YEASTRACT_20190713_BOTH.tsv.gz",
        "SystematicName\tTFC3\tYAL005C\nYAL002W\t1\t0\nYAL003W\t1\t1\nHRA1\t1\t0\nYAL007C\t0\t0\n",
    )
    write_text(g / "yeast-GEM.yml", TINY_GEM_YAML)
    write_text(g / "inviable_orfs_yeast_deletion_project.txt", "YAL003W\n")
    c = root / "costanzo2016"
    write_gz(
        c / "nxn_metabolic_epsilon.tsv.gz",
        "query_orf\tarray_orf\tepsilon\nYAL001C\tYAL002W\t0.1\nYAL002W\tYAL001C\t-0.05\nYAL003W\tYAL005C\t0.2\nYAL007C\tYAL001C\t0.0\n",
    )
    write_smf_xlsx(c / "strain_ids_and_single_mutant_fitness.xlsx")
    return root


SGA_HEADER = (
    "Query Strain ID\tQuery allele name\tArray Strain ID\tArray allele name\tArraytype/Temp\t"
    "Genetic interaction score (ε)\tP-value\tQuery single mutant fitness (SMF)\tArray SMF\t"
    "Double mutant fitness\tDouble mutant fitness standard deviation\n"
)
#: Three official SGA rows: measured DMF; DMF empty (fitness derived: 0.2 + 0.6 * 1.0); measured.
SGA_ROWS = (
    "YAL001C_dma1\ttfc3\tYAL002W_dma2\tvps8\tDMA30\t0.1\t0.01\t0.8\t0.5\t0.52\t0.03\n"
    "YAL003W_tsq3\tefb1-1\tYAL005C_dma5\tssa1\tTSA30\t0.2\t0.2\t0.6\t1.0\t\t\n"
    "YAL007C_dma7\terp2\tYAL001C_tsq508\ttfc3-1\tDMA26\t-0.1\t0.5\t0.95\t0.8\t0.66\t0.02\n"
)

TAB3_HEADER = (
    "#BioGRID Interaction ID\tEntrez Gene Interactor A\tEntrez Gene Interactor B\t"
    "Systematic Name Interactor A\tSystematic Name Interactor B\tOfficial Symbol Interactor A\t"
    "Official Symbol Interactor B\tExperimental System\tExperimental System Type\t"
    "Organism ID Interactor A\tOrganism ID Interactor B\n"
)
#: Kept: 1 (physical), 3 ('-' systematic name falls back to the symbol VPS8), 5 (duplicate of 1,
#: reversed). Dropped: 2 (genetic), 4 (a human interactor).
TAB3_ROWS = (
    "1\t1\t2\tYAL001C\tYAL002W\tTFC3\tVPS8\tAffinity Capture-MS\tphysical\t559292\t559292\n"
    "2\t1\t2\tYAL002W\tYAL003W\tVPS8\tEFB1\tSynthetic Lethality\tgenetic\t559292\t559292\n"
    "3\t1\t2\t-\tYAL003W\tVPS8\tEFB1\tTwo-hybrid\tphysical\t559292\t559292\n"
    "4\t1\t2\tYAL001C\t-\tTFC3\tTP53\tTwo-hybrid\tphysical\t559292\t9606\n"
    "5\t1\t2\tYAL002W\tYAL001C\tVPS8\tTFC3\tReconstituted Complex\tphysical\t559292\t559292\n"
)

TINY_REACTIONS = [
    ("r1", {"m1": -1.0, "m2": 2.0}, "YAL001C and YAL002W"),
    ("r2", {"m2": -1.0, "m3": 1.0}, "YAL003W or YAL005C"),
    ("r3", {"m3": -1.0}, ""),
    ("r4", {"m1": 1.0}, "(YAL001C and YAL003W) or YAL007C"),
]


def write_tiny_sbml(path: Path) -> Path:
    """The tiny model of ``TINY_GEM_YAML`` as SBML written by cobrapy (gzipped for ``.gz``)."""
    import cobra

    model = cobra.Model("tiny")
    mets = {m: cobra.Metabolite(m, compartment="c") for m in ("m1", "m2", "m3")}
    for rid, stoich, rule in TINY_REACTIONS:
        r = cobra.Reaction(rid)
        model.add_reactions([r])
        r.add_metabolites({mets[k]: v for k, v in stoich.items()})
        r.gene_reaction_rule = rule
    path.parent.mkdir(parents=True, exist_ok=True)
    xml = path.with_name(path.name.removesuffix(".gz"))
    cobra.io.write_sbml_model(model, str(xml))
    if path.name.endswith(".gz"):
        with open(xml, "rb") as f, gzip.open(path, "wb") as out:
            out.write(f.read())
        xml.unlink()
    return path


def make_official_data_dir(root: Path) -> Path:
    """A tiny directory of official-format files placed directly in ``root``.

    Same SGD names, YEASTRACT matrix and essential list as the tiny mirror; an SGA file,
    a BioGRID tab3 file and SBML instead of the mirror's formats.
    """
    mirror = make_tiny_data_dir(root / "_mirror")
    root.mkdir(parents=True, exist_ok=True)
    for name in ("SGDgeneNames.tsv", "YEASTRACT_20190713_BOTH.tsv.gz", "inviable_orfs_yeast_deletion_project.txt"):
        (root / name).write_bytes((mirror / "graph" / name).read_bytes())
    import shutil

    shutil.rmtree(mirror)
    write_text(root / "SGA_NxN.txt", SGA_HEADER + SGA_ROWS)
    write_text(root / "BIOGRID-ORGANISM-Saccharomyces_cerevisiae_S288c-4.4.235.tab3.txt", TAB3_HEADER + TAB3_ROWS)
    write_tiny_sbml(root / "yeast-GEM.xml")
    return root
