// expect: gs::context-too-long
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
    grow context to 128
    stage long: train 10 steps
}
