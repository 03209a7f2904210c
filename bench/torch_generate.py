"""The peer of `gsc generate`: transformers' greedy generation with its KV
cache, on a model exported by `gsc export --to hf`.

    python3 bench/torch_generate.py EXPORT_DIR --prompt TEXT --tokens N [--rounds R]

Prints one JSON line: the median seconds to generate N tokens (prompt
included) over R rounds, after an untimed warm-up, and the text of the
last round.
"""

import argparse
import json
import statistics
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("--prompt", default="ROMEO:")
    p.add_argument("--tokens", type=int, default=200)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    model = AutoModelForCausalLM.from_pretrained(a.dir, trust_remote_code=True).eval()
    tok = AutoTokenizer.from_pretrained(a.dir, trust_remote_code=True)
    ids = torch.tensor([tok(a.prompt, add_special_tokens=False)["input_ids"]])
    times, out = [], None
    with torch.no_grad():
        # Untimed: torch's and transformers' first-call set-up.
        model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=0)
        for _ in range(a.rounds):
            t0 = time.perf_counter()
            out = model.generate(
                ids, max_new_tokens=a.tokens, min_new_tokens=a.tokens, do_sample=False,
                use_cache=True, pad_token_id=0,
            )
            times.append(time.perf_counter() - t0)
    text = tok.decode(out[0].tolist())
    print(json.dumps({"system": "transformers " + __import__("transformers").__version__
                      + ", torch " + torch.__version__ + f", {torch.get_num_threads()} threads",
                      "seconds": statistics.median(times), "tokens": a.tokens, "text": text}))


if __name__ == "__main__":
    main()
