"""Time and peak memory of one full-size ×4 upscale on this machine: RealESRGAN_x4plus's architecture (RRDBNet, 64
filters, 23 blocks, growth 32) with random weights, in the engine's tiles, on a 512² image.

    python -m tools.upscale_bench [--dtype float32|bfloat16|float16] [--tile 256] [--size 512] [--device cpu]

Prints one JSON line: seconds (the upscale alone, the model loaded), peak resident memory of the process (MB) and, on
CUDA, the GPU's peak allocation (MB). Run each dtype in its own process: the peak is the process's."""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.upscale_bench")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--tile", type=int, default=288)
    p.add_argument("--overlap", type=int, default=32)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)

    import numpy as np
    import torch
    from PIL import Image

    from engine.models import configure_threads
    from engine.upscaler import RRDBNet, Tiling, Upscaler, run_tiled

    configure_threads()
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    net = RRDBNet(num_feat=64, num_block=23, num_grow_ch=32).eval()
    with torch.no_grad():  # random weights, damped so activations stay finite through 23 blocks
        for param in net.parameters():
            param.mul_(0.1)
    net = net.to(args.device, dtype)
    up = Upscaler(net, 4, "RRDBNet", "built-in", "random", args.device, dtype)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    cpu0 = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
    t0 = time.perf_counter()
    tiles = []
    out = run_tiled(up, image, Tiling(args.tile, args.overlap), on_tile=lambda d, n: tiles.append(n))
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    report = {
        "size": args.size, "out": list(out.size), "dtype": args.dtype, "device": args.device, "tile": args.tile,
        "tiles": tiles[-1], "threads": torch.get_num_threads(), "seconds": round(seconds, 2),
        "cpu_seconds": round(sum(resource.getrusage(resource.RUSAGE_SELF)[:2]) - cpu0, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "rss_before_mb": round(before),
    }  # fmt: skip
    if args.device.startswith("cuda"):
        report["gpu_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
