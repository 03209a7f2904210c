"""Loads gsc exports in transformers and compares them with gsc's own numbers.

    python3 check_export.py CASES.json

CASES.json is a list of {"dir", "text", "ids", "sequences", "logits"}: each
exported model directory must load with AutoModelForCausalLM (remote code
allowed), its tokenizer must turn `text` into `ids` and back, and its logits
on every sequence must equal gsc's within f32 tolerance. Prints one line per
model; exits 1 if any differs.
"""

import json
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

TOLERANCE = 1e-4  # relative to the larger of 1 and the logits' magnitude


def check(case):
    model = AutoModelForCausalLM.from_pretrained(
        case["dir"], trust_remote_code=True, dtype=torch.float32
    ).eval()
    tok = AutoTokenizer.from_pretrained(case["dir"], trust_remote_code=True)
    ids = tok(case["text"], add_special_tokens=False)["input_ids"]
    problems = []
    if ids != case["ids"]:
        problems.append(f"tokenizer gives {ids[:12]}…, gsc {case['ids'][:12]}…")
    back = tok.decode(case["ids"])
    if back != case["text"]:
        problems.append(f"tokenizer decodes to {back[:40]!r}, not {case['text'][:40]!r}")
    worst = 0.0
    with torch.no_grad():
        for seq, want in zip(case["sequences"], case["logits"]):
            got = model(torch.tensor([seq])).logits[0].double()
            want = torch.tensor(want, dtype=torch.float64)
            scale = max(1.0, want.abs().max().item())
            worst = max(worst, (got - want).abs().max().item() / scale)
    if worst > TOLERANCE:
        problems.append(f"logits differ by {worst:.2e} (relative), above {TOLERANCE:.0e}")
    kind = type(model).__name__
    status = "ok  " if not problems else "FAIL"
    print(f"{status} {case['dir']} ({kind}): max relative logit difference {worst:.2e}")
    for p in problems:
        print(f"     {p}")
    return not problems


def main():
    cases = json.load(open(sys.argv[1]))
    results = [check(c) for c in cases]
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
