// expect: gs::growth-before-first-stage
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
    grow d_model * 2
    stage main: train 10 steps
}
