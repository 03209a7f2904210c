// The doubling baseline (HyperCloning, Samragh et al. 2024): a GPT with
// LayerNorm, whose width can only grow exactly by whole factors, doubled once
// by copying every unit. Compared with the same final model from scratch at
// equal FLOPs, and with gsc's own built-in doubling baseline.

data shakespeare {
    text = "../data/tinyshakespeare.txt"
    val = 10%
}

model base = gpt {
    context = 256
    d_model = 128
    heads = 2
    layers = 4
    ffn = 4 * d_model
    norm = layernorm
    activation = gelu
}

train {
    optimizer = adamw(lr = 2e-3, betas = (0.9, 0.95), weight_decay = 0.1)
    schedule = cosine(warmup = 100 steps, min = 0.1)
    batch = 16 sequences
    seed = 1
    eval every 250 steps on 20 batches
    checkpoint every 1000 steps
}

grow base {
    stage half: train 1500 steps
    grow d_model * 2 by copy // HyperCloning: [h; h], readers / 2
    grow heads * 2 by copy
    grow ffn * 2 by copy
    stage full: train 1500 steps
}

compare scratch = scratch(base, same flops)

compare hyper = doubling(base, same flops, at = 50%)
