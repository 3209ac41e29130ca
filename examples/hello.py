"""Hello, agentflow: classify short texts in parallel with typed inference, then summarize.

Runs on the embedded engine (llama.cpp with the bundled SmolLM2-135M-Instruct) by default:

    python examples/hello.py [--engine SPEC]

Each text is classified by ``infer`` into a ``Review`` (an enum field, validated by pydantic; the
engine decodes under a grammar built from the model's JSON Schema). ``par.map`` fans out, and the
results join into one summary written by the model. The tiny model's judgement is rough; the
structure it returns is always valid. For real judgements run it on a real model:
``python examples/hello.py --engine openai:http://127.0.0.1:8000/v1#Qwen/Qwen3-8B``.
"""

from __future__ import annotations

import argparse
from collections import Counter
from enum import StrEnum

from pydantic import BaseModel

from agentflow import Err, flow, generate, infer, par, run_sync, usage_of

TEXTS = [
    "The pasta was delicious and the staff were lovely.",
    "My order arrived cold and two hours late.",
    "Great value, I would happily come back.",
    "The room was dirty and the wifi never worked.",
]


class Sentiment(StrEnum):
    positive = "positive"
    negative = "negative"
    neutral = "neutral"


class Review(BaseModel):
    sentiment: Sentiment
    topic: str


class Summary(BaseModel):
    reviews: list[Review]
    counts: dict[str, int]
    summary: str


@flow
async def summarize_reviews(texts: list[str]) -> Summary:
    reviews = await par.map(
        lambda text: infer(
            Review,
            f"Classify the sentiment of this customer review and give its topic (one word such as food, "
            f"delivery, price, room).\nReview: {text}",
        ),
        texts,
    )
    counts = Counter(r.sentiment.value for r in reviews)
    listing = "\n".join(f"- {r.sentiment.value}: {r.topic}" for r in reviews)
    completion = await generate(
        f"Customer reviews:\n{listing}\nWrite one short sentence summarizing them.",
        max_tokens=40,
    )
    return Summary(reviews=reviews, counts=dict(counts), summary=completion.text.strip())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--engine", default="llamacpp:default", help="engine spec (default: llamacpp:default)"
    )
    args = parser.parse_args()

    outcome = run_sync(summarize_reviews, {"texts": TEXTS}, engine=args.engine)
    if isinstance(outcome, Err):
        print(f"run failed: {outcome.error}")
        return 1
    result = outcome.value
    for text, review in zip(TEXTS, result.reviews, strict=True):
        print(f"{review.sentiment.value:>8}  {review.topic[:24]:<24}  {text}")
    print(f"counts:  {result.counts}")
    print(f"summary: {result.summary}")
    u = usage_of(outcome.trace)
    calls = sum(1 for e in outcome.trace if e.kind == "llm.call")
    print(
        f"usage:   {calls} LLM calls, {u.prompt_tokens} prompt tokens "
        f"({u.cached_tokens} cached, {u.computed_tokens} computed), {u.completion_tokens} completion tokens"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
