// expect: gs::cycle
data text {
    text = "../fixtures/small.txt"
}

model base = gpt {
    context = 16
    d_model = ffn / 4
    heads = 2
    layers = 2
    ffn = 4 * d_model
}

grow base {
    stage main: train 10 steps
}
