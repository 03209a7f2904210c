// expect: gs::syntax
data text {
    text = "../fixtures/small.txt"
}

model data = gpt {
    context = 16
    d_model = 32
    heads = 2
    layers = 2
}

grow data {
    stage main: train 10 steps
}
