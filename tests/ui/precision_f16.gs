// expect: gs::unsupported
data text {
    text = "../fixtures/small.txt"
}

model base = gpt {
    context = 16
    d_model = 32
    heads = 2
    layers = 2
}

train {
    precision = f16
}

grow base {
    stage main: train 10 steps
}
