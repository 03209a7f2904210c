// expect: gs::fractional-growth
data text {
    text = "../fixtures/small.txt"
}

model base = gpt {
    context = 16
    d_model = 36
    heads = 2
    layers = 2
}

grow base {
    stage small: train 10 steps
    grow d_model * 1.3
    stage big: train 10 steps
}
