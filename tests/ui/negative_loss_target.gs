// expect: gs::value
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
    stage main: train until val_loss <= -1 or 100 steps
}
