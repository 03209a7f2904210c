// Workload G of gsc bench (performance.md) as a .gs file: a GPT-2-style
// model (LayerNorm, GELU, tied head) of 12 layers, d_model 768, context 1024,
// 8 sequences a step. For views of the plan such as
// `gsc compile bench/workloads/G.gs --ranks 8 --set train.batch=64`.

data text {
    text = "../../data/tinyshakespeare.txt"
}

model G = gpt {
    context = 1024
    d_model = 768
    heads = 12
    layers = 12
    norm = layernorm
    activation = gelu
    tied = true
}

train {
    optimizer = adamw(lr = 2e-3, betas = (0.9, 0.95), weight_decay = 0.1)
    batch = 8 sequences
    clip = 1.0
    log every 10 steps
}

grow G {
    stage train: train 1000 steps
}
