"""Autotuned plans (cppconv.set_tuning, CPPCONV_TUNING, cppconv tune): the modes, the per-user
cache (atomic files, keys, corrupt files, concurrent writers), precision modes respected, and a
tuned layer's results equal to forcing its algorithm.  No assertion depends on what timing finds."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import cppconv
from cppconv import _cli, _native, _tuning

from conftest import make_rng

WINOGRAD = [a for a in _native.conv_algorithms() if a.startswith("conv2d_winograd")]

# A 3x3 stride-1 layer: several direct algorithms accept it, and Winograd does under "high".
X_SHAPE, W_SHAPE = (1, 16, 20, 20), (16, 16, 3, 3)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache folder of the test's own; the tuning mode put back afterwards."""
    monkeypatch.setenv("CPPCONV_CACHE_DIR", str(tmp_path))
    before = _tuning._mode
    try:
        yield tmp_path
    finally:
        _tuning._mode = before


def entries(folder):
    return sorted(glob.glob(os.path.join(str(folder), "tuning", "*.json")))


def layer_and_input(seed="tuning", **kwargs):
    rng = make_rng(seed)
    w = rng.standard_normal(W_SHAPE).astype(np.float32)
    b = rng.standard_normal(W_SHAPE[0]).astype(np.float32)
    x = rng.standard_normal(X_SHAPE).astype(np.float32)
    return cppconv.Conv2d(w, b, padding=1, **kwargs), x


def candidates_or_skip(layer, shape=X_SHAPE):
    names = layer.explain(shape)["candidates"]
    if len(names) < 2:
        pytest.skip(f"one algorithm accepts the test problem on this ISA ({names})")
    return names


def test_modes_and_their_errors(cache):
    assert cppconv.get_tuning() in _tuning.MODES
    for mode in ("off", "cached", "measure"):
        cppconv.set_tuning(mode)
        assert cppconv.get_tuning() == mode
    cppconv.set_tuning(" Measure ")  # any case, as the other string options
    assert cppconv.get_tuning() == "measure"
    with pytest.raises(ValueError, match=r"mode must be one of 'off', 'cached', 'measure', got 'fast'"):
        cppconv.set_tuning("fast")
    with pytest.raises(TypeError, match="mode must be a string"):
        cppconv.set_tuning(1)  # type: ignore[arg-type]
    assert cppconv.get_tuning() == "measure"  # a refused value changes nothing


def test_environment_variable(cache, monkeypatch):
    monkeypatch.setenv("CPPCONV_TUNING", "cached")
    cppconv.set_tuning(None)  # back to the environment's
    assert cppconv.get_tuning() == "cached"
    monkeypatch.setenv("CPPCONV_TUNING", "not-a-mode-for-this-test")
    with pytest.warns(RuntimeWarning, match=r"CPPCONV_TUNING='not-a-mode-for-this-test' is not a tuning mode"):
        cppconv.set_tuning(None)
    assert cppconv.get_tuning() == "off"
    monkeypatch.delenv("CPPCONV_TUNING")
    cppconv.set_tuning(None)
    assert cppconv.get_tuning() == "off"


