"""Tests of spnkit.io: round trips, and clear errors on damaged, foreign or newer files."""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass

import pytest
import torch

import spnkit
from spnkit import io as spnio
from spnkit.testing.brute_force import support
from spnkit.testing.circuits import randomize_parameters

F64 = torch.float64


def _spn(leaf=None, classes=1, graph="random", dtype=F64, seed=0) -> spnkit.SPN:
    if graph == "random":
        rg = spnkit.RegionGraph.random(num_vars=6, depth=2, repetitions=2, seed=seed)
    else:
        rg = spnkit.RegionGraph.poon_domingos(height=2, width=3, delta=1)
    spn = spnkit.SPN(rg, leaf or spnkit.Normal(0.1, 2.0, (-1.0, 1.0)), num_sums=3, num_leaves=2, num_classes=classes)
    return randomize_parameters(spn.to(F64), seed).to(dtype)


def _x(spn: spnkit.SPN, n: int = 7) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    if isinstance(spn.leaf, spnkit.Normal):
        return torch.randn(n, spn.num_vars, generator=g, dtype=spn.dtype)
    k = len(support(spn.leaf))
    return torch.randint(0, k, (n, spn.num_vars), generator=g).to(spn.dtype)


@pytest.fixture
def saved(tmp_path):
    spn = _spn()
    path = tmp_path / "model.spn"
    spn.save(path)
    return spn, path


CASES = [
    pytest.param(dict(), id="normal"),
    pytest.param(dict(leaf=spnkit.Bernoulli(), classes=3), id="bernoulli-classes"),
    pytest.param(dict(leaf=spnkit.Categorical(4), graph="pd"), id="categorical-poon-domingos"),
    pytest.param(dict(dtype=torch.float32), id="float32"),
]


@pytest.mark.parametrize("kwargs", CASES)
def test_round_trip_gives_identical_log_prob(tmp_path, kwargs):
    spn = _spn(**kwargs)
    spn.save(tmp_path / "m.spn")
    back = spnkit.load(tmp_path / "m.spn")
    x = _x(spn)
    mask = torch.rand(x.shape, generator=torch.Generator().manual_seed(2)) < 0.4
    assert torch.equal(back.log_prob(x), spn.log_prob(x))
    assert torch.equal(back.log_prob(x, mask), spn.log_prob(x, mask))
    assert back.region_graph == spn.region_graph and back.leaf == spn.leaf and back.dtype == spn.dtype
    assert (back.num_sums, back.num_leaves, back.num_classes) == (spn.num_sums, spn.num_leaves, spn.num_classes)


def test_file_holds_json_structure_and_tensors_without_pickled_objects(saved):
    spn, path = saved
    with zipfile.ZipFile(path) as zf:
        assert set(zf.namelist()) == {"spn.json", "weights.pt"}
        meta = json.loads(zf.read("spn.json"))
        state = torch.load(io.BytesIO(zf.read("weights.pt")), weights_only=True)
    assert meta["format"] == "spnkit" and meta["version"] == spnio.FORMAT_VERSION
    assert meta["leaf"] == {"family": "Normal", "fields": {"min_var": 0.1, "max_var": 2.0, "loc_range": [-1.0, 1.0], "init_var": None}}
    assert meta["region_graph"]["num_vars"] == 6 and len(meta["region_graph"]["regions"]) == len(spn.region_graph.regions)
    assert set(state) == set(spn.state_dict())


def test_load_leaves_the_global_random_state_alone(saved):
    _, path = saved
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    spnkit.load(path)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("keep", [0, 10, 100, 0.5, -20])
def test_truncated_file_raises(saved, tmp_path, keep):
    _, path = saved
    raw = path.read_bytes()
    n = int(len(raw) * keep) if isinstance(keep, float) else (len(raw) + keep if keep < 0 else keep)
    bad = tmp_path / "bad.spn"
    bad.write_bytes(raw[:n])
    with pytest.raises(ValueError, match="truncated|corrupted|not a spnkit file"):
        spnkit.load(bad)


