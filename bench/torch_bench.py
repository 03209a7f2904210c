#!/usr/bin/env python3
"""PyTorch peer for gsc's training benchmark (design/performance.md).

A GPT-2-style decoder of sizes S and M (pre-LN, learned positions, GELU MLP
4x, causal scaled_dot_product_attention, tied embeddings), trained with AdamW
(lr 2e-3, betas 0.9/0.95, weight decay 0.1 on matrices) in f32 on random
byte tokens, batch 16 x context 256; and G, GPT-2 small's shape (12 layers,
d 768, batch 8 x context 1024), for GPUs (--device cuda). Prints one JSON
line per model: median ms/step over the timed steps after warm-up,
tokens/s, MFU against --peak-gflops (default: the reference CPU's 548) with
FLOPs/token = 6*N_non_embedding + 12*layers*d*ctx, and the peak RSS of a
process that trained only that model.

With --bf16 the forward runs under autocast to bfloat16 (the matrix
products in bf16, master weights and optimizer state f32): the peer of
gsc's `precision = bf16`.

    python3 bench/torch_bench.py [--models S M G] [--steps 10] [--warmup 3] [--device cuda] [--bf16]
"""

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

SIZES = {
    "S": dict(layers=4, d=256, heads=4, context=256, batch=16),
    "M": dict(layers=6, d=384, heads=6, context=256, batch=16),
    "G": dict(layers=12, d=768, heads=12, context=1024, batch=8),
}
VOCAB = 256
PEAK_GFLOPS = 548.0  # 2 Zen 5 cores with AVX-512, design/performance.md


def build_model(torch, layers, d, heads, context):
    nn = torch.nn
    F = torch.nn.functional

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1 = nn.LayerNorm(d)
            self.qkv = nn.Linear(d, 3 * d)
            self.proj = nn.Linear(d, d)
            self.ln2 = nn.LayerNorm(d)
            self.up = nn.Linear(d, 4 * d)
            self.down = nn.Linear(4 * d, d)

        def forward(self, x):
            b, t, _ = x.shape
            q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
            q, k, v = (z.view(b, t, heads, d // heads).transpose(1, 2) for z in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
            return x + self.down(F.gelu(self.up(self.ln2(x))))

    class Gpt(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(VOCAB, d)
            self.pos = nn.Embedding(context, d)
            self.blocks = nn.ModuleList(Block() for _ in range(layers))
            self.ln_f = nn.LayerNorm(d)
            for name, p in self.named_parameters():
                if p.dim() == 2:
                    nn.init.normal_(p, std=0.02)
                elif name.endswith("bias"):
                    nn.init.zeros_(p)

        def forward(self, idx, targets):
            t = idx.shape[1]
            x = self.tok(idx) + self.pos(torch.arange(t, device=idx.device))
            for block in self.blocks:
                x = block(x)
            logits = self.ln_f(x) @ self.tok.weight.t()  # tied head
            return F.cross_entropy(logits.view(-1, VOCAB), targets.reshape(-1))

    return Gpt()


def run_one(name, steps, warmup, threads, compile_model, device, peak_gflops, bf16):
    import contextlib
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    size = SIZES[name]
    context, batch = size["context"], size["batch"]
    model = build_model(torch, size["layers"], size["d"], size["heads"], context).to(device)
    params = list(model.parameters())
    n_total = sum(p.numel() for p in params)
    n_emb = model.tok.weight.numel() + model.pos.weight.numel()
    n_non_emb = n_total - n_emb
    flops_per_token = 6 * n_non_emb + 12 * size["layers"] * size["d"] * context
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    try:
        opt = torch.optim.AdamW(groups, lr=2e-3, betas=(0.9, 0.95), fused=True)
        fused = True
    except (RuntimeError, TypeError):
        opt = torch.optim.AdamW(groups, lr=2e-3, betas=(0.9, 0.95))
        fused = False
    step_fn = torch.compile(model) if compile_model else model
    gen = torch.Generator().manual_seed(1)

    times, cpu_times, loss = [], [], float("nan")
    for i in range(warmup + steps):
        tokens = torch.randint(0, VOCAB, (batch, context + 1), generator=gen)
        t0, c0 = time.perf_counter(), time.process_time()
        tokens = tokens.to(device)
        with torch.autocast(device, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            out = step_fn(tokens[:, :-1], tokens[:, 1:])
        out.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss = out.item()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)

    ms = statistics.median(times) * 1e3
    tokens_per_s = batch * context / (ms / 1e3)
    mfu = flops_per_token * tokens_per_s / (peak_gflops * 1e9)
    return {
        "model": name,
        "system": ("pytorch eager" if not compile_model else "pytorch compiled")
        + (" bf16 autocast" if bf16 else ""),
        "precision": "bf16" if bf16 else "f32",
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "context": context,
        "batch": batch,
        "layers": size["layers"],
        "d_model": size["d"],
        "heads": size["heads"],
        "params": n_total,
        "params_non_embedding": n_non_emb,
        "flops_per_token": flops_per_token,
        "ms_per_step": round(ms, 2),
        "ms_per_step_min": round(min(times) * 1e3, 2),
        # Process CPU time: unlike wall time it does not grow while other
        # jobs hold the cores, so with --threads 1 it measures the code alone
        # (with more threads it includes OpenMP's spin-waiting).
        "cpu_ms_per_step": round(statistics.median(cpu_times) * 1e3, 2),
        "tokens_per_s": round(tokens_per_s, 1),
        "mfu": round(mfu, 4),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "steps": steps,
        "warmup": warmup,
        "threads": threads,
        "final_loss": round(loss, 4) if math.isfinite(loss) else None,
        "fused_adamw": fused,
        "compiled": compile_model,
        "torch": torch.__version__,
        "ld_preload": os.environ.get("LD_PRELOAD", ""),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["S", "M"], choices=sorted(SIZES))
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--peak-gflops", type=float, default=PEAK_GFLOPS, help="for MFU")
    ap.add_argument("--bf16", action="store_true", help="autocast the forward to bfloat16")
    ap.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.single:
        (name,) = args.models
        line = run_one(name, args.steps, args.warmup, args.threads, args.compile, args.device,
                       args.peak_gflops, args.bf16)
        print(json.dumps(line), flush=True)
        return
    # One process per model, so each peak RSS is that model's alone.
    for name in args.models:
        cmd = [sys.executable, os.path.abspath(__file__), "--single", "--models", name,
               "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--threads", str(args.threads), "--device", args.device,
               "--peak-gflops", str(args.peak_gflops)] + (["--compile"] if args.compile else []) \
            + (["--bf16"] if args.bf16 else [])
        done = subprocess.run(cmd, check=False)
        if done.returncode != 0:
            sys.exit(f"torch_bench: model {name} failed (exit {done.returncode})")


if __name__ == "__main__":
    main()
