// expect: gs::divisibility
data text {
    text = "../fixtures/small.txt"
}

model base = gpt {
    context = 16
    d_model = 30
    heads = 2
    layers = 2
}

grow base {
    stage main: train 10 steps
}
