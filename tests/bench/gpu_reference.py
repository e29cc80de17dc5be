"""The reference figures of a GPU, measured with PyTorch the way the fixtures' burn.json was:
a device-to-device copy of 4 GiB (bytes read + written) and a bf16 GEMM 8192^3 repeated for
SECONDS, each product timed on its own and compared bit for bit with the first. Prints JSON.

    python3 tests/bench/gpu_reference.py [SECONDS]
"""

import json
import sys
import time

import torch


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0
    dev = torch.device("cuda:0")
    out = {"name": torch.cuda.get_device_name(dev), "torch": torch.__version__}

    n = 4 << 30
    src = torch.empty(n, dtype=torch.uint8, device=dev)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    reps = 20
    start.record()
    for _ in range(reps):
        dst.copy_(src)
    end.record()
    torch.cuda.synchronize()
    out["copy_tb_s"] = 2 * n * reps / (start.elapsed_time(end) / 1e3) / 1e12
    del src, dst

    size = 8192
    gen = torch.Generator(device=dev).manual_seed(1)
    a = torch.randn(size, size, device=dev, dtype=torch.bfloat16, generator=gen)
    b = torch.randn(size, size, device=dev, dtype=torch.bfloat16, generator=gen)
    first = a @ b
    torch.cuda.synchronize()
    flop = 2 * size**3
    rates, mismatches = [], 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and len(rates) < 1_000_000:
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        c = a @ b
        e.record()
        e.synchronize()
        rates.append(flop / (s.elapsed_time(e) / 1e3) / 1e12)
        mismatches += int(not torch.equal(c, first))
    rates.sort()
    out.update(
        gemm_products=len(rates),
        gemm_p50_tflop_s=rates[len(rates) // 2],
        gemm_p05_tflop_s=rates[len(rates) // 20],
        gemm_max_tflop_s=rates[-1],
        gemm_mismatches=mismatches,
        gemm_seconds=seconds,
    )
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
