#!/usr/bin/env python3
"""Benchmark cppconv.dask on a LocalCluster against the in-memory call on the same machine (issue 16).

    python bench/bench_dask.py [--small] [--workers 2] [--threads-per-worker 1] [--repeat 3] [--images N]
                               [--markdown F]

Workloads (the issue's; --small shrinks them to a check that runs in seconds):
  - a 20,000 x 20,000 float32 image filtered with a 5x5 kernel ("same" padding), 2048 x 2048 chunks;
  - the same image as 3 channels through a 3 -> 16-channel 3x3 convolution, same chunks;
  - 10,000 224 x 224 RGB images through a Conv2d stack (cppconv.dask.apply), 64 images a chunk
    (--images N runs the first N of them on both sides: the whole set is ~3.9 TFLOP a side).

Cluster side: the workers make each input chunk themselves (a random chunk, as a chunked
store would hand it over) and keep one element of each output chunk (the outputs are tens of
GB), so nothing but the graph passes through this process and a worker holds only the chunks
in flight.  The same graph without the convolution (make the input chunk, keep one element)
is timed too: "net" is the cluster's time less that, the part of the work the in-memory call
also does.  Each repeat runs the cluster and then the in-memory call, so both see the same
load; the tables give medians over the repeats and their range.

In-memory side: one call in this process with as many threads as the cluster has cores
(workers x threads per worker) on an array made beforehand; the batch in the same 64-image
batches.  The filters run twice: the plain call, whose fresh output pays first-touch page faults
(on the VM of bench/results/dask_2workers.md, most of the plain call's time), and the same call
into an output made beforehand ("into a buffer": the convolution alone; the cluster's chunks
pay their faults).  The 3 -> 16 output of the whole image (25.6 GB) does not fit in this
machine's memory, so that call runs on a band of the image's full width (--band rows) and its
time is scaled by the pixels.  "per core" is the in-memory time over the cluster's at equal
cores (the issue's target: at least 85 %).  Peak RSS: each worker's peak resident memory in the workload
(Linux: VmHWM, reset before each); less its resident memory before the workload, in units of
one input plus one output chunk.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import resource
import statistics
import subprocess
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

import cppconv


def _peak_rss_bytes() -> int:
    """This process's peak resident memory since the last _reset_peak (Linux's VmHWM), else
    since it started."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux reports kilobytes, macOS bytes
    return int(peak) * (1 if peak > 2**32 else 1024)


def _reset_peak() -> bool:
    """Start a new peak (Linux >= 4.0: writing 5 to clear_refs resets VmHWM to the current RSS)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def _first(block: np.ndarray) -> np.ndarray:
    """One element of a block, so that a chunk's result is computed but never moves; a copy, as
    a view (even a contiguous one) would keep the whole block alive on its worker."""
    return block[(slice(0, 1),) * block.ndim].copy()


def _warm_up() -> None:
    """Import cppconv.dask (and dask.array) and run one small convolution, so that loading them,
    the kernels and their threads is not counted in a worker's peak memory."""
    import cppconv.dask

    cppconv.conv2d(np.ones((1, 3, 8, 8), np.float32), np.ones((16, 3, 3, 3), np.float32), padding=1)


