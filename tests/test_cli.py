"""The cppconv command: info, bench (the packaged suite) and demo; the PNG helper."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import cppconv
from cppconv import _cli, _demo, _png, bench

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_info_text(capsys):
    assert _cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"cppconv {cppconv.__version__}" in out
    assert cppconv.info()["isa"] in out
    for name in cppconv._native.conv_algorithms():
        assert name in out
    for name in cppconv.__all__:
        if not name.startswith("_"):
            assert name in out  # public names are found at run time


def test_info_json(capsys):
    assert _cli.main(["info", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["available_isas"] == list(cppconv._native.available_isas())
    assert report["threads"] == cppconv.get_num_threads()
    conv = report["algorithms"]["conv"]
    assert sorted(sum(conv.values(), [])) == sorted(cppconv._native.conv_algorithms())
    assert set(conv) <= set(report["available_isas"]) | {"any"}


def test_python_dash_m(tmp_path):
    out = subprocess.run([sys.executable, "-m", "cppconv", "info"], capture_output=True, text=True, check=True,
                         cwd=tmp_path).stdout
    assert out.startswith(f"cppconv {cppconv.__version__}")


def test_no_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        _cli.main([])
    assert exit_info.value.code == 2
    assert "info" in capsys.readouterr().err


def test_bench_list(capsys):
    assert _cli.main(["bench", "--list"]) == 0
    out = capsys.readouterr().out
    assert all(layer.name in out for layer in bench.LAYERS)


QUICK = ["--quick", "--layers", "seed5x5", "--peers", "numpy", "--repeat", "2", "--rounds", "1"]


def test_bench_quick_table_json_and_progress(tmp_path, capsys):
    report = tmp_path / "bench.json"
    assert _cli.main(["bench", *QUICK, "--threads", "1", "--json", str(report)]) == 0
    captured = capsys.readouterr()
    assert "cppconv GF/s" in captured.out and "seed5x5" in captured.out
    assert "[############################] 1/1" in captured.err  # the progress bar ends full
    doc = json.loads(report.read_text())
    assert doc["columns"] == ["cppconv", "Conv2d", "cppconv_high", "Conv2d_high", "cppconv_nhwc", "Conv2d_nhwc",
                              "numpy"]
    results = doc["layers"][0]["results"]
    # The seed's 2-D form has no channel axis: no NHWC twin.
    assert results["cppconv_nhwc"]["status"] == "n/a" and "channel axis" in results["cppconv_nhwc"]["note"]
    assert results["cppconv"]["status"] == "ok" and results["numpy"]["match"] is True
    # "high" changes nothing for the seed's single channel: its columns skip the layer.
    assert results["cppconv_high"]["status"] == "n/a" and "same algorithm" in results["cppconv_high"]["note"]
    assert set(results["cppconv"]) >= {"median_s", "q25_s", "q75_s"} and "samples_s" not in results["cppconv"]
    assert doc["machine"]["threads"] == 1


def test_machine_info_records_how_openmp_waits(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    assert bench.machine_info(1)["openmp_env"].get("OMP_WAIT_POLICY") == "PASSIVE"
    monkeypatch.delenv("OMP_WAIT_POLICY")
    assert "OMP_WAIT_POLICY" not in bench.machine_info(1)["openmp_env"]


def test_bench_bfloat16(tmp_path, capsys):
    """--dtype bf16: cppconv's columns on bfloat16 data (the float32 layer beside them), PyTorch's
    bfloat16 layouts where torch is installed, the float32-only peers left out."""
    pytest.importorskip("ml_dtypes", reason="--dtype bf16 needs ml_dtypes")
    report = tmp_path / "bench.json"
    layers = "resnet_3x3_512@7,dw_384@14_s2"
    peers = "numpy,torch" if bench._import("torch") is not None else "numpy"
    assert _cli.main(["bench", "--quick", "--layers", layers, "--peers", peers, "--repeat", "2", "--rounds", "1",
                      "--dtype", "bf16", "--threads", "1", "--json", str(report)]) == 0
    doc = json.loads(report.read_text())
    assert doc["machine"]["dtype"] == "bf16"
    want = ["cppconv", "Conv2d", "cppconv_high", "Conv2d_high", "cppconv_nhwc", "Conv2d_nhwc", "Conv2d_f32"]
    assert doc["columns"] == want + (["torch", "torch_cl"] if "torch" in peers else [])
    for row in doc["layers"]:
        results = row["results"]
        assert results["cppconv"]["status"] == "ok" and results["Conv2d_f32"]["match"] is True
        assert all(r["match"] is True for r in results.values() if r["status"] == "ok")
        # The bfloat16 problem's own algorithm is named (its kernel where the CPU has one).
        dense = row["layer"]["name"] == "resnet_3x3_512@7"
        kernel = "avx512_bf16" in cppconv._native.cpu_features()
        name = "conv2d_amx_bf16" if "amx_bf16" in cppconv._native.cpu_features() else "conv2d_channelvec_bf16"
        assert row["explain"]["highest"]["algorithm"].startswith(name) == (dense and kernel)


def test_bench_int8(tmp_path, capsys):
    """--dtype int8: qconv2d and QConv2d in both layouts on the quantized suite data, the float32
    layer on the dequantized values, and ONNX Runtime's QLinearConv where installed."""
    report = tmp_path / "bench.json"
    have_ort = bench._import("onnxruntime") is not None and bench._import("onnx") is not None
    peers = "numpy,onnxruntime" if have_ort else "numpy"
    assert _cli.main(["bench", "--quick", "--layers", "resnet_3x3_512@7,dw_384@14_s2", "--peers", peers, "--repeat",
                      "2", "--rounds", "1", "--dtype", "int8", "--threads", "1", "--json", str(report)]) == 0
    captured = capsys.readouterr()
    assert "Conv2d x f32" in captured.out and "% peak" not in captured.out
    doc = json.loads(report.read_text())
    assert doc["machine"]["dtype"] == "int8"
    want = ["cppconv", "Conv2d", "cppconv_nhwc", "Conv2d_nhwc", "Conv2d_f32"]
    assert doc["columns"] == want + (["onnxruntime"] if have_ort else [])
    for row in doc["layers"]:
        results = row["results"]
        assert all(results[col]["status"] == "ok" for col in doc["columns"])
        assert all(results[col]["match"] is True for col in doc["columns"] if col != "Conv2d_f32")
        assert row["speedup"]["Conv2d_f32"] and row["explain"]["highest"]["algorithm"].startswith("qconv")
        if have_ort:
            assert row["speedup"]["best_fw"]


