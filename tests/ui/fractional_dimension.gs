// expect: gs::not-integer
data text {
    text = "../fixtures/small.txt"
}

model base = gpt {
    context = 16
    d_model = 32
    heads = 2
    layers = 2
    ffn = 2.3 * d_model
}

grow base {
    stage main: train 10 steps
}
