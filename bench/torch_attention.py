#!/usr/bin/env python3
"""PyTorch's causal scaled_dot_product_attention, forward and backward, on the
reference models' attention shapes (batch 16, ctx 256, head_dim 64; S: 4
heads, M: 6): the peer of gsc's fused attention kernel (`cargo bench -p
gsc-runtime -- attention`). Prints one JSON line per model with median wall
and process-CPU milliseconds; CPU time is what to compare on a busy machine
when running with one thread.

    python3 bench/torch_attention.py [threads]
"""

import json
import statistics
import sys
import time

import torch


def main():
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    torch.set_num_threads(threads)
    for name, heads in [("S", 4), ("M", 6)]:
        q, k, v = (torch.randn(16, heads, 256, 64, requires_grad=True) for _ in range(3))
        d_o = torch.randn(16, heads, 256, 64)
        fwd, bwd = [], []
        for i in range(12):
            w0, c0 = time.perf_counter(), time.process_time()
            o = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            w1, c1 = time.perf_counter(), time.process_time()
            o.backward(d_o)
            w2, c2 = time.perf_counter(), time.process_time()
            if i >= 2:  # warm-up
                fwd.append((w1 - w0, c1 - c0))
                bwd.append((w2 - w1, c2 - c1))

        def ms(xs, j):
            return round(statistics.median(x[j] for x in xs) * 1e3, 2)

        print(json.dumps({
            "model": name, "heads": heads, "threads": threads,
            "forward_ms": ms(fwd, 0), "forward_cpu_ms": ms(fwd, 1),
            "backward_ms": ms(bwd, 0), "backward_cpu_ms": ms(bwd, 1),
        }), flush=True)


if __name__ == "__main__":
    main()