def _network(seed: int = 0) -> _Stack:
    rng = np.random.default_rng(seed)

    def weights(k: int, c: int) -> np.ndarray:
        return (rng.standard_normal((k, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)

    return _Stack([
        cppconv.Conv2d(weights(16, 3), padding=1, activation="relu"),
        cppconv.Conv2d(weights(32, 16), stride=2, padding=1, activation="relu"),
        cppconv.Conv2d(weights(32, 32), padding=1, activation="relu"),
    ])


class _Stack:
    """A picklable Conv2d stack that takes num_threads, as cppconv.dask.apply passes it."""

    def __init__(self, layers: List[Any]):
        self.layers = layers

    def __call__(self, x: np.ndarray, num_threads: Any = None) -> np.ndarray:
        for layer in self.layers:
            x = layer(x, num_threads=num_threads)
        return x


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def _spread(values: Sequence[float], fmt: str) -> str:
    med = statistics.median(values)
    if len(values) == 1:
        return format(med, fmt)
    return f"{format(med, fmt)} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="small sizes: a check that the script works")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads-per-worker", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--band", type=int, default=4096, help="rows of the in-memory 3 -> 16 call (see above)")
    parser.add_argument("--only", help="run only the workloads whose name contains this")
    parser.add_argument("--images", type=int, help="images of the batch workload (default: 10,000; --small: 128)")
    parser.add_argument("--markdown", help="also write the table to this file")
    args = parser.parse_args()

    import dask.array as da
    import distributed

    import cppconv.dask as cd

    size, chunk, images, image, batch = (20_000, 2048, 10_000, 224, 64) if not args.small else (1024, 256, 128, 64, 16)
    images = args.images or images
    band = min(args.band, size)
    cores = args.workers * args.threads_per_worker
    rng = np.random.default_rng(0)
    w5 = rng.standard_normal((1, 1, 5, 5)).astype(np.float32)
    w3 = rng.standard_normal((16, 3, 3, 3)).astype(np.float32)
    network = _network()
    rows: List[Dict[str, Any]] = []
    started = datetime.datetime.now(datetime.timezone.utc)
    loads = [os.getloadavg()]

    with distributed.LocalCluster(n_workers=args.workers, threads_per_worker=args.threads_per_worker, processes=True,
                                  dashboard_address=None, silence_logs=logging.ERROR) as cluster, \
            distributed.Client(cluster) as client:

        def cluster_seconds(y: Any) -> float:
            kept = y.map_blocks(_first, chunks=tuple((1,) * len(c) for c in y.chunks), dtype=y.dtype)
            start = time.perf_counter()
            client.compute(kept, sync=True)
            return time.perf_counter() - start

        def timed(call: Callable[[], Any]) -> float:
            start = time.perf_counter()
            call()
            return time.perf_counter() - start

        def in_memory_filter(shape: Sequence[int],
                             eager: Callable[..., Any]) -> Callable[[], Tuple[float, Optional[float]]]:
            rows_run = min(band, shape[2]) if shape[1] > 1 else shape[2]
            local = np.random.default_rng(1).random((1, shape[1], rows_run, shape[3]), dtype=np.float32)
            buffer = eager(local)  # warm-up, and the output that the second timing writes into
            scale = shape[2] / rows_run
            return lambda: (timed(lambda: eager(local)) * scale, timed(lambda: eager(local, out=buffer)) * scale)

        def in_memory_batches() -> Callable[[], Tuple[float, Optional[float]]]:
            local = np.random.default_rng(2).random((batch, 3, image, image), dtype=np.float32)
            network(local, num_threads=cores)  # warm-up
            runs = images // batch

            def run() -> None:
                for _ in range(runs):
                    network(local, num_threads=cores)
            return lambda: (timed(run) * images / (runs * batch), None)

        client.run(_warm_up)
        workloads = [
            (f"{size}x{size} image, 5x5 filter", (1, 1, size, size), (1, 1, chunk, chunk), w5.shape[0],
             lambda x: cd.conv2d(x, w5, padding="same"),
             lambda: in_memory_filter((1, 1, size, size),
                                      lambda x, **kw: cppconv.conv2d(x, w5, padding="same", num_threads=cores, **kw))),
            (f"{size}x{size}x3 image, 3->16 3x3 conv", (1, 3, size, size), (1, 3, chunk, chunk), w3.shape[0],
             lambda x: cd.conv2d(x, w3, padding=1),
             lambda: in_memory_filter((1, 3, size, size),
                                      lambda x, **kw: cppconv.conv2d(x, w3, padding=1, num_threads=cores, **kw))),
            (f"{images} {image}x{image} images, Conv2d stack", (images, 3, image, image), (batch, 3, image, image), 32,
             lambda x: cd.apply(network, x), in_memory_batches),
        ]
        for name, shape, chunks, out_channels, lazy, eager in workloads:
            if args.only and args.only not in name:
                continue
            idle = client.run(_rss_bytes)
            client.run(_reset_peak)
            x = da.random.default_rng(1).random(shape, dtype=np.float32, chunks=chunks)
            y = lazy(x)
            cluster_s: List[float] = []
            baseline_s: List[float] = []
            memory_s: List[float] = []
            buffer_s: List[float] = []
            ratios_net: List[float] = []
            ratios_buffer: List[float] = []
            ratios_gross: List[float] = []
            run_in_memory = eager()
            for _ in range(args.repeat):
                baseline_s.append(cluster_seconds(x))
                cluster_s.append(cluster_seconds(y))
                plain, into_buffer = run_in_memory()
                memory_s.append(plain)
                net_s = cluster_s[-1] - baseline_s[-1] if cluster_s[-1] > baseline_s[-1] else float("nan")
                ratios_gross.append(plain / cluster_s[-1])
                ratios_net.append(plain / net_s)
                if into_buffer is not None:
                    buffer_s.append(into_buffer)
                    ratios_buffer.append(into_buffer / net_s)
            del run_in_memory
            peaks = client.run(_peak_rss_bytes)
            out_shape = y.chunks
            in_chunk = int(np.prod(chunks)) * 4
            out_chunk = max(out_shape[0]) * out_channels * int(np.prod([max(c) for c in out_shape[2:]])) * 4
            rows.append({"workload": name, "tasks": len(y.__dask_graph__()), "chunks": y.npartitions,
                         "in_memory_s": memory_s, "buffer_s": buffer_s, "cluster_s": cluster_s,
                         "input_s": baseline_s, "net": ratios_net, "net_buffer": ratios_buffer,
                         "gross": ratios_gross, "chunk_bytes": in_chunk + out_chunk,
                         "peaks": list(peaks.values()), "idle": list(idle.values())})
            loads.append(os.getloadavg())
            print(name, "done", flush=True)

    mb = 2**20
    lines = [f"LocalCluster of {args.workers} worker(s) x {args.threads_per_worker} thread(s) against one in-memory "
             f"call with {cores} thread(s){' (--small)' if args.small else ''}; {args.repeat} repeat(s), "
             f"median (min-max)",
             "",
             f"CPU: {_cpu_model()}, {os.cpu_count()} CPUs; {started:%Y-%m-%d %H:%M} UTC; load average (1, 5, 15 min) "
             f"at start {loads[0][0]:.2f}, {loads[0][1]:.2f}, {loads[0][2]:.2f}, after each workload "
             + "; ".join(f"{a:.2f}, {b:.2f}, {c:.2f}" for a, b, c in loads[1:]),
             "",
             "| workload | in-memory s | into a buffer s | cluster s | of which input s | per core, net | "
             "net, vs into a buffer | per core, gross |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]

    def percent(values: Sequence[float]) -> str:
        return f"{_spread([v * 100 for v in values], '.0f')} %" if values else "-"

    for row in rows:
        lines.append(f"| {row['workload']} | {_spread(row['in_memory_s'], '.2f')} | "
                     f"{_spread(row['buffer_s'], '.2f') if row['buffer_s'] else '-'} | "
                     f"{_spread(row['cluster_s'], '.2f')} | {_spread(row['input_s'], '.2f')} | "
                     f"{percent(row['net'])} | {percent(row['net_buffer'])} | {percent(row['gross'])} |")
    lines += ["", "| workload | chunks | tasks | chunk MB (in + out) | worker RSS idle MB | worker peak RSS MB | "
                  "(peak - idle) / chunk |", "|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['workload']} | {row['chunks']} | {row['tasks']} | {row['chunk_bytes'] / mb:.0f} | "
                     + ", ".join(f"{p / mb:.0f}" for p in row["idle"]) + " | "
                     + ", ".join(f"{p / mb:.0f}" for p in row["peaks"]) + " | "
                     + ", ".join(f"{(p - i) / row['chunk_bytes']:.1f}" for p, i in zip(row["peaks"], row["idle"]))
                     + " |")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
