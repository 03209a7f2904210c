// expect: gs::unknown-name
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
    schedule = constant
}

grow base {
    stage main: train until train_loss <= 2.0 or 100 steps
}