def test_bench_nhwc_twins(tmp_path, capsys):
    """The NHWC columns run cppconv channels-last on the same data (their outputs, transposed,
    match NCHW's), and each layout's speedup is taken against PyTorch's twin layout."""
    report = tmp_path / "bench.json"
    peers = "numpy,torch" if bench._import("torch") is not None else "numpy"
    assert _cli.main(["bench", "--quick", "--layers", "dw_384@14_s2", "--peers", peers, "--repeat", "2",
                      "--rounds", "1", "--threads", "1", "--json", str(report)]) == 0
    captured = capsys.readouterr()
    assert "conv2d NHWC GF/s" in captured.out and "NHWC x torch_cl" in captured.out
    doc = json.loads(report.read_text())
    [row] = doc["layers"]
    for col in ("cppconv_nhwc", "Conv2d_nhwc"):
        assert row["results"][col]["status"] == "ok" and row["results"][col]["match"] is True
    if "torch" in peers:
        assert row["speedup"]["nhwc_torch_cl"] and row["speedup"]["nchw_torch"]
    # The twins' speedups from timings alone.
    def result(seconds):
        return bench.Result("ok", timing=bench.Timing(seconds, seconds, 1, 1, [seconds]), gflops=1.0)

    sp = bench.speedups({"cppconv": result(1.0), "cppconv_nhwc": result(2.0), "torch": result(3.0),
                         "torch_cl": result(1.0)})
    assert sp["nchw_torch"] == 3.0 and sp["nhwc_torch_cl"] == 0.5 and sp["best_fw"] == 1.0


