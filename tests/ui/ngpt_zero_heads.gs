// expect: gs::inexact-growth
data text {
    text = "../fixtures/small.txt"
}

model base = ngpt {
    context = 16
    d_model = 32
    heads = 2
    layers = 2
}

grow base {
    stage small: train 10 steps
    grow heads * 2 by zero
    stage big: train 10 steps
}