def test_environment_variable_at_import(tmp_path):
    env = dict(os.environ, CPPCONV_TUNING="measure", CPPCONV_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", "import cppconv; print(cppconv.get_tuning())"], env=env,
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "measure"


def test_explain_names_candidates_and_source(cache):
    info = cppconv.explain(X_SHAPE, W_SHAPE, padding=1)
    assert info["chosen_by"] == "heuristic" and info["candidates"][0] == info["algorithm"]
    layer, _ = layer_and_input()
    cppconv.set_tuning("off")
    info = layer.explain(X_SHAPE)
    assert info["chosen_by"] == "heuristic" and info["candidates"][0] == info["algorithm"]


def test_measure_writes_the_cache_and_cached_reads_it(cache):
    layer, x = layer_and_input()
    candidates_or_skip(layer)
    cppconv.set_tuning("cached")
    y0 = layer(x)  # nothing cached: the heuristic, nothing written
    assert layer.explain(X_SHAPE)["chosen_by"] == "heuristic" and entries(cache) == []
    cppconv.set_tuning("measure")
    y = layer(x)
    info = layer.explain(X_SHAPE)
    assert info["chosen_by"] == "measurement"
    [path] = entries(cache)
    assert not [f for f in os.listdir(os.path.dirname(path)) if f.startswith(".tmp-")]  # the temporary is gone
    with open(path) as f:
        entry = json.load(f)
    assert entry["algorithm"] == info["algorithm"]
    assert set(entry["median_s"]) <= set(info["candidates"]) and entry["key"]["problem"]["x"] == list(X_SHAPE)
    assert entry["key"]["threads"] == cppconv.get_num_threads() and entry["key"]["version"] == cppconv.__version__
    np.testing.assert_allclose(y, y0, rtol=1e-4, atol=1e-4)
    # A new layer of the same problem finds it, in either mode, and times nothing.
    for mode in ("cached", "measure"):
        cppconv.set_tuning(mode)
        other, _ = layer_and_input()
        assert other.explain(X_SHAPE)["chosen_by"] == "cache"
        assert np.array_equal(other(x), y)
        assert other.explain(X_SHAPE)["algorithm"] == info["algorithm"]
    assert len(entries(cache)) == 1
    cppconv.set_tuning("off")
    assert layer.explain(X_SHAPE)["chosen_by"] == "heuristic"


def test_a_tuned_choice_gives_the_forced_algorithms_result(cache):
    """Whatever tuning picks (here each candidate in turn, written into the cache), the layer
    computes what forcing that algorithm computes, bit for bit, at the same thread count."""
    layer, x = layer_and_input()
    names = candidates_or_skip(layer)
    cppconv.set_tuning("measure")
    y = layer(x)
    assert np.array_equal(y, layer._call_with_algorithm(layer.explain(X_SHAPE)["algorithm"], x))
    [path] = entries(cache)
    with open(path) as f:
        entry = json.load(f)
    cppconv.set_tuning("cached")
    heuristic = layer._call_with_algorithm(names[0], x)
    for name in names:
        entry["algorithm"] = name
        with open(path, "w") as f:
            json.dump(entry, f)
        fresh, _ = layer_and_input()
        assert fresh.explain(X_SHAPE)["algorithm"] == name
        y = fresh(x)
        assert fresh.explain(X_SHAPE)["chosen_by"] == "cache"
        assert np.array_equal(y, fresh._call_with_algorithm(name, x)), name
        assert np.array_equal(fresh(x), y)  # and the same on every call
        np.testing.assert_allclose(y, heuristic, rtol=1e-4, atol=1e-4)
        out = np.empty_like(y)
        assert fresh(x, out=out) is out and np.array_equal(out, y)
        r = make_rng("tuning-residual").standard_normal(y.shape).astype(np.float32)
        assert np.array_equal(fresh(x, residual=r), y + r), name  # a fused residual: the tuned choice too


def test_key_changes_with_threads_and_version(cache, monkeypatch):
    problem = {"op": "conv2d", "x": [1, 2, 3, 3]}
    one, two = _tuning.full_key(problem, 1), _tuning.full_key(problem, 2)
    assert _tuning.entry_path(one) != _tuning.entry_path(two)
    monkeypatch.setattr(cppconv, "__version__", "0.0.0+another")
    assert _tuning.entry_path(_tuning.full_key(problem, 1)) != _tuning.entry_path(one)
    assert _tuning.full_key(problem, 1)["version"] == "0.0.0+another"
    assert one["cpu"] == _tuning.cpu_model() and one["isa"] == _native.selected_isa()


def test_a_choice_per_thread_count(cache):
    layer, x = layer_and_input()
    candidates_or_skip(layer)
    cppconv.set_tuning("measure")
    layer(x, num_threads=1)
    layer(x, num_threads=2)
    files = entries(cache)
    assert len(files) == 2
    threads = set()
    for path in files:
        with open(path) as f:
            threads.add(json.load(f)["key"]["threads"])
    assert threads == {1, 2}


def test_the_precision_mode_is_part_of_the_key(cache):
    cppconv.set_tuning("measure")
    for precision in ("highest", "high"):
        layer, x = layer_and_input(precision=precision)
        candidates_or_skip(layer)
        layer(x)
    precisions = set()
    for path in entries(cache):
        with open(path) as f:
            precisions.add(json.load(f)["key"]["problem"]["precision"])
    assert precisions == {"highest", "high"}


@pytest.mark.skipif(not WINOGRAD, reason="no Winograd algorithm on this machine")
def test_never_winograd_under_highest(cache):
    high, x = layer_and_input(precision="high")
    if not any(n in WINOGRAD for n in high.explain(X_SHAPE)["candidates"]):
        pytest.skip("Winograd does not accept the test problem on this ISA")
    layer, _ = layer_and_input()  # precision None: the process-wide mode, "highest"
    assert cppconv.get_float32_precision() == "highest"
    assert not any(n in WINOGRAD for n in layer.explain(X_SHAPE)["candidates"])
    cppconv.set_tuning("measure")
    layer(x)
    assert layer.explain(X_SHAPE)["algorithm"] not in WINOGRAD
    # A cache entry that names Winograd for a "highest" problem (written by hand: tuning never
    # would) is not a candidate there, so the heuristic runs.
    [path] = entries(cache)
    with open(path) as f:
        entry = json.load(f)
    entry["algorithm"] = next(n for n in high.explain(X_SHAPE)["candidates"] if n in WINOGRAD)
    with open(path, "w") as f:
        json.dump(entry, f)
    cppconv.set_tuning("cached")
    fresh, _ = layer_and_input()
    info = fresh.explain(X_SHAPE)
    assert info["chosen_by"] == "heuristic" and info["algorithm"] not in WINOGRAD
    assert np.array_equal(fresh(x), fresh._call_with_algorithm(info["algorithm"], x))


@pytest.mark.parametrize("content", ["{not json", "[1, 2, 3]", '{"algorithm": 5, "key": {}}'])
def test_a_corrupt_cache_file_is_ignored_with_a_warning(cache, content):
    layer, x = layer_and_input()
    candidates_or_skip(layer)
    cppconv.set_tuning("measure")
    layer(x)
    [path] = entries(cache)
    with open(path, "w") as f:
        f.write(content)
    cppconv.set_tuning("cached")
    fresh, _ = layer_and_input()
    with pytest.warns(RuntimeWarning, match="ignoring the tuning cache file"):
        y = fresh(x)
    assert np.array_equal(y, fresh._call_with_algorithm(fresh.explain(X_SHAPE)["candidates"][0], x))
    assert fresh.explain(X_SHAPE)["chosen_by"] == "heuristic"  # the layer's choice: no second reading
    # A measurement replaces the file with a valid entry.
    cppconv.set_tuning("measure")
    again, _ = layer_and_input()
    with pytest.warns(RuntimeWarning):
        again(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with open(path) as f:
            assert isinstance(json.load(f)["algorithm"], str)


def test_an_unwritable_cache_warns_and_the_layer_still_tunes(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("CPPCONV_CACHE_DIR", str(blocker))  # a file: no folder can be made under it
    before = _tuning._mode
    try:
        layer, x = layer_and_input()
        candidates_or_skip(layer)
        cppconv.set_tuning("measure")
        with pytest.warns(RuntimeWarning, match="cannot write the tuning cache"):
            y = layer(x)
        assert layer.explain(X_SHAPE)["chosen_by"] == "measurement"  # the layer keeps its choice
        assert np.array_equal(layer(x), y)
    finally:
        _tuning._mode = before


_WRITER = """
import json, sys
from cppconv import _tuning
key = json.loads(sys.argv[3])  # the test's: another test may have left this process's ISA or version different
for i in range(int(sys.argv[1])):
    _tuning.write_entry(key, sys.argv[2], {sys.argv[2]: i * 1e-6})
"""


def test_concurrent_writers_leave_a_valid_file(cache):
    key = _tuning.full_key({"op": "conv2d", "x": [1, 2, 3]}, 1)
    env = dict(os.environ, CPPCONV_CACHE_DIR=str(cache))
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, "60", name, json.dumps(key)], env=env)
             for name in ("writer_a", "writer_b")]
    seen = set()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a reader never meets half a file
        while any(p.poll() is None for p in procs):
            entry = _tuning.read_entry(key)
            if entry is not None:
                seen.add(entry["algorithm"])
    assert [p.wait() for p in procs] == [0, 0]
    entry = _tuning.read_entry(key)
    assert entry is not None and entry["algorithm"] in ("writer_a", "writer_b")
    assert seen <= {"writer_a", "writer_b"}
    assert os.listdir(os.path.join(str(cache), "tuning")) == [os.path.basename(_tuning.entry_path(key))]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the XDG rule is Linux's")
