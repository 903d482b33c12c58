#!/usr/bin/env python3
"""Benchmark cppconv.dask on a LocalCluster against the in-memory call on the same machine (issue 16).

    python bench/bench_dask.py [--small] [--workers 2] [--threads-per-worker 1] [--markdown F]

Workloads (the issue's; --small shrinks them to a check that runs in seconds):
  - a 20,000 x 20,000 float32 image filtered with a 5x5 kernel ("same" padding), 2048 x 2048 chunks;
  - the same image as 3 channels through a 3 -> 16-channel 3x3 convolution, same chunks;
  - 10,000 224 x 224 RGB images through a Conv2d stack (cppconv.dask.apply), 64 images a chunk.

The in-memory side runs each workload in this process with as many threads as the cluster has
cores (workers x threads per worker), the image workloads as one call, the batch in the same
64-image batches; the cluster side computes each output chunk on the workers and keeps only a
checksum of it (the outputs are tens of GB).  "per core" is the cluster's throughput over the
in-memory one (the issue's target: at least 85 %); "peak RSS" is each worker's peak resident
memory, against the bytes of one input and one output chunk.
"""

from __future__ import annotations

import argparse
import logging
import resource
import time
from typing import Any, Callable, Dict, List

import numpy as np

import cppconv


def _peak_rss_bytes() -> int:
    # Linux reports kilobytes, macOS bytes.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) * (1 if peak > 2**32 else 1024)


def _checksum(block: np.ndarray) -> np.ndarray:
    return np.full((1,) * block.ndim, float(block.sum(dtype=np.float64)))


def _network(seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)

    def weights(k: int, c: int) -> np.ndarray:
        return (rng.standard_normal((k, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)

    layers = [
        cppconv.Conv2d(weights(16, 3), padding=1, activation="relu"),
        cppconv.Conv2d(weights(32, 16), stride=2, padding=1, activation="relu"),
        cppconv.Conv2d(weights(32, 32), padding=1, activation="relu"),
    ]
    return _Stack(layers)


class _Stack:
    """A picklable Conv2d stack that takes num_threads, as cppconv.dask.apply passes it."""

    def __init__(self, layers: List[Any]):
        self.layers = layers

    def __call__(self, x: np.ndarray, num_threads: Any = None) -> np.ndarray:
        for layer in self.layers:
            x = layer(x, num_threads=num_threads)
        return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="small sizes: a check that the script works")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads-per-worker", type=int, default=1)
    parser.add_argument("--markdown", help="also write the table to this file")
    args = parser.parse_args()

    import dask.array as da
    import distributed

    import cppconv.dask as cd

    size, chunk, images, image, batch = (20_000, 2048, 10_000, 224, 64) if not args.small else (1024, 256, 128, 64, 16)
    cores = args.workers * args.threads_per_worker
    rng = np.random.default_rng(0)
    w5 = rng.standard_normal((1, 1, 5, 5)).astype(np.float32)
    w3 = rng.standard_normal((16, 3, 3, 3)).astype(np.float32)
    network = _network()
    rows: List[Dict[str, Any]] = []

    with distributed.LocalCluster(n_workers=args.workers, threads_per_worker=args.threads_per_worker, processes=True,
                                  dashboard_address=None, silence_logs=logging.ERROR) as cluster, \
            distributed.Client(cluster) as client:

        def cluster_seconds(y: Any) -> float:
            sums = y.map_blocks(_checksum, chunks=tuple((1,) * len(c) for c in y.chunks), dtype=np.float64)
            start = time.perf_counter()
            client.compute(sums, sync=True)
            return time.perf_counter() - start

        workloads = [
            ("5x5 filter", (1, 1, size, size), w5,
             lambda x: cd.conv2d(x, w5, padding="same"),
             lambda x: cppconv.conv2d(x, w5, padding="same", num_threads=cores)),
            ("3->16 3x3 conv", (1, 3, size, size), w3,
             lambda x: cd.conv2d(x, w3, padding=1),
             lambda x: cppconv.conv2d(x, w3, padding=1, num_threads=cores)),
        ]
        for name, shape, weight, lazy, eager in workloads:
            # Each worker makes its own chunks: the image never passes through this process.
            x = da.random.default_rng(1).random(shape, dtype=np.float32, chunks=(1, shape[1], chunk, chunk))
            x = x.persist()
            distributed.wait(x)
            seconds = cluster_seconds(lazy(x))
            del x
            local = np.random.default_rng(1).random(shape, dtype=np.float32)
            eager(local[..., :64, :64])  # warm-up
            start = time.perf_counter()
            eager(local)
            in_memory = time.perf_counter() - start
            del local
            out_chunk = weight.shape[0] * chunk * chunk * 4
            rows.append({"workload": name, "in_memory_s": in_memory, "cluster_s": seconds,
                         "chunk_bytes": shape[1] * chunk * chunk * 4 + out_chunk})

        x = da.random.default_rng(2).random((images, 3, image, image), dtype=np.float32,
                                            chunks=(batch, 3, image, image))
        x = x.persist()
        distributed.wait(x)
        seconds = cluster_seconds(cd.apply(network, x))
        del x
        local = np.random.default_rng(2).random((batch, 3, image, image), dtype=np.float32)
        network(local, num_threads=cores)  # warm-up
        start = time.perf_counter()
        for _ in range(images // batch):
            network(local, num_threads=cores)
        in_memory = (time.perf_counter() - start) * images / (images // batch * batch)
        rows.append({"workload": f"{images} {image}x{image} images, Conv2d stack", "in_memory_s": in_memory,
                     "cluster_s": seconds, "chunk_bytes": batch * (3 + 16 + 16 + 32) * image * image * 4})
        peaks = client.run(_peak_rss_bytes)

    lines = [f"LocalCluster of {args.workers} worker(s) x {args.threads_per_worker} thread(s) against one in-memory "
             f"call with {cores} thread(s){' (--small)' if args.small else ''}",
             "",
             "| workload | in-memory s | cluster s | per core vs in-memory | chunk MB (in + out) |",
             "|---|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['workload']} | {row['in_memory_s']:.2f} | {row['cluster_s']:.2f} | "
                     f"{row['in_memory_s'] / row['cluster_s']:.0%} | {row['chunk_bytes'] / 2**20:.1f} |")
    lines.append("")
    lines.append("peak RSS per worker (MB): " + ", ".join(f"{peak / 2**20:.0f}" for peak in peaks.values()))
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
