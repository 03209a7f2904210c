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
    optimizer = adamw(lr = 1e-3)
    on_nonfinite = retry
}

grow base {
    stage main: train 10 steps
}