def test_bench_sanity_rows(tmp_path, capsys):
    """The sanity rows (depthwise on 1x1 planes, padded and dilated 300 to 1000) run in
    milliseconds, on their one live tap; the numpy runner, which would pad the input to tens of
    GiB, is n/a; the rows stay out of the geometric means."""
    sanity = [layer.name for layer in bench.LAYERS if layer.sanity]
    assert len(sanity) == 3 and all(layer.batched for layer in bench.LAYERS if layer.sanity)
    report = tmp_path / "bench.json"
    assert _cli.main(["bench", "--layers", ",".join(sanity), "--peers", "numpy", "--repeat", "2", "--rounds", "1",
                      "--json", str(report)]) == 0
    captured = capsys.readouterr()
    assert "WARNING: sanity row" not in captured.err
    doc = json.loads(report.read_text())
    for row in doc["layers"]:
        assert row["explain"]["highest"]["live_taps_only"], row["explain"]
        assert row["results"]["cppconv"]["median_s"] < bench.SANITY_LIMIT_S
        assert row["results"]["numpy"]["status"] == "n/a" and "GiB" in row["results"]["numpy"]["note"]
    # Out of the means: beside a layer at 2x over numpy, a sanity row at 1000x leaves the mean 2x.
    def result(seconds):
        return bench.Result("ok", timing=bench.Timing(seconds, seconds, 1, 1, [seconds]), gflops=1.0)

    real = next(layer for layer in bench.LAYERS if not layer.sanity)
    sparse = next(layer for layer in bench.LAYERS if layer.sanity)
    rows = [(real, {"cppconv": result(1e-3), "numpy": result(2e-3)}, None),
            (sparse, {"cppconv": result(1e-3), "numpy": result(1.0)}, None)]
    _, _, summary = bench.build_table(rows, ["cppconv", "numpy"])
    assert "2.00x over 1 layers" in summary[0], summary


