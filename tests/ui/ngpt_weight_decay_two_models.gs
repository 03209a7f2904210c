// expect: gs::ngpt
data text {
    text = "../fixtures/small.txt"
}

model a = ngpt {
    context = 16
    d_model = 32
    heads = 2
    layers = 2
}

model b = ngpt {
    context = 16
    d_model = 32
    heads = 2
    layers = 1
}

train {
    optimizer = adamw(lr = 1e-3, weight_decay = 0.1)
}

grow a {
    stage main: train 10 steps
}

grow b {
    stage main: train 10 steps
}
