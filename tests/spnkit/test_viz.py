"""Drawing (spnkit.viz, ``spnkit draw``) and the layer summary (spnkit.summary)."""

from __future__ import annotations

import math
import shutil
import xml.etree.ElementTree as ET
from collections import Counter

import pytest
import torch

import spnkit
from spnkit.cli import main
from spnkit.viz import circuit_node_counts, draw, region_coverage, region_graph_dot, region_level_graph

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
SVG = "{http://www.w3.org/2000/svg}"

# (num_vars, depth, repetitions, num_leaves, num_sums, num_classes)
RANDOM = [(16, 2, 2, 2, 2, 1), (13, 3, 3, 3, 2, 2), (8, 1, 1, 2, 3, 1), (10, 2, 1, 1, 2, 3)]


@pytest.fixture(autouse=True)
def _float64_seeded():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(old)


def _random_spn(num_vars, depth, reps, k_leaf, k_sum, classes, leaf=None):
    rg = spnkit.RegionGraph.random(num_vars, depth, reps, seed=1)
    return spnkit.SPN(rg, leaf=leaf or spnkit.Normal(), num_sums=k_sum, num_leaves=k_leaf, num_classes=classes)


def _expected_random(num_vars, depth, reps, k_leaf, k_sum, classes):
    """Node counts of a RAT-SPN random structure and its circuit, from the construction's formula."""
    leaf_regions = reps * 2**depth
    partitions = reps * (2**depth - 1)
    inner = reps * (2**depth - 2)  # inner regions other than the root
    return {
        "regions": 1 + reps * (2 ** (depth + 1) - 2),
        "partitions": partitions,
        "leaf_regions": leaf_regions,
        "leaf": leaf_regions * k_leaf,
        "sum": inner * k_sum + classes + (reps * classes if reps > 1 else 0),  # root mixes one sum per partition
        "product": reps * 2 ** (depth - 1) * k_leaf**2 + reps * (2 ** (depth - 1) - 1) * k_sum**2,
    }


def _svg_nodes(path) -> int:
    root = ET.parse(path).getroot()
    return sum(1 for g in root.iter(f"{SVG}g") if g.get("class") == "node")


# ---------------------------------------------------------------- networkx
@pytest.mark.parametrize("case", RANDOM)
def test_region_graph_networkx_counts(case):
    exp = _expected_random(*case)
    g = spnkit.RegionGraph.random(*case[:3], seed=1).to_networkx()
    kinds = Counter(a["kind"] for _, a in g.nodes(data=True))
    assert kinds == {"region": exp["regions"], "partition": exp["partitions"]}
    assert sum(a["leaf"] for _, a in g.nodes(data=True) if a["kind"] == "region") == exp["leaf_regions"]
    assert g.number_of_edges() == 3 * exp["partitions"]  # parent -> partition -> two children


@pytest.mark.parametrize("case", RANDOM)
def test_circuit_networkx_counts(case):
    exp = _expected_random(*case)
    spn = _random_spn(*case)
    kinds = Counter(a["kind"] for _, a in spn.to_networkx().nodes(data=True))
    want = {k: exp[k] for k in ("leaf", "sum", "product")}
    assert kinds == want
    assert circuit_node_counts(spn) == want


@pytest.mark.parametrize("case", RANDOM)
def test_region_level_graph(case):
    exp = _expected_random(*case)
    spn = _random_spn(*case)
    g = region_level_graph(spn)
    regions = [a for _, a in g.nodes(data=True) if a["kind"] == "region"]
    parts = [a for _, a in g.nodes(data=True) if a["kind"] == "partition"]
    assert (len(regions), len(parts)) == (exp["regions"], exp["partitions"])
    roles = Counter(a["role"] for a in regions)
    assert roles == Counter({"root": 1, "leaf": exp["leaf_regions"], "sum": exp["regions"] - 1 - exp["leaf_regions"]})
    assert sum(a["products"] for a in parts) == exp["product"]
    assert sum(a["params"] for a in regions) == spn.summary().total_params
    for node, a in g.nodes(data=True):
        if a["kind"] == "partition":  # K sums over K_a * K_b products each
            assert a["weights"] == a["products"] * g.nodes[next(iter(g.predecessors(node)))]["K"]
        elif a["role"] != "leaf":  # a region's params: its partitions' weights, plus one mixing weight per partition and sum
            ps = list(g.successors(node))
            mixing = len(ps) * a["K"] if len(ps) > 1 else 0
            assert a["params"] == sum(g.nodes[p]["weights"] for p in ps) + mixing


