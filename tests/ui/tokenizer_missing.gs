// expect: gs::tokenizer-missing
data text {
    text = "../fixtures/small.txt"
    tokenizer = "../fixtures/none/tokenizer.json"
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
