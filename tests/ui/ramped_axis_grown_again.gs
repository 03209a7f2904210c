// expect: gs::method
data text {
    text = "../fixtures/small.txt"
}

model base = gpt {
    context = 16
    d_model = 32
    heads = 2
    layers = 2
}

grow base {
    stage small: train 10 steps
    grow ffn * 2 by ramp(5 steps)
    grow ffn * 1.5 by copy
    stage big: train 10 steps
}