def test_bench_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    chart = tmp_path / "chart.png"
    assert _cli.main(["bench", *QUICK, "--plot", str(chart)]) == 0
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_plot_without_matplotlib(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(bench, "_has_module", lambda name: False)
    with pytest.raises(SystemExit) as exit_info:
        _cli.main(["bench", *QUICK, "--plot", str(tmp_path / "chart.png")])
    assert exit_info.value.code == 2
    assert "pip install 'cppconv[plot]'" in capsys.readouterr().err


def test_bench_bad_threads(capsys):
    with pytest.raises(SystemExit):
        _cli.main(["bench", "--threads", "0"])
    assert "--threads must be >= 1, got 0" in capsys.readouterr().err


def test_bench_networks(capsys):
    """cppconv bench --networks: the whole-network suite (a small batch of one network here), its
    table with a check against PyTorch; the arguments it does not take are refused."""
    for module in ("torch", "onnx", "onnxruntime"):
        pytest.importorskip(module)
    assert _cli.main(["bench", "--networks", "squeezenet1_1", "--batches", "1", "--quick", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "squeezenet1_1" in out and " ok" in out and "geometric mean vs ONNX Runtime" in out


@pytest.mark.parametrize("argv,words", [
    (["--networks", "lenet"], "--networks: unknown lenet; the networks: resnet18"),
    (["--networks", "--markdown", "t.md"], "--networks takes --threads, --batches and --quick, not --markdown"),
    (["--networks", "--dtype", "int8"], "not --dtype"),
    (["--networks", "--batches", "1,0"], "--batches must be comma-separated positive integers, got '1,0'"),
    (["--networks", "--batches", "x"], "--batches must be comma-separated positive integers, got 'x'")])
def test_bench_networks_bad_arguments(argv, words, capsys, monkeypatch):
    monkeypatch.setattr(bench, "_has_module", lambda name: True)
    with pytest.raises(SystemExit) as exit_info:
        _cli.main(["bench", *argv])
    assert exit_info.value.code == 2
    assert words in capsys.readouterr().err


def test_bench_networks_without_the_peers(capsys, monkeypatch):
    monkeypatch.setattr(bench, "_has_module", lambda name: name != "onnxruntime")
    with pytest.raises(SystemExit):
        _cli.main(["bench", "--networks"])
    assert "--networks needs onnxruntime, not installed: pip install 'cppconv[peers]'" in capsys.readouterr().err


def test_bench_script_wraps_the_package(tmp_path):
    script = os.path.join(REPO, "bench", "bench_conv.py")
    if not os.path.exists(script):
        pytest.skip("not a source checkout")
    report = tmp_path / "bench.json"
    subprocess.run([sys.executable, script, *QUICK, "--json", str(report)], check=True, capture_output=True,
                   cwd=tmp_path)
    doc = json.loads(report.read_text())
    assert [layer["layer"]["name"] for layer in doc["layers"]] == ["seed5x5"]
    assert "git" in doc["machine"]  # the wrapper records the checkout's commit (when git is there)


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_bench_nd_script(tmp_path, dtype):
    """bench/bench_nd.py on one small layer: each dtype's table (bfloat16 against PyTorch's bfloat16
    only), the lowering and the algorithm that runs, the outputs checked against PyTorch's."""
    script = os.path.join(REPO, "bench", "bench_nd.py")
    if not os.path.exists(script):
        pytest.skip("not a source checkout")
    if dtype == "bf16":
        pytest.importorskip("ml_dtypes", reason="--dtype bf16 needs ml_dtypes")
    table = tmp_path / "nd.md"
    argv = ["--threads", "1", "--budget", "0.02", "--layers", "tcn_d8", "--dtype", dtype, "--markdown", str(table)]
    subprocess.run([sys.executable, script, *argv], check=True, capture_output=True, cwd=tmp_path)
    text = table.read_text()
    assert f"--dtype {dtype}" in text and f"dtype {dtype};" in text
    row = next(line for line in text.splitlines() if line.startswith("| tcn_d8 |")).split(" | ")
    assert row[-3] == "dilation_rows" and row[-2].startswith("conv2d_")
    if dtype == "bf16":
        assert row[7] == "n/a"  # ONNX Runtime has no bfloat16 Conv on the CPU


def test_progress_bar_on_a_terminal():
    import io

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    progress = bench.Progress(4, stream)
    progress.update(1, "layer a")
    progress.log("a message")
    progress.update(4, "done")
    progress.close()
    text = stream.getvalue()
    assert "[#######.....................] 1/4" in text
    assert "\ra message\n" in text.replace(" " * len("[#######.....................] 1/4"), "")
    assert text.endswith("\r")  # the bar is wiped at the end


@pytest.mark.parametrize("matplotlib", [False, True], ids=["builtin_png", "matplotlib"])
def test_demo_writes_pictures(tmp_path, capsys, matplotlib):
    if matplotlib:
        pytest.importorskip("matplotlib")
    args = ["demo", "-o", str(tmp_path)] + ([] if matplotlib else ["--no-matplotlib"])
    assert _cli.main(args) == 0
    written = capsys.readouterr().out.split()
    names = [os.path.basename(p) for p in written]
    assert "feature_maps.png" in names and "sliding.png" in names
    assert len([n for n in names if n.startswith("feature_") and n != "feature_maps.png"]) == len(_demo.kernel_bank())
    for path in written:
        assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    edge = _png.read_png(tmp_path / "feature_vertical_edge.png")
    assert edge.shape == (128, 128)


def test_demo_reads_a_given_png(tmp_path, capsys):
    picture = np.zeros((20, 30), np.uint8)
    picture[5:15, 10:20] = 255
    _png.write_png(str(tmp_path / "square.png"), picture)
    assert _cli.main(["demo", str(tmp_path / "square.png"), "-o", str(tmp_path / "out"), "--no-matplotlib"]) == 0
    corner = _png.read_png(tmp_path / "out" / "feature_corner.png")
    assert corner.shape == (20, 30)
    # The corner kernel answers at the square's four corners, not along its edges.
    strongest = np.argwhere(np.abs(corner.astype(int) - 128) > 100)
    assert len(strongest) > 0
    rows, cols = set(strongest[:, 0]), set(strongest[:, 1])
    assert rows <= {4, 5, 14, 15} and cols <= {9, 10, 19, 20}


def test_feature_maps_are_one_conv2d_call():
    image = _demo.synthetic_scene(32)
    kernels = _demo.kernel_bank()
    maps = _demo.feature_maps(image, kernels)
    assert maps.shape == (len(kernels), 32, 32)
    # Map i is kernel i spanning all three channels, luma-weighted: check one against a loop.
    volume = image.transpose(2, 0, 1).astype(np.float32) / 255
    luma = np.tensordot(np.array([0.299, 0.587, 0.114], np.float32), volume, axes=1)
    k = kernels["Sobel x"]
    padded = np.pad(luma, 1, mode="edge")
    expect = sum(k[i, j] * padded[i:i + 32, j:j + 32] for i in range(3) for j in range(3))
    np.testing.assert_allclose(maps[list(kernels).index("Sobel x")], expect, atol=1e-5)


def test_sliding_cases_follow_the_formula():
    sizes = [(stride, padding, size) for _, stride, padding, size, _ in _demo.sliding_outputs()]
    assert sizes == [(1, 0, 3), (2, 0, 2), (1, 1, 5)]


def test_shipped_sample_image_is_the_synthetic_scene():
    shipped = _png.read_png(_demo.sample_image_path())
    np.testing.assert_array_equal(shipped, _demo.synthetic_scene())


@pytest.mark.parametrize("shape", [(7, 5), (4, 6, 3), (3, 2, 4)])
def test_png_round_trip(tmp_path, shape):
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    _png.write_png(str(tmp_path / "x.png"), image)
    np.testing.assert_array_equal(_png.read_png(tmp_path / "x.png"), image)


def test_png_reads_filtered_rows_from_other_writers(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(1)
    # A smooth picture with noise: Pillow's encoder picks sub/up/average/paeth filters for it.
    base = np.add.outer(np.arange(40), np.arange(50)).astype(np.int64)
    image = ((base[..., None] * [3, 5, 7] + rng.integers(0, 4, (40, 50, 3))) % 256).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "pil.png", optimize=True)
    np.testing.assert_array_equal(_png.read_png(tmp_path / "pil.png"), image)


def test_png_errors():
    with pytest.raises(TypeError, match="uint8.*got dtype float32"):
        _png.encode_png(np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match=r"got shape \(2, 2, 2\)"):
        _png.encode_png(np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(ValueError, match="not a PNG"):
        _png.decode_png(b"GIF89a...")


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        _cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"cppconv {cppconv.__version__}"


@pytest.mark.parametrize("what", ["missing", "not_png", "unwritable"])
def test_demo_errors_are_one_line(tmp_path, what):
    # Run as the installed command would be, so that a traceback would show.
    image, out = str(tmp_path / "missing.png"), str(tmp_path / "out")
    if what == "not_png":
        image = str(tmp_path / "text.png")
        open(image, "w").write("not a picture")
    elif what == "unwritable":
        image = _demo.sample_image_path()
        out = str(tmp_path / "a_file")
        open(out, "w").close()  # the output folder is a file
    p = subprocess.run([sys.executable, "-m", "cppconv", "demo", image, "-o", out, "--no-matplotlib"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cppconv demo: error: "), p.stderr
    assert "Traceback" not in p.stderr


def test_demo_without_matplotlib_says_how_to_get_labels(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(_demo, "_has_matplotlib", lambda: False)
    assert _cli.main(["demo", "-o", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "no titles or labels" in err and 'pip install "cppconv[plot]"' in err
    assert _cli.main(["demo", "-o", str(tmp_path), "--no-matplotlib"]) == 0  # asked for: no note
    assert capsys.readouterr().err == ""
