// expect: gs::ngpt
data text {
    text = "../fixtures/small.txt"
}

model base = ngpt {
    context = 16
    d_model = 32
    heads = 2
    layers = 2
    tied = true
}

grow base {
    stage main: train 10 steps
}
