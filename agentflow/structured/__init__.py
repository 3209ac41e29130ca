"""Structured output: JSON Schema in, grammar-constrained decoding, budgets and strict answer checks out.

    OutputSpec(schema)        what infer/infer_json use: .max_tokens, .check(text), .unenforced, .grammar
    compile_grammar(schema)   llguidance grammar + the constraints it leaves unenforced (Unenforced)
    TokenMatcher              the per-request logits mask an embedded engine applies
    AnswerCheck, Violation    strict JSON parsing and full JSON Schema validation (formats included)
    estimate_max_tokens       a max_tokens budget derived from a schema

The grammar engine is llguidance, chosen on JSONSchemaBench by ``bench/structured_outputs.py``.
"""

from ._budget import MAX_TOKENS, MIN_TOKENS, estimate_max_tokens
from ._grammar import Grammar, Unenforced, compile_grammar
from ._matcher import TokenMatcher
from ._spec import STRING_CAPS, OutputSpec, cap_strings, close_objects, cut_off
from ._validate import FORMATS, AnswerCheck, Violation, json_path, parse_json_strict

__all__ = [
    "FORMATS",
    "MAX_TOKENS",
    "MIN_TOKENS",
    "STRING_CAPS",
    "AnswerCheck",
    "Grammar",
    "OutputSpec",
    "TokenMatcher",
    "Unenforced",
    "Violation",
    "cap_strings",
    "close_objects",
    "compile_grammar",
    "cut_off",
    "estimate_max_tokens",
    "json_path",
    "parse_json_strict",
]
