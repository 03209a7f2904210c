// expect: gs::unbounded-stage
data text {
    text = "../fixtures/small.txt"
}

model base = gpt {
    context = 16
    d_model = 32
    heads = 2
    layers = 2
}

train {
    schedule = cosine(warmup = 0 steps)
}

grow base {
    stage main: train until val_loss <= 2.0
}
