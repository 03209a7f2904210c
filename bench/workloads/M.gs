// Workload M of gsc bench (performance.md) as a .gs file: a GPT-2-style
// model (LayerNorm, GELU, tied head) of 6 layers, d_model 384, context 256,
// 16 sequences a step. For views of the plan such as
// `gsc compile bench/workloads/M.gs --ranks 8 --set train.batch=128`.

data text {
    text = "../../data/tinyshakespeare.txt"
}

model M = gpt {
    context = 256
    d_model = 384
    heads = 6
    layers = 6
    norm = layernorm
    activation = gelu
    tied = true
}

train {
    optimizer = adamw(lr = 2e-3, betas = (0.9, 0.95), weight_decay = 0.1)
    batch = 16 sequences
    clip = 1.0
    log every 10 steps
}

grow M {
    stage train: train 1000 steps
}
