// BPE: a byte-level BPE of 512 tokens (GPT-2's pre-tokenizer), trained on
// the training split when the run starts and kept as tokenizer.json in the
// run directory, feeds a small GPT that grows in width and depth. Each token
// holds about two bytes, so a context of 64 tokens sees twice the text of
// smoke.gs's 64 bytes; the validation loss is also logged in bits per byte
// (`val_bpb`), which compares with byte-level runs. Seconds on a laptop CPU.

data shakespeare {
    text = "../data/tinyshakespeare.txt"
    tokenizer = bpe(vocab = 512)
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
    eval every 50 steps on 4 batches
    checkpoint every 100 steps
    log every 10 steps
}

grow tiny {
    stage small: train 200 steps
    grow d_model * 1.5 by isometric(split = uneven) // 32 → 48
    grow layers + 1 at [1] by identity // a new middle block
    stage grown: train 200 steps
}
