// expect: gs::unknown-key
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
    stage short: train 10 steps
    set context = 32
    stage long: train 10 steps
}