def test_region_coverage_counts_pixels():
    rg = spnkit.RegionGraph.poon_domingos(6, 10, delta=(2, 3), channels=2)
    cover = region_coverage(rg, max_cells=4)  # 6x10 -> blocks of 3x3 pixels, 2 x 4 cells
    assert cover.shape == (len(rg.regions), 2, 4)
    block = torch.tensor([[9, 9, 9, 3], [9, 9, 9, 3]], dtype=torch.float64).numpy()
    covered_pixels = (cover * block).reshape(len(rg.regions), -1).sum(1)
    assert covered_pixels == pytest.approx([len(s) / 2 for s in rg.regions])


# --------------------------------------------------------------------- SVG
@needs_dot
@pytest.mark.parametrize("case", RANDOM[:2])
def test_region_graph_svg_has_one_element_per_node(case, tmp_path):
    exp = _expected_random(*case)
    rg = spnkit.RegionGraph.random(*case[:3], seed=1)
    res = draw(rg, tmp_path / "rg.svg")
    assert not res.fallback and res.files == (tmp_path / "rg.svg",)
    assert _svg_nodes(res.files[0]) == exp["regions"] + exp["partitions"]


@needs_dot
def test_image_region_graph_svg_with_thumbnails(tmp_path):
    rg = spnkit.RegionGraph.poon_domingos(4, 6, delta=2)
    assert "BGCOLOR" in region_graph_dot(rg)  # thumbnails on by default for images
    assert "BGCOLOR" not in region_graph_dot(rg, thumbnails=False)
    draw(rg, tmp_path / "pd.svg")
    assert _svg_nodes(tmp_path / "pd.svg") == len(rg.regions) + len(rg.partitions)


@needs_dot
@pytest.mark.parametrize("level", ["node", "region"])
def test_circuit_svg_levels(level, tmp_path):
    case = RANDOM[0]
    exp = _expected_random(*case)
    spn = _random_spn(*case)
    res = draw(spn, tmp_path / "spn.svg", level=level)
    assert res.level == level
    want = exp["leaf"] + exp["sum"] + exp["product"] if level == "node" else exp["regions"] + exp["partitions"]
    assert _svg_nodes(tmp_path / "spn.svg") == want


def test_auto_level_follows_node_limit(tmp_path):
    spn = _random_spn(*RANDOM[0])
    n = sum(circuit_node_counts(spn).values())
    assert draw(spn, tmp_path / "a.dot", node_limit=n).level == "node"
    assert draw(spn, tmp_path / "b.dot", node_limit=n - 1).level == "region"
    src = (tmp_path / "b.dot").read_text()
    assert src.startswith("digraph circuit_regions") and "params" in src


def test_draw_rejects_bad_input(tmp_path):
    rg = spnkit.RegionGraph.random(16, 2, 2)
    with pytest.raises(ValueError, match="suffix"):
        draw(rg, tmp_path / "x.jpg")
    with pytest.raises(ValueError, match="max_nodes"):
        draw(rg, tmp_path / "x.dot", max_nodes=5)
    with pytest.raises(ValueError, match="image_shape"):
        draw(rg, tmp_path / "x.dot", thumbnails=True)
    with pytest.raises(ValueError, match="level"):
        draw(_random_spn(*RANDOM[0]), tmp_path / "x.dot", level="layers")