def test_cache_folder_rule(monkeypatch, tmp_path):
    monkeypatch.delenv("CPPCONV_CACHE_DIR", raising=False)
    monkeypatch.setitem(sys.modules, "platformdirs", None)  # the rule by hand
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert _tuning.cache_root() == os.path.join(str(tmp_path), "cppconv")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert _tuning.cache_root() == os.path.join(os.path.expanduser("~"), ".cache", "cppconv")
    monkeypatch.setenv("CPPCONV_CACHE_DIR", str(tmp_path / "mine"))
    assert _tuning.cache_root() == str(tmp_path / "mine")
    assert _tuning.tuning_dir() == str(tmp_path / "mine" / "tuning")


def test_functions_never_tune(cache):
    cppconv.set_tuning("measure")
    layer, x = layer_and_input()
    cppconv.conv2d(x, layer.weight, layer.bias, padding=1)
    assert entries(cache) == []


def test_cli_tune(cache, capsys):
    layers = "seed5x5,resnet_3x3_128@28"
    assert _cli.main(["tune", "--layers", layers, "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "seed5x5" in out and "resnet_3x3_128@28" in out and "NHWC" in out and str(cache) in out
    written = len(entries(cache))
    assert _cli.main(["tune", "--layers", layers, "--threads", "1"]) == 0  # all cached now: nothing new
    out = capsys.readouterr().out
    assert len(entries(cache)) == written
    if written:
        assert "cache" in out
    with pytest.raises(SystemExit):
        _cli.main(["tune", "--threads", "0"])
    assert "--threads must be >= 1" in capsys.readouterr().err


def _two_conv_model(path):
    """A hand-built ONNX graph: Conv 3x3 (16 -> 16) + Relu, then Conv 1x1 (16 -> 8)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = make_rng("model")
    w1 = rng.standard_normal(W_SHAPE).astype(np.float32)
    w2 = rng.standard_normal((8, 16, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, *X_SHAPE[1:]])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=[numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return rng.standard_normal(X_SHAPE).astype(np.float32)


def test_cli_tune_model_and_a_tuned_network(cache, tmp_path, capsys):
    path = tmp_path / "two_conv.onnx"
    x = _two_conv_model(path)
    reference = cppconv.onnx.load(str(path))(x)
    assert _cli.main(["tune", "--model", str(path)]) == 0
    out = capsys.readouterr().out
    assert "2 convolutions" in out
    # A network loaded later finds the measurements, in its own channels-last layout.
    cppconv.set_tuning("cached")
    net = cppconv.onnx.load(str(path))
    y = net(x)
    convs = [node for node in net.explain()["nodes"] if node["op"] == "Conv"]
    assert len(convs) == 2
    assert all(node["chosen_by"] in ("cache", "heuristic") for node in convs)
    if entries(cache):
        assert any(node["chosen_by"] == "cache" for node in convs)
    np.testing.assert_allclose(y, reference, rtol=1e-4, atol=1e-4)
    assert _cli.main(["tune", "--model", str(tmp_path / "missing.onnx")]) == 1
    assert "cppconv tune: error" in capsys.readouterr().err
