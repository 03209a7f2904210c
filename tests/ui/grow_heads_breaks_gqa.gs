// expect: gs::divisibility
data text {
    text = "../fixtures/small.txt"
}

model base = gpt {
    context = 16
    d_model = 32
    heads = 4
    kv_heads = 2
    layers = 2
}

grow base {
    stage small: train 10 steps
    grow heads + 1
    stage big: train 10 steps
}