@pytest.mark.parametrize("where", [0.3, 0.6, 0.9])
def test_corrupted_file_raises(saved, tmp_path, where):
    _, path = saved
    raw = bytearray(path.read_bytes())
    i = int(len(raw) * where)
    raw[i : i + 16] = bytes(b ^ 0xA5 for b in raw[i : i + 16])
    bad = tmp_path / "bad.spn"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="truncated|corrupted|not a spnkit file|damaged|cannot read|malformed"):
        spnkit.load(bad)


def _zip(path, entries: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)


def test_foreign_files_raise(tmp_path):
    spn = _spn()
    cases = {
        "random.bin": os.urandom(2000),
        "text.json": json.dumps({"hello": 1}).encode(),
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    torch.save(spn.state_dict(), tmp_path / "torch.pt")  # a zip, but no spn.json
    _zip(tmp_path / "other.zip", {"readme.txt": b"hi"})
    _zip(tmp_path / "marker.zip", {"spn.json": json.dumps({"format": "other", "version": 1}).encode()})
    for name in [*cases, "torch.pt", "other.zip", "marker.zip"]:
        with pytest.raises(ValueError, match="not a spnkit file"):
            spnkit.load(tmp_path / name)
    with pytest.raises(ValueError, match="no such file"):
        spnkit.load(tmp_path / "missing.spn")


def _rewrite(path, out, meta_update=None, weights: bytes | None = None) -> None:
    with zipfile.ZipFile(path) as zf:
        meta = json.loads(zf.read("spn.json"))
        w = zf.read("weights.pt")
    meta.update(meta_update or {})
    _zip(out, {"spn.json": json.dumps(meta).encode(), "weights.pt": w if weights is None else weights})


def test_newer_format_raises(saved, tmp_path):
    _, path = saved
    _rewrite(path, tmp_path / "new.spn", {"version": spnio.FORMAT_VERSION + 1})
    with pytest.raises(ValueError, match="newer|format 2.*Upgrade"):
        spnkit.load(tmp_path / "new.spn")


@pytest.mark.parametrize(
    "update, match",
    [
        ({"leaf": {"family": "Gamma", "fields": {}}}, "unknown leaf family"),
        ({"num_sums": 0}, "invalid circuit"),
        ({"region_graph": {"num_vars": 6}}, "malformed"),
        ({"num_leaves": 5}, "do not match"),
        ({"version": "1"}, "invalid format version"),
    ],
)
def test_inconsistent_description_raises(saved, tmp_path, update, match):
    _, path = saved
    _rewrite(path, tmp_path / "bad.spn", update)
    with pytest.raises(ValueError, match=match):
        spnkit.load(tmp_path / "bad.spn")


class _Payload:
    def __reduce__(self):
        return (print, ("code ran while loading",))


def test_weights_with_pickled_code_are_refused(saved, tmp_path, capsys):
    _, path = saved
    buf = io.BytesIO()
    torch.save({"x": _Payload()}, buf)
    _rewrite(path, tmp_path / "evil.spn", weights=buf.getvalue())
    with pytest.raises(ValueError, match="cannot read the parameters"):
        spnkit.load(tmp_path / "evil.spn")
    assert "code ran" not in capsys.readouterr().out


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(saved, monkeypatch):
    spn, path = saved
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(zipfile.ZipFile, "writestr", boom)
    with pytest.raises(OSError, match="disk full"):
        _spn(seed=3).save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.spn"]
    assert torch.equal(spnkit.load(path).log_prob(_x(spn)), spn.log_prob(_x(spn)))


def test_save_rejects_bad_targets_and_unregistered_leaves(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        _spn().save(tmp_path / "no" / "m.spn")

    @dataclass(frozen=True)
    class WideNormal(spnkit.Normal):
        pass

    spn = _spn(leaf=WideNormal(0.2, 3.0))
    with pytest.raises(ValueError, match="register_leaf"):
        spn.save(tmp_path / "m.spn")
    spnio.register_leaf(WideNormal)
    try:
        spn.save(tmp_path / "m.spn")
        back = spnkit.load(tmp_path / "m.spn")
        assert isinstance(back.leaf, WideNormal) and torch.equal(back.log_prob(_x(spn)), spn.log_prob(_x(spn)))
    finally:
        spnio._LEAVES.pop("WideNormal")
    with pytest.raises(ValueError, match="register_leaf needs"):
        spnio.register_leaf(int)


def test_atomic_write_replaces_whole_files_only(tmp_path):
    from spnkit._files import atomic_write

    path = tmp_path / "sub" / "f.txt"
    atomic_write(path, b"first")  # creates the folder
    assert path.read_bytes() == b"first" and oct(path.stat().st_mode & 0o777) == "0o644"
    atomic_write(path, lambda fh: fh.write(b"second"))
    assert path.read_bytes() == b"second"

    def half(fh):
        fh.write(b"par")
        raise KeyboardInterrupt  # killed mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half)
    assert path.read_bytes() == b"second"
    assert [p.name for p in path.parent.iterdir()] == ["f.txt"]


def test_folders_are_refused_by_save_and_load(tmp_path):
    with pytest.raises(ValueError, match="is a folder; give a file path"):
        _spn().save(tmp_path)
    with pytest.raises(ValueError, match="is a folder, not a spnkit file"):
        spnkit.load(tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("key", ["num_sums", "num_leaves", "num_classes"])
def test_a_small_file_cannot_ask_for_a_huge_circuit(saved, tmp_path, key):
    """A file of a few kB whose spn.json asks for 10 million sums per region is refused before anything large is allocated."""
    _, path = saved
    _rewrite(path, tmp_path / "huge.spn", {key: 10_000_000})
    assert (tmp_path / "huge.spn").stat().st_size < 10_000  # a few kB
    with pytest.raises(ValueError, match="far larger than the parameters it holds"):  # not the allocator's RuntimeError
        spnkit.load(tmp_path / "huge.spn")


def test_num_vars_is_bounded_by_the_regions(saved, tmp_path):
    _, path = saved
    with zipfile.ZipFile(path) as zf:
        graph = json.loads(zf.read("spn.json"))["region_graph"]
    _rewrite(path, tmp_path / "vars.spn", {"region_graph": dict(graph, num_vars=10**12)})
    with pytest.raises(ValueError, match="num_vars is 1000000000000 but no region has more than 6"):
        spnkit.load(tmp_path / "vars.spn")


@pytest.mark.parametrize(
    "update, match",
    [
        ({"num_sums": 3.7}, "num_sums must be an integer, got 3.7"),
        ({"num_leaves": "2"}, "num_leaves must be an integer"),
        ({"num_classes": True}, "num_classes must be an integer"),
        ({"dtype": 32}, "dtype must be one of"),
        ({"leaf": {"family": "Normal", "fields": {"min_var": "0.1"}}}, "leaf.fields.min_var must be a finite number"),
        ({"leaf": {"family": "Normal", "fields": {"loc_range": [0.0]}}}, "leaf.fields.loc_range must be a list of 2 values"),
        ({"leaf": {"family": "Normal", "fields": {"scale": 1.0}}}, "leaf Normal has no field scale"),
        ({"leaf": {"family": 3, "fields": {}}}, "leaf.family must be a string"),
        ({"leaf": "Normal"}, "leaf must be an object"),
        ({"region_graph": {"num_vars": 6, "regions": [[0.5]], "partitions": [], "image_shape": None}}, r"regions\[0\] must be a list of integers"),
        ({"region_graph": {"num_vars": "6", "regions": [], "partitions": [], "image_shape": None}}, "num_vars must be an integer"),
        ({"region_graph": {"num_vars": 6, "regions": [[0]], "partitions": [[0, 1]], "image_shape": None}}, "partitions.0. children"),
        ({"region_graph": {"num_vars": 6, "regions": [[0]], "partitions": [], "image_shape": "2x3"}}, "image_shape must be a list"),
    ],
)
def test_wrongly_typed_fields_are_named(saved, tmp_path, update, match):
    _, path = saved
    _rewrite(path, tmp_path / "typed.spn", update)
    with pytest.raises(ValueError, match=match):
        spnkit.load(tmp_path / "typed.spn")
