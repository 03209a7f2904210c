// The quick experiment: does gradual growth reach the from-scratch loss of
// a small GPT with less compute? Tiny Shakespeare, one seed, six runs that
// share the data order and the LR schedule (warmup-stable-decay):
//
//   scratch   the final shape (d_model 64, 2 layers, 2 heads of 32, FFN
//             256, context 128: 115k parameters) from scratch, 1,200 steps
//             = 2.5M tokens, 21 tokens per parameter (compute-optimal);
//   gradual   from a quarter of its size (d_model 40, 1 layer, 1 head),
//             grown in fractional steps on every axis, early;
//   context   the same, with the context grown 32 → 64 → 128 too;
//   plateau   the same growth steps, after the small model has plateaued;
//   late      one late depth expansion: 1 layer at the final width for 80 %
//             of the budget, then a second layer;
//   doubling  half the final width, doubled once by HyperCloning at 50 %.
//
// Every run gets the same FLOPs (1.94e12, every stage charged): `gsc report`
// says where each growth run reached scratch's final loss (and within 0.5 %
// of it), if it did, and its loss at equal compute. About 4 minutes on two
// cores:
//
//   ./scripts/experiment examples/experiments/quick.gs

data shakespeare {
    text = "../../data/tinyshakespeare.txt"
    val = 10%
}

model gradual = gpt {
    context = 128
    d_model = 40
    heads = 1
    head_dim = 32
    layers = 1
    ffn = 4 * d_model
}

model context = gpt {
    context = 32
    d_model = 40
    heads = 1
    head_dim = 32
    layers = 1
    ffn = 4 * d_model
}

model plateau = gpt {
    context = 128
    d_model = 40
    heads = 1
    head_dim = 32
    layers = 1
    ffn = 4 * d_model
}

model late = gpt {
    context = 128
    d_model = 64
    head_dim = 32
    layers = 1
}

train {
    optimizer = adamw(lr = 2e-3, betas = (0.9, 0.95), weight_decay = 0.1)
    schedule = wsd(warmup = 2%, decay = 20%, min = 0.1)
    batch = 16 sequences
    seed = 1
    eval every 50 steps on 10 batches
    checkpoint every 500 steps
    log every 50 steps
}

grow gradual {
    stage s1: train 1e11 flops
    grow d_model * 1.25 // 40 → 50
    grow ffn to 4 * d_model
    stage s2: train 1.2e11 flops
    grow d_model to 64
    grow ffn to 4 * d_model
    grow heads + 1
    stage s3: train 1.5e11 flops
    grow layers + 1
    stage s4: train 1.57e12 flops
}

grow context {
    set batch = 64 sequences // 2048 tokens per step, as every run
    stage s1: train 1e11 flops
    grow d_model * 1.25
    grow ffn to 4 * d_model
    grow context to 64
    set batch = 32 sequences // the same tokens per step
    stage s2: train 1.2e11 flops
    grow d_model to 64
    grow ffn to 4 * d_model
    grow heads + 1
    grow context to 128
    set batch = 16 sequences
    stage s3: train 1.5e11 flops
    grow layers + 1
    stage s4: train 1.57e12 flops
}

grow plateau {
    stage s1: train 6e11 flops
    grow d_model * 1.25
    grow ffn to 4 * d_model
    stage s2: train 1e11 flops
    grow d_model to 64
    grow ffn to 4 * d_model
    grow heads + 1
    stage s3: train 1e11 flops
    grow layers + 1
    stage s4: train 1.14e12 flops
}

grow late {
    stage one_layer: train 1.552e12 flops
    grow layers + 1
    stage two_layers: train 3.88e11 flops
}

compare scratch = scratch(gradual, same flops)

compare doubling = doubling(gradual, same flops, at = 50%)
