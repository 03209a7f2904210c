// expect: gs::missing-key
data text {
    text = "../fixtures/small.txt"
    tokenizer = bpe
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
