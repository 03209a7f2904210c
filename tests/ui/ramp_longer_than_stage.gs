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

grow base {
    stage small: train 10 steps
    grow heads + 1 by ramp(20 steps)
    stage big: train 10 steps
}
