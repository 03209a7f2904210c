// expect: gs::inexact-growth
data text {
    text = "../fixtures/small.txt"
}

model base = gpt {
    context = 16
    d_model = 32
    heads = 2
    layers = 2
    norm = layernorm
}

grow base {
    stage small: train 10 steps
    grow d_model * 2 by isometric(split = uneven)
    stage big: train 10 steps
}
