// expect: gs::value
data text {
    text = "../fixtures/small.txt"
}

model base = ngpt {
    context = 16
    d_model = 32
    head_dim = 16
    layers = 2
}

grow base {
    stage small: train 10 steps
    grow heads + 1 by ramp(0 steps)
    stage big: train 10 steps
}
