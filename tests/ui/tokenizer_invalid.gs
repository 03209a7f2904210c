// expect: gs::tokenizer-invalid
data text {
    text = "../fixtures/small.txt"
    tokenizer = "../fixtures/small.txt"
}

model base = gpt {
    context = 16
    d_model = 32
    heads = 2
    layers = 2
}

grow base {
    stage main: train 10 steps
}
