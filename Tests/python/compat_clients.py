#!/usr/bin/env python3
"""Runs the official `openai` and `ollama` Python clients, unmodified (base URL only), against a
KI_ana node and prints what they got as one JSON object."""
import json
import sys

import ollama
import openai

base = sys.argv[1]  # http://127.0.0.1:PORT
question = sys.argv[2]
out = {}

oa = openai.OpenAI(base_url=base + "/v1", api_key="unused")
out["openai_models"] = [m.id for m in oa.models.list()]
r = oa.chat.completions.create(model="kiana", messages=[{"role": "user", "content": question}], temperature=0, max_tokens=48)
out["openai_chat"] = r.choices[0].message.content
out["openai_citations"] = [c["id"] for c in (r.model_extra or {}).get("kiana", {}).get("citations", [])]
out["openai_usage"] = r.usage.completion_tokens
out["openai_finish"] = r.choices[0].finish_reason
# The grounded model honours max_tokens for what it delivers: 3 tokens are a few words, "length".
short = oa.chat.completions.create(model="kiana", messages=[{"role": "user", "content": question}], temperature=0, max_tokens=3)
out["openai_short"] = [short.choices[0].message.content, short.choices[0].finish_reason]
pieces = []
for chunk in oa.chat.completions.create(model="kiana", messages=[{"role": "user", "content": question}], temperature=0, max_tokens=48, stream=True):
    if chunk.choices and chunk.choices[0].delta.content:
        pieces.append(chunk.choices[0].delta.content)
out["openai_stream_pieces"] = len(pieces)
out["openai_stream"] = "".join(pieces)
raw = oa.chat.completions.create(model=out["openai_models"][1], messages=[{"role": "user", "content": "Say hello."}], temperature=0, max_tokens=8)
out["openai_raw_model"] = raw.model
# A raw model stays raw: its answer streams token by token.
pieces = []
for chunk in oa.chat.completions.create(model=out["openai_models"][1], messages=[{"role": "user", "content": "Count to five."}], temperature=0, max_tokens=16, stream=True):
    if chunk.choices and chunk.choices[0].delta.content:
        pieces.append(chunk.choices[0].delta.content)
out["openai_raw_stream_pieces"] = len(pieces)
out["openai_support"] = [s["text"] for s in (r.model_extra or {}).get("kiana", {}).get("support", [])]
try:
    oa.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": question}], max_tokens=8)
    out["openai_unknown_model"] = "answered"
except openai.NotFoundError as e:
    out["openai_unknown_model"] = e.status_code
e = oa.embeddings.create(model="all-minilm-l6-v2", input=["The spare key", "is under the pot"])
out["openai_embeddings"] = [len(d.embedding) for d in e.data]
out["openai_embedding_norm"] = sum(x * x for x in e.data[0].embedding) ** 0.5

ol = ollama.Client(host=base)
out["ollama_models"] = [m.model for m in ol.list().models]
c = ol.chat(model="kiana", messages=[{"role": "user", "content": question}], options={"temperature": 0, "num_predict": 48})
out["ollama_chat"] = c.message.content
pieces = [p.message.content for p in ol.chat(model="kiana", messages=[{"role": "user", "content": question}], stream=True,
                                              options={"temperature": 0, "num_predict": 48}) if p.message.content]
out["ollama_stream_pieces"] = len(pieces)
out["ollama_stream"] = "".join(pieces)
g = ol.generate(model="kiana", prompt=question, options={"temperature": 0, "num_predict": 48})
out["ollama_generate"] = g.response
em = ol.embed(model="all-minilm-l6-v2", input=["The spare key", "is under the pot"])
out["ollama_embeddings"] = [len(v) for v in em.embeddings]
legacy = ol.embeddings(model="all-minilm-l6-v2", prompt="The spare key")
out["ollama_legacy_embedding"] = len(legacy.embedding)
out["ollama_legacy_same"] = max(abs(a - b) for a, b in zip(legacy.embedding, em.embeddings[0])) < 1e-5
shown = ol.show("kiana")
out["ollama_show"] = [shown.details.format, shown.details.family]
shown = ol.show(out["ollama_models"][1])
out["ollama_show_raw"] = [shown.details.format, shown.details.quantization_level, shown.details.parameter_size]
out["ollama_ps"] = [m.model for m in ol.ps().models]
try:
    ol.chat(model="gpt-4o", messages=[{"role": "user", "content": question}])
    out["ollama_unknown_model"] = "answered"
except ollama.ResponseError as e:
    out["ollama_unknown_model"] = e.status_code
try:
    ol.show("gpt-4o")
    out["ollama_show_unknown"] = "shown"
except ollama.ResponseError as e:
    out["ollama_show_unknown"] = e.status_code
    # Ollama's error is a string, which the client shows as the exception's text.
    out["ollama_error_text"] = e.error

# stop: the raw model's greedy answer, then the same cut before its first space, streamed and not.
raw_model = out["openai_models"][1]
full = oa.chat.completions.create(model=raw_model, messages=[{"role": "user", "content": "Say hello to the world."}], temperature=0, max_tokens=24)
out["openai_full"] = full.choices[0].message.content
cut = oa.chat.completions.create(model=raw_model, messages=[{"role": "user", "content": "Say hello to the world."}], temperature=0, max_tokens=24, stop=[" "])
out["openai_stop"] = [cut.choices[0].message.content, cut.choices[0].finish_reason]
pieces = []
reason = None
for chunk in oa.chat.completions.create(model=raw_model, messages=[{"role": "user", "content": "Say hello to the world."}], temperature=0, max_tokens=24, stop=" ", stream=True):
    if chunk.choices and chunk.choices[0].delta.content:
        pieces.append(chunk.choices[0].delta.content)
    if chunk.choices and chunk.choices[0].finish_reason:
        reason = chunk.choices[0].finish_reason
out["openai_stop_stream"] = ["".join(pieces), reason]
g = ol.generate(model=raw_model, prompt="Say hello to the world.", options={"temperature": 0, "num_predict": 24, "stop": [" "]})
out["ollama_stop"] = [g.response, g.done_reason]
out["openai_model_retrieve"] = oa.models.retrieve("kiana").id
# What the node cannot do is refused, not quietly answered as plain text.
refused = {}
for name, extra in [("n", {"n": 2}), ("tools", {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]}),
                    ("json", {"response_format": {"type": "json_object"}}), ("logprobs", {"logprobs": True})]:
    try:
        oa.chat.completions.create(model=raw_model, messages=[{"role": "user", "content": "hi"}], max_tokens=4, **extra)
        refused[name] = "answered"
    except openai.BadRequestError as e:
        refused[name] = e.status_code
try:
    oa.chat.completions.create(model=raw_model, max_tokens=4, messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}])
    refused["image"] = "answered"
except openai.BadRequestError as e:
    refused["image"] = e.status_code
try:
    oa.embeddings.create(model="all-minilm-l6-v2", input="x", dimensions=10)
    refused["dimensions"] = "answered"
except openai.BadRequestError as e:
    refused["dimensions"] = e.status_code
for name, call in [("ollama_format", lambda: ol.generate(model=raw_model, prompt="hi", format="json")),
                   ("ollama_images", lambda: ol.generate(model=raw_model, prompt="hi", images=[b"\x89PNG"]))]:
    try:
        call()
        refused[name] = "answered"
    except ollama.ResponseError as e:
        refused[name] = e.status_code
out["refused"] = refused
loaded = ol.generate(model=raw_model, prompt="")
out["ollama_load"] = [loaded.response, loaded.done_reason]
print(json.dumps(out))
