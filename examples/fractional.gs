// Fractional growth of an nGPT: start at a quarter of the final size and
// grow in small exact steps — width ×1.25 at a time, FFN, heads (duplicated:
// nGPT's norms make that exact), depth, and context — then compare with the
// final shape trained from scratch on the same number of tokens.

data shakespeare {
    text = "../data/tinyshakespeare.txt"
    val = 10%
}

model base = ngpt {
    context = 128
    d_model = 128
    head_dim = 32
    layers = 3 // 4 heads
    ffn = 3 * d_model
}

train {
    optimizer = adamw(lr = 3e-3, betas = (0.9, 0.95), weight_decay = 0)
    schedule = cosine(warmup = 0 steps, min = 0.1)
    batch = 16 sequences
    seed = 1
    eval every 200 steps on 20 batches
    checkpoint every 500 steps
}

grow base {
    stage s1: train 600 steps

    grow d_model * 1.25 by isometric(split = uneven) // 128 → 160
    grow ffn to 3 * d_model by copy, optimizer = map // 384 → 480
    stage s2: train 600 steps

    grow d_model * 1.25 by isometric(split = uneven), noise = 1e-3 // 160 → 200
    grow heads * 2 by copy // 4 → 8 heads of 32
    grow layers + 1 at [2] by identity, rewarm = 50 steps
    stage s3: train 600 steps

    grow d_model to 256 by isometric(split = uneven) // 200 → 256
    grow ffn to 3 * d_model by zero
    grow context to 256 // long context late
    set batch = 8 sequences // same tokens per step
    stage s4: train until val_loss <= 1.45 or 1200 steps
}

compare scratch = scratch(base, same tokens)