# ---------------------------------------------------------------- fallback
def test_fallback_without_dot(tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    out = tmp_path / "spn.svg"
    rc = main(["draw", "random", "--num-vars", "8", "--depth", "2", "--circuit", "-o", str(out)])
    assert rc == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "`dot`" in lines[0] and "not found" in lines[0]
    assert "Traceback" not in err
    assert ET.parse(out).getroot().tag == f"{SVG}svg"  # matplotlib's SVG
    assert (tmp_path / "spn.dot").read_text().startswith("digraph circuit_nodes")


def test_fallback_library_result(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    res = draw(spnkit.RegionGraph.quad_tree(4, 4), tmp_path / "qt.png")
    assert res.fallback and "dot" in res.message
    assert (tmp_path / "qt.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "qt.dot").exists()


# --------------------------------------------------------------------- CLI
@needs_dot
@pytest.mark.parametrize(
    "argv, nodes",
    [
        (["random", "--num-vars", "16", "--depth", "2", "--repetitions", "2"], 13 + 6),
        (["poon-domingos", "--height", "4", "--width", "4", "--delta", "2"], 9 + 6),
        (["quad-tree", "--height", "4", "--width", "4", "--depth", "1"], 7 + 3),
        (["random", "--num-vars", "8", "--depth", "1", "--circuit", "--num-leaves", "2", "--num-sums", "2"], 4 + 1 + 4),
    ],
)
def test_cli_draws(argv, nodes, tmp_path, capsys):
    out = tmp_path / "out.svg"
    assert main(["draw", *argv, "-o", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert _svg_nodes(out) == nodes


def test_cli_dot_output_and_summary(tmp_path, capsys):
    out = tmp_path / "spn.dot"
    argv = ["draw", "random", "--num-vars", "16", "--depth", "2", "--circuit", "--level", "region", "--summary", "-o", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "Total parameters" in printed and "circuit, region level" in printed
    assert out.read_text().startswith("digraph circuit_regions")


@pytest.mark.parametrize(
    "argv",
    [
        ["draw", "random", "--num-vars", "16", "-o", "x.svg"],  # missing --depth
        ["draw", "random", "--num-vars", "sixteen", "--depth", "2", "-o", "x.svg"],
        ["draw", "random", "--num-vars", "16", "--depth", "0", "-o", "x.svg"],
        ["draw", "poon-domingos", "--height", "8", "--width", "8", "--level", "sideways", "-o", "x.svg"],
        ["draw", "hexagons", "-o", "x.svg"],
    ],
)
def test_cli_argparse_errors(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["random", "--num-vars", "16", "--depth", "5"], "2**depth"),
        (["random", "--num-vars", "16", "--depth", "2", "--level", "node"], "--circuit"),
        (["poon-domingos", "--height", "8", "--width", "8", "--delta", "1", "2", "3"], "--delta"),
        (["poon-domingos", "--height", "8", "--width", "8", "--delta", "1", "--max-nodes", "50"], "max_nodes"),
    ],
)
def test_cli_validation_errors(argv, message, tmp_path, capsys):
    assert main(["draw", *argv, "-o", str(tmp_path / "x.svg")]) == 2
    err = capsys.readouterr().err
    assert "usage:" in err and "Traceback" not in err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and message in errors[0]


@pytest.mark.parametrize("suffix", [".txt", ""])
def test_cli_bad_suffix(suffix, tmp_path, capsys):
    assert main(["draw", "random", "--num-vars", "8", "--depth", "1", "-o", str(tmp_path / f"x{suffix}")]) == 2
    assert "suffix" in capsys.readouterr().err


def test_cli_no_structure(capsys):
    assert main(["draw"]) == 2
    assert "choose what to draw" in capsys.readouterr().err


def test_cli_model_without_load(tmp_path, monkeypatch, capsys):
    monkeypatch.delattr(spnkit, "load", raising=False)
    f = tmp_path / "m.pt"
    f.write_bytes(b"")
    assert main(["draw", "model", str(f), "-o", str(tmp_path / "m.dot")]) == 1
    err = capsys.readouterr().err
    assert "spnkit.load" in err and "Traceback" not in err


def test_cli_model_with_load(tmp_path, monkeypatch, capsys):
    spn = _random_spn(*RANDOM[0])
    seen = []
    monkeypatch.setattr(spnkit, "load", lambda path: seen.append(path) or spn, raising=False)
    f = tmp_path / "m.pt"
    f.write_bytes(b"")
    assert main(["draw", "model", str(f), "--summary", "-o", str(tmp_path / "m.dot")]) == 0
    assert seen == [f]
    assert "Total parameters: " in capsys.readouterr().out
    assert (tmp_path / "m.dot").read_text().startswith("digraph circuit_nodes")


def test_cli_model_saved_file(tmp_path, capsys):
    io = pytest.importorskip("spnkit.io")  # spnkit.save / spnkit.load
    spn = spnkit.SPN(spnkit.RegionGraph.poon_domingos(4, 4, delta=2), spnkit.Bernoulli(), num_sums=2, num_leaves=2)
    io.save(spn, tmp_path / "m.spn")
    assert main(["draw", "model", str(tmp_path / "m.spn"), "--level", "region", "-o", str(tmp_path / "m.dot")]) == 0
    src = (tmp_path / "m.dot").read_text()
    assert src.count("params") == len(spn.region_graph.regions)  # one box per region vector
    (tmp_path / "bad.spn").write_bytes(b"not a model")
    assert main(["draw", "model", str(tmp_path / "bad.spn"), "-o", str(tmp_path / "m.dot")]) == 2
    err = capsys.readouterr().err
    assert "cannot load" in err and "Traceback" not in err


# ----------------------------------------------------------------- summary
def _formula_params(spn: spnkit.SPN, params_per_var: int) -> int:
    """Effective parameters from the region graph alone: leaf parameters per variable occurrence, one weight per sum edge."""
    rg = spn.region_graph

    def k(r):
        return spn.num_leaves if not rg.partitions_of[r] else (spn.num_classes if r == rg.root else spn.num_sums)

    leaves = sum(len(rg.regions[r]) for r in rg.leaf_regions) * spn.num_leaves * params_per_var
    sums = sum(math.prod(k(c) for c in p.children) * k(p.parent) for p in rg.partitions)
    mixing = sum(len(ps) * k(r) for r, ps in enumerate(rg.partitions_of) if len(ps) > 1)
    return leaves + sums + mixing


def test_summary_rat_spn_784():
    rg = spnkit.RegionGraph.random(num_vars=784, depth=4, repetitions=10, seed=0)
    spn = spnkit.SPN(rg, leaf=spnkit.Normal(), num_sums=10, num_leaves=10)
    s = spn.summary()
    assert s.total_params == 297_810 == _formula_params(spn, 2)
    assert "297,810" in str(s)
    assert s.param_bytes == 297_810 * 8  # float64 (set by the fixture)


@pytest.mark.parametrize(
    "make, per_var",
    [
        (lambda: _random_spn(13, 3, 3, 3, 2, 2), 2),  # uneven leaf regions: padded leaf slots
        (lambda: _random_spn(16, 2, 2, 4, 2, 1, spnkit.Bernoulli()), 1),  # K_leaf > K_sum: padded weights
        (lambda: spnkit.SPN(spnkit.RegionGraph.poon_domingos(6, 6, delta=(2, 3)), spnkit.Categorical(3), 3, 2, 2), 3),
        (lambda: spnkit.SPN(spnkit.RegionGraph.quad_tree(4, 5), spnkit.Normal(), 2, 3), 2),
    ],
)
def test_summary_matches_formula(make, per_var):
    spn = make()
    s = spn.summary(batch_size=3)
    assert s.total_params == _formula_params(spn, per_var)
    assert s.stored_params == sum(p.numel() for p in spn.parameters())
    assert s.stored_params >= s.total_params


@pytest.mark.parametrize(
    "make",
    [
        lambda: _random_spn(13, 3, 1, 2, 2, 1),  # leaf regions of 1 and 2 variables: padded leaf slots
        # partitions with one leaf child (K=4) and one sum child (K=2) in one layer: padded weights
        lambda: spnkit.SPN(spnkit.RegionGraph.poon_domingos(4, 4, delta=(2, 3)), spnkit.Normal(), num_sums=2, num_leaves=4),
    ],
)
def test_summary_padding_is_excluded(make):
    spn = make()
    s = spn.summary()
    assert s.stored_params > s.total_params
    assert "padding" in str(s)


@pytest.mark.parametrize("layer", ["tucker", "cp"])
@pytest.mark.parametrize("batch", [1, 5])
def test_summary_output_shapes_match_layers(batch, layer):
    spn = spnkit.SPN(spnkit.RegionGraph.poon_domingos(4, 4, delta=2), spnkit.Normal(), num_sums=3, num_leaves=2, num_classes=2, layer=layer)
    s = spn.summary(batch_size=batch)
    x = torch.rand(batch, 16)
    ev = spn.prepare(x)
    shapes = [tuple(spn.leaf_layer(*ev.leaf_input()).shape)]
    trace = spn.upward(ev)
    for lv, part in zip(spn.levels, trace.parts):
        shapes.append(tuple(part.shape))
        if lv.mixing is not None:
            shapes.append(tuple(lv.mixing(part).shape))
    if spn.root_sum is not None:
        shapes.append((1, batch, spn.num_classes))
    assert [r.output_shape for r in s.rows] == shapes
    assert [r.name.split("[")[0] for r in s.rows] == [type(m).__name__ for m in spn.layers]


def test_summary_rejects_bad_arguments():
    spn = _random_spn(*RANDOM[0])
    with pytest.raises(ValueError, match="batch_size"):
        spn.summary(batch_size=0)
    with pytest.raises(ValueError, match="SPN"):
        spnkit.summary.summary(spn.region_graph)
