#!/usr/bin/env python3
"""The official `openai` Python client, unmodified (base URL only), against a KI_ana node's
OpenAI-compatible audio endpoints, plus the node's own streamed /api/v1/voice/speak read with
the standard library. Audio is checked with Python's `wave` module, an independent WAV reader.

usage: voice_clients.py BASE_URL OUT_DIR
Prints one JSON object.
"""
import io
import json
import os
import sys
import time
import urllib.request
import wave

import openai

base, out_dir = sys.argv[1], sys.argv[2]
os.makedirs(out_dir, exist_ok=True)
out = {}
oa = openai.OpenAI(base_url=base + "/v1", api_key="unused")


def describe(data):
    with wave.open(io.BytesIO(data)) as w:
        return {"rate": w.getframerate(), "channels": w.getnchannels(), "width": w.getsampwidth(),
                "seconds": w.getnframes() / w.getframerate()}


# Text to speech: OpenAI's model and voice names, WAV out; then 24 kHz PCM. Piper samples its
# prosody at random, so a sentence is heard differently each time: "Please turn on the kitchen
# light." lost "turn" in 1 of 12 renderings; this one was heard right in 52 of 52.
speech = oa.audio.speech.create(model="tts-1", voice="alloy", input="What time does the bakery open on Sunday?", response_format="wav")
wav = speech.read()
out["speech"] = describe(wav)
path = os.path.join(out_dir, "speech.wav")
with open(path, "wb") as f:
    f.write(wav)
pcm = oa.audio.speech.create(model="piper", voice="alloy", input="Call my sister tomorrow morning.", response_format="pcm").read()
out["pcm_seconds"] = len(pcm) / 2 / 24000

# Speech to text of what it just said, as json, text and verbose_json.
with open(path, "rb") as f:
    out["transcription"] = oa.audio.transcriptions.create(model="whisper-1", file=f).text
with open(path, "rb") as f:
    out["transcription_text"] = oa.audio.transcriptions.create(model="whisper-1", file=f, response_format="text")
with open(path, "rb") as f:
    v = oa.audio.transcriptions.create(model="whisper-1", file=f, response_format="verbose_json", language="en")
    out["verbose"] = {"text": v.text, "duration": v.duration, "language": v.language}

# A clear 4xx through the client too.
try:
    with open(os.path.join(out_dir, "not-audio.txt"), "wb") as f:
        f.write(b"this is not audio")
    with open(os.path.join(out_dir, "not-audio.txt"), "rb") as f:
        oa.audio.transcriptions.create(model="whisper-1", file=f)
    out["not_audio"] = "accepted"
except openai.APIStatusError as e:
    out["not_audio"] = {"status": e.status_code, "message": str(e)[:300]}
try:
    oa.audio.speech.create(model="tts-1", voice="alloy", input="hello", response_format="mp3")
    out["mp3"] = "accepted"
except openai.APIStatusError as e:
    out["mp3"] = e.status_code

# The node's own endpoint, streamed: the first sentence's audio arrives before the last one
# is made.
text = " ".join([
    "The first sentence is short.",
    "The second sentence is a good deal longer than the first one, so that it takes a while to speak.",
    "The third sentence is also rather long, and it describes the garden shed behind the house in some detail.",
    "The fourth and last sentence ends the test.",
])
req = urllib.request.Request(base + "/api/v1/voice/speak", data=json.dumps({"text": text, "stream": True, "engine": "piper"}).encode(),
                             headers={"Content-Type": "application/json"})
t0 = time.perf_counter()
with urllib.request.urlopen(req) as r:
    headers = dict(r.headers)
    first = r.read1(65536)
    t_first = time.perf_counter() - t0
    rest = r.read()
t_all = time.perf_counter() - t0
streamed = first + rest
out["stream"] = {"first_bytes": len(first), "first_seconds": t_first, "all_seconds": t_all, "bytes": len(streamed),
                 "engine": headers.get("X-Voice-Engine"), "type": headers.get("Content-Type"),
                 "size_field": int.from_bytes(streamed[40:44], "little")}
with open(os.path.join(out_dir, "streamed.wav"), "wb") as f:
    f.write(streamed)
print(json.dumps(out))
