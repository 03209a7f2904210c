// Smoke test: a tiny GPT trains for a few dozen steps, grows its width ×1.25
// and its depth by one block (both exactly: the loss must not jump), and
// trains again. Runs in seconds on a laptop CPU.

data shakespeare {
    text = "../data/tinyshakespeare.txt"
    tokenizer = bytes
    val = 10%
}

model tiny = gpt {
    vocab = tokenizer
    context = 64
    d_model = 32
    heads = 2
    layers = 2
    ffn = 4 * d_model
}

train {
    optimizer = adamw(lr = 3e-3, betas = (0.9, 0.95), weight_decay = 0.1)
    schedule = cosine(warmup = 10 steps, min = 0.1)
    batch = 8 sequences
    seed = 1
    clip = 1.0
    eval every 25 steps on 4 batches
    checkpoint every 50 steps
    log every 5 steps
}

grow tiny {
    stage small: train 40 steps
    grow d_model * 1.25 by isometric(split = uneven) // 32 → 40
    grow layers + 1 at [1] by identity // a new middle block
    stage grown: train 40 steps
}
